"""Give the C heap's free pages back to the kernel after a one-off burst of allocations.

glibc's malloc keeps freed memory in the process for reuse. A sink's start() is such a
burst: pysnmp imports ~100 modules and executes a dozen MIB modules, and most of what
that allocates is freed again at once, but the pages stay counted in the daemon's RSS
for good (1.4-2.8 MiB measured, bench/footprint.py). malloc_trim(0) returns them; it
takes under a millisecond, so it is called after such bursts, never on a timer.
Without glibc (musl, another OS) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the interpreter's own symbols, which include its C library's
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no such library, or not glibc
        return None
    return trim


def release_free_heap() -> bool:
    """malloc_trim(0); True if the C library has it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def one_malloc_arena() -> bool:
    """Make every thread allocate from the main malloc arena; True if it took effect.

    glibc gives each thread that allocates its own arena, and an arena keeps what it
    once held: the daemon's helper threads (netlink, journal reads, a sink's library
    set-up) added 2.3 MiB that way (bench/footprint.py). Under the GIL, threads seldom
    allocate at the same moment, so one arena costs no speed. Call it before any thread
    starts.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, 1))
