"""Host memory that stays with the process: freed tensors' pages are reused, not faulted in again.

glibc's malloc returns large freed blocks to the operating system: a block over its mmap threshold is unmapped
on free, and free memory at the top of the heap over its trim threshold is trimmed. A training step frees and
allocates the same activations every step, so every step faulted their pages in again: a ResNet-8 train step at
batch 128 on 2 Zen 4 cores took 8,000 minor page faults (bf16; 12,800 in fp32), and keeping the memory took
them to 15 and the step from 1,945 to 2,621 images/s (fp32: 1,318 to 1,697; ``docs/runtime.md``).

Raising both thresholds (``mallopt``) keeps freed memory for the process's next allocations; it changes where
tensors live, never what is computed. The cost: a process's resident memory stays at its peak instead of
shrinking after it, by up to ``RETAINED_BYTES`` of free memory at the top of the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# blocks below this come from the heap and are reused; free memory at the heap's top up to this is kept
RETAINED_BYTES = 1 << 30


@functools.lru_cache(maxsize=None)  # once per process: the thresholds are process-wide
def retain_freed_host_memory() -> bool:
    """Raises glibc malloc's mmap and trim thresholds to ``RETAINED_BYTES``; whether they now are (False where
    the C library is not glibc: musl, macOS, Windows keep their own allocators' behaviour)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # another C library: its mallopt, if any, means other things
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, RETAINED_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES))


def host_memory_retained() -> bool:
    """Whether this process retains freed host memory (it cannot be undone: the process's records say so
    even where a later runtime asked for the system's behaviour)."""
    return retain_freed_host_memory.cache_info().currsize > 0 and retain_freed_host_memory()
