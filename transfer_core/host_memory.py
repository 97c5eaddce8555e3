"""Host memory that stays with the process: freed tensors' pages are reused, not faulted in again.

glibc's malloc returns large freed blocks to the operating system: a block over its mmap threshold (which adapts
to the largest block freed, up to 32 MiB) is unmapped on free, and free memory at the top of the heap over its
trim threshold is trimmed. A training step frees and allocates the same activations every step, so pages handed
back are faulted in again at the next one: a bare bf16 ResNet-8 train step at batch 128 on 2 Zen 4 cores took
5,800 minor page faults, and 9 once the memory was kept (``docs/runtime.md``, ``scripts/host_memory.py``).

Raising both thresholds (``mallopt``) keeps freed memory for the process's next allocations; it changes where
tensors live, never what is computed. The cost: a process's resident memory stays near its peak instead of
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
# mallopt(3) documents 32 MiB as the mmap threshold's upper limit on 64-bit; a glibc that keeps to it: the fallback
OLD_GLIBC_MMAP_BYTES = 32 << 20


def _glibc_malloc_in_use() -> "ctypes.CDLL | None":
    """glibc, where it is the C library and the process's ``malloc`` is its own (not jemalloc or TCMalloc
    preloaded, whose memory glibc's settings would not reach); None elsewhere (musl, macOS, Windows)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        libc, process = ctypes.CDLL(libc_name), ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # another C library: its mallopt, if any, means other things
        return None
    address = functools.partial(ctypes.cast, typ=ctypes.c_void_p)
    if address(process.malloc).value != address(libc.malloc).value:  # a preloaded allocator serves malloc
        return None
    return libc


@functools.lru_cache(maxsize=None)  # once per process: the thresholds are process-wide
def retain_freed_host_memory() -> int:
    """Raises glibc malloc's mmap and trim thresholds; the size of the largest block now kept on free (0 where
    nothing is: another C library, another malloc, or glibc refusing both settings)."""
    libc = _glibc_malloc_in_use()
    if libc is None:
        return 0
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    for block_bytes in (RETAINED_BYTES, OLD_GLIBC_MMAP_BYTES):
        if mallopt(_M_MMAP_THRESHOLD, block_bytes):
            return block_bytes if mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES) else 0
    return 0


def host_memory_retained() -> bool:
    """Whether this process retains freed host memory (it cannot be undone: the process's records say so
    even where a later runtime asked for the system's behaviour)."""
    return retain_freed_host_memory.cache_info().currsize > 0 and retain_freed_host_memory() > 0
