"""The live studio's preview clients: what each keeps between previews, bounded in number and bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from ..api import Preview


@dataclass
class Client:
    """A preview client: its kept encodings and the number of its newest request."""

    preview: Preview
    newest: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # a Preview serves one caller at a time


class PreviewClients:
    """The preview clients seen last, at most ``limit`` (the least recently seen is forgotten first), each with
    at most ``max_bytes`` of encodings: the memory of previews is bounded whoever asks for them."""

    def __init__(self, limit: int, max_bytes: int, keep: int):
        self.limit = limit
        self.max_bytes = max_bytes
        self.keep = keep  # images kept per client: a content and its styles, and one more content
        self.clients: OrderedDict[str, Client] = OrderedDict()  # changed on the event loop only

    def get(self, client_id: str) -> Client:
        client = self.clients.pop(client_id, None) or Client(Preview(keep=self.keep, max_bytes=self.max_bytes))
        self.clients[client_id] = client
        while len(self.clients) > self.limit:
            self.clients.popitem(last=False)
        return client
