"""Stylisation off the event loop: a few worker threads, a bounded queue in front of them, the Python API inside."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from PIL import Image
from torch import nn

from .. import weights as registry
from ..api import Stylizer, load_model
from ..errors import WeightsError
from ..vgg import choose_loss_net

log = logging.getLogger("brushwork.server")
T = TypeVar("T")


class QueueFull(Exception):
    """Every worker is busy and the queue is full: the client should come back later."""


class ClientGone(Exception):
    """The client closed its connection before its stylisation started: the job was dropped, unpainted."""


class ModelUnavailable(Exception):
    """A model's weights are not on this machine, or unusable. The message names the model, never a file."""

    def __init__(self, model: str, entries: list[str]):
        super().__init__(f"the weights of {model} are not installed on this server; its operator can install "
                         f"them with 'brushwork weights fetch {' '.join(entries)}'")


@dataclass
class Job:
    """One stylisation, with the settings of :class:`brushwork.Stylizer`."""

    content: Image.Image
    styles: list[Image.Image]
    model: str
    alpha: float
    style_weights: list[float] | None
    preserve_color: str | None
    size: int
    options: dict = field(default_factory=dict)  # Gatys settings


class InferenceQueue:
    """Runs jobs on ``workers`` threads; at most ``queue_size`` more wait, and the rest are refused at once."""

    def __init__(self, workers: int, queue_size: int, device: str, weights_dirs: list):
        self.workers = workers
        self.capacity = workers + queue_size
        self.device = device
        self.weights_dirs = [str(d) for d in weights_dirs]
        self.pending = 0  # admitted: decoding, waiting or running; changed on the event loop only
        self.dropped = 0  # jobs dropped because their client had gone; changed on the event loop only
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stylize")
        # load_model caches each model; the lock keeps two first requests from loading it twice.
        self._loading = threading.Lock()

    def admit(self) -> Admission:
        """A place in the queue, or QueueFull: taken before a request's uploads are even decoded, so that a full
        queue refuses a request before it costs anything. Use it in a ``with`` block, and ``run`` a job in it."""
        if self.pending >= self.capacity:
            raise QueueFull(f"the server is busy ({self.workers} running, {self.capacity - self.workers} waiting); "
                            f"try again in a moment")
        self.pending += 1
        return Admission(self, asyncio.get_running_loop())

    def _release(self) -> None:
        self.pending -= 1

    def _start(self, work: Callable[[], T], client_gone: threading.Event) -> T:
        """A worker takes ``work``: it runs unless its client has gone meanwhile (it may have waited long)."""
        if client_gone.is_set():
            raise ClientGone("the client closed its connection before its stylisation started; nothing was painted")
        return work()

    def _stylize(self, job: Job) -> tuple[Image.Image, float]:
        start = time.perf_counter()
        stylizer = Stylizer(self.model(job.model, job.options), alpha=job.alpha, style_weights=job.style_weights,
                            content_size=job.size, style_size=job.size, preserve_color=job.preserve_color)
        image = stylizer(job.content, job.styles or None)
        return image, time.perf_counter() - start

    def model(self, name: str, options: dict | None = None) -> nn.Module:
        """The loaded model ``name`` (``options``: Gatys settings), or ModelUnavailable. For worker threads."""
        entries = self._entries(name)
        try:
            with self._loading:
                self._check_weights(name, entries)
                return load_model(name, device=self.device, weights_dir=self.weights_dirs, **(options or {}))
        except WeightsError as error:  # an unreadable file: its path is for the log, not for the client
            log.error("weights of %s unusable: %s", name, error)
            raise ModelUnavailable(name, entries) from None

    def _check_weights(self, model: str, entries: list[str]) -> None:
        """The registry fetches what is missing; a request must not (a download takes minutes, may fill the disk,
        and a server may have no internet): only weights already here, matching their checksums, are loaded."""
        unusable = [f"{item.weights.name}/{item.file.filename}" for name in entries
                    for item in registry.status(name, self.weights_dirs, check=True) if not item.ok]
        if unusable:
            log.error("%s cannot run: missing or damaged weights %s", model, ", ".join(unusable))
            raise ModelUnavailable(model, entries)

    def _entries(self, model: str) -> list[str]:
        """The registry entries ``model`` loads: its own and its encoder's, or the loss network Gatys picks."""
        if model == "gatys":
            return [choose_loss_net("auto", self.weights_dirs)]
        entry = registry.get(model)
        return [entry.name, *([entry.encoder] if entry.encoder else [])]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Admission:
    """A request's place in the queue: given back when the request ends without a job, or when its job ends
    (even when the client gave up waiting for it)."""

    def __init__(self, queue: InferenceQueue, loop: asyncio.AbstractEventLoop):
        self.queue = queue
        self.loop = loop
        self.submitted = False
        #: Set when the request's client has closed its connection: a job not started yet is then dropped.
        self.client_gone = threading.Event()

    async def run(self, job: Job) -> tuple[Image.Image, float]:
        """The stylised image and the seconds it took (waiting not counted); ClientGone when ``client_gone`` was
        set before a worker took the job."""
        return await self.call(functools.partial(self.queue._stylize, job), job.model)

    async def call(self, work: Callable[[], T], model: str) -> T:
        """What ``work`` (which paints with ``model``) returns, run by a worker; ClientGone as for ``run``."""
        self.submitted = True
        future = self.queue._executor.submit(self.queue._start, work, self.client_gone)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wrap_future(future)
        except ClientGone:
            self.queue.dropped += 1
            log.info("dropped a stylisation of %s: its client closed the connection before it started", model)
            raise

    def _release(self, _) -> None:
        if not self.loop.is_closed():  # else the server has stopped while the job ran: no queue is left
            self.loop.call_soon_threadsafe(self.queue._release)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *_) -> None:
        if not self.submitted:
            self.queue._release()
