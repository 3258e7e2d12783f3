"""Everything an operator sets when starting the server (``brushwork serve`` options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def default_allowed_hosts(host: str, port: int) -> list[str]:
    """The names a server listening on ``host:port`` answers to unless told more: that address, localhost and
    127.0.0.1, each with the port."""
    bound = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed in a Host header
    return list(dict.fromkeys(f"{name}:{port}" for name in (bound, "localhost", "127.0.0.1")))


@dataclass
class Settings:
    #: Images and, by default, the SQLite database live here.
    data_dir: Path = Path("brushwork-data")
    #: SQLAlchemy URL; None: SQLite in ``data_dir``. PostgreSQL works too (``postgresql+psycopg://...``).
    database_url: str | None = None
    #: Local weight folders, looked in before the cache (as ``--weights-dir``).
    weights_dirs: list[Path] = field(default_factory=list)
    device: str = "auto"
    #: Largest request body (all uploads of one request together).
    max_upload_mb: float = 20.0
    #: Seconds a request's body may take to arrive after its headers; then 408, and the connection is closed.
    body_timeout: float = 30.0
    #: Largest uploaded image, in pixels: bigger ones are refused from their header, before they are decoded.
    max_pixels: int = 25_000_000
    #: Uploads decoded at once (each holds its full-size pixels in memory); more wait their turn.
    concurrent_decodes: int = 2
    #: Shorter side of an output, in pixels: the largest a client may ask for.
    max_size: int = 2048
    #: Most bytes of image files kept in ``data_dir`` (None: as many as the disk holds); a request that would store
    #: more gets 507. Deleting results makes room.
    storage_quota: int | None = 10 * 10**9
    #: Seconds an uploaded image that no result uses (and that is not an artwork of the study) is kept.
    unused_upload_grace: float = 24 * 3600.0
    #: Stylisations running at once; more only help with a GPU or many cores.
    workers: int = 1
    #: Requests that may wait for a worker; beyond that the server answers 503 at once.
    queue_size: int = 16
    #: Gatys optimises for minutes on a CPU: the server runs it with few steps and at small sizes only.
    gatys_steps: int = 50
    gatys_max_size: int = 384
    #: Host headers answered (``name`` for any port, or ``name:port``); any other gets 400, so that a web page
    #: whose name is pointed at this machine (DNS rebinding) cannot use the server. ``brushwork serve`` sets its
    #: own address, localhost and 127.0.0.1 with its port, or the names of ``--allowed-host``.
    allowed_hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"])
    #: Study requests (new participants, trials, answers) per minute from one client address, and per participant
    #: (trials and answers): beyond them, 429. A trial takes a person several seconds to judge.
    study_requests_per_address: int = 120
    study_requests_per_participant: int = 20

    #: The live studio (``/api/preview``, the webcam's ``/api/live``). Largest preview, shorter side in pixels.
    preview_max_size: int = 768
    #: Clients whose preview encodings (content features, style signals) are kept, and the most bytes of them
    #: kept for one client: together they bound the memory of live previews.
    preview_clients: int = 8
    preview_cache_mb: float = 64.0
    #: Webcam connections open at once; each holds one frame waiting and its model's style signals.
    live_connections: int = 4
    #: Largest webcam frame: bytes of its file, and its longer side in pixels.
    live_max_frame_bytes: int = 1_000_000
    live_max_side: int = 640
    #: Frames a second one connection may send; a faster client is disconnected.
    live_max_fps: float = 30.0

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir).resolve() / 'brushwork.sqlite3'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
