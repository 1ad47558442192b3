"""glibc malloc settings for the worker: keep large freed buffers instead of handing them back to the OS."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

# mallopt() parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# A forward pass allocates activation buffers of up to ~10 MB. By default glibc serves them with mmap and
# unmaps them after each call, so the next call page-faults them in again (3,000-6,000 faults a call for
# the frozen TorchScript at batch 2, which then took 15-17 ms an image instead of 11). Both settings are
# needed: either alone made it worse. These are the values of the MALLOC_*_ environment variables that
# removed the faults (see docs/performance.md).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1_000_000_000
ENVIRONMENT_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_buffers() -> str:
    """Set glibc's mmap and trim thresholds in this process; returns what was done, for the worker's log.

    Settings given in the environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) win, and a C
    library other than glibc (musl, macOS) is left alone. Never raises.
    """
    given = [name for name in ENVIRONMENT_VARIABLES if name in os.environ]
    if given:
        return f"malloc: left as the environment sets it ({', '.join(given)})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "malloc: not glibc, left as it is"
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        return "malloc: glibc refused mallopt, left as it is"
    return f"malloc: mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB, trim threshold {TRIM_THRESHOLD_BYTES // 10**6} MB"
