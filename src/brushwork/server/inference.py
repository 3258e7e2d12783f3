"""Stylisation off the event loop: a few worker threads, a bounded queue in front of them, the Python API inside."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from ..api import Stylizer


class QueueFull(Exception):
    """Every worker is busy and the queue is full: the client should come back later."""


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
        self.pending = 0  # running or waiting; changed on the event loop only
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stylize")
        # load_model caches each model; the lock keeps two first requests from loading it twice.
        self._loading = threading.Lock()

    async def run(self, job: Job) -> tuple[Image.Image, float]:
        """The stylised image and the seconds it took (waiting not counted)."""
        if self.pending >= self.capacity:
            raise QueueFull(f"the server is busy ({self.workers} running, {self.capacity - self.workers} waiting); "
                            f"try again in a moment")
        loop = asyncio.get_running_loop()
        future = self._executor.submit(self._stylize, job)
        self.pending += 1
        # Counted until the work itself ends, even when the client gave up waiting for it.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self.pending -= 1

    def _stylize(self, job: Job) -> tuple[Image.Image, float]:
        start = time.perf_counter()
        with self._loading:
            stylizer = Stylizer(job.model, alpha=job.alpha, style_weights=job.style_weights,
                                content_size=job.size, style_size=job.size, preserve_color=job.preserve_color,
                                device=self.device, weights_dir=self.weights_dirs, **job.options)
        image = stylizer(job.content, job.styles or None)
        return image, time.perf_counter() - start

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
