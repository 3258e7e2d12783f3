"""Process-wide memory settings that make CPU inference faster, applied by ``import brushwork``.

Painting a large image allocates and frees maps of tens of megabytes hundreds of times. By default glibc's
``malloc`` gives each block that large its own mapping and returns it to the system when it is freed, so every
new map costs page faults, the kernel zeroing fresh pages, and cache misses: measured at 4K on 2 CPU cores, a
fifth of the time (docs/BENCHMARKS.md). Two settings avoid that:

- **Huge pages** for PyTorch's large CPU tensors (``THP_MEM_ALLOC_ENABLE=1``, read by PyTorch at its first
  large allocation).
- **Freed memory kept for reuse**: glibc serves large blocks from its heap and does not trim it, so the next map
  reuses pages that are already mapped (``mallopt``; glibc only). Resident memory then stays at its peak until the
  process ends, as with any caching allocator, a little above the peak without it; the full-size maps of tiled
  painting still get mappings of their own (:func:`own_mapping`), so that they leave no holes in the heap.

Set ``THP_MEM_ALLOC_ENABLE=0`` or ``BRUSHWORK_KEEP_FREED_MEMORY=0`` before importing brushwork to opt out.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Iterator

HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"
KEEP_FREED_MEMORY_VARIABLE = "BRUSHWORK_KEEP_FREED_MEMORY"

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536

#: Whether this process keeps freed memory for reuse (set by :func:`configure`).
keeps_freed_memory = False


def configure() -> None:
    """Apply both settings unless opted out (idempotent)."""
    global keeps_freed_memory
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
    if os.environ.get(KEEP_FREED_MEMORY_VARIABLE, "1") != "0" and not keeps_freed_memory:
        keeps_freed_memory = _keep_freed_memory()


def _keep_freed_memory() -> bool:
    """glibc: no separate mappings for large blocks and no trimming of the heap; False where that is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        libc.gnu_get_libc_version  # noqa: B018 (musl and others have no mallopt with these parameters)
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


#: Blocks from this size up get their own mapping in :func:`own_mapping`; smaller ones reuse the heap. At 3840x2160
#: (full-size maps of 66 and 100 MB) the heap was faster: 2.76 s against 2.87 s (medians of 8 calls alternating in
#: one process), peak memory 1156-1215 MB against 1109-1265 MB (fresh processes); at 7680x4320 (maps of 265 and
#: 398 MB) the heap's holes cost 2.4 GB instead of 1.8 GB.
OWN_MAPPING_BYTES = 200 * 2**20


@contextlib.contextmanager
def own_mapping(nbytes: int | None = None) -> Iterator[None]:
    """Within this block large blocks get their own mapping again, as without :func:`configure`, and go back to
    the system when freed: for the full-size maps of tiled painting, which would otherwise leave holes in the heap
    that tile-sized blocks cannot fill (measured at 7680x4320: 2.4 GB peak instead of 1.8 GB). ``nbytes``: the size
    of the block to allocate; below :data:`OWN_MAPPING_BYTES` it comes from the heap as usual."""
    if not keeps_freed_memory or (nbytes is not None and nbytes < OWN_MAPPING_BYTES):
        yield
        return
    libc = _libc()
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 0)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
