"""Everything an operator sets when starting the server (``brushwork serve`` options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    #: Largest uploaded image, in pixels: bigger ones are refused before they are decoded.
    max_pixels: int = 40_000_000
    #: Shorter side of an output, in pixels: the largest a client may ask for.
    max_size: int = 2048
    #: Stylisations running at once; more only help with a GPU or many cores.
    workers: int = 1
    #: Requests that may wait for a worker; beyond that the server answers 503 at once.
    queue_size: int = 16
    #: Gatys optimises for minutes on a CPU: the server runs it with few steps and at small sizes only.
    gatys_steps: int = 50
    gatys_max_size: int = 384

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir).resolve() / 'brushwork.sqlite3'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
