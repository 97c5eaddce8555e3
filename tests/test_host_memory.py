"""Retained host memory (runtime.host_memory): freed pages are reused instead of faulted in again, and no number
changes. The setting is process-wide and cannot be undone, so each side runs in a process of its own."""

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from transfer_core.host_memory import retain_freed_host_memory

# Counts the page faults of reallocating a 40 MB tensor in steady state (over glibc's largest dynamic mmap threshold,
# 32 MB, so the system's malloc unmaps it on every free; retained, the first few allocations still grow the heap, as
# a 64-byte-aligned request does not fit the block just freed until free blocks have coalesced), then trains
# ResNet-8 for 3 steps and prints its weights' digest.
_SIDE = """
import hashlib, json, resource, sys
import torch, torch.nn.functional as F
from transfer_core.backbones import create_backbone
from transfer_core.runtime import resolve_runtime

runtime = resolve_runtime("cpu", compile="off", host_memory=sys.argv[1])
def reallocate():
    block = torch.empty(10 << 20)  # 40 MB of float32
    block.fill_(1.0)
for _ in range(20):  # until the freed blocks have coalesced into room for the aligned request
    reallocate()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    reallocate()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10

torch.manual_seed(0)
model = runtime.prepare(create_backbone("resnet8", 10, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
images, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
for _ in range(3):
    optimizer.zero_grad()
    with runtime.autocast():
        F.cross_entropy(model(images.to(memory_format=torch.channels_last)), labels).backward()
    optimizer.step()
digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
from transfer_core.host_memory import retain_freed_host_memory
kept = retain_freed_host_memory() if sys.argv[1] == "retain" else 0
print(json.dumps({"faults_per_allocation": faults, "weights": digest, "recorded": runtime.describe()["host_memory"],
                  "amp": runtime.amp, "kept_block_bytes": kept}))
"""


def _side(host_memory: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _SIDE, host_memory],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _huge_pages_always() -> bool:  # a 40 MB block then faults in 2 MiB at a time: too few faults to tell apart
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


def test_retained_host_memory_reuses_freed_pages_and_changes_no_number():
    system, retain = _side("system"), _side("retain")
    assert system["recorded"] == "system"  # the records say what ran
    assert retain["recorded"] == ("retain" if retain["kept_block_bytes"] else "system")
    assert retain["weights"] == system["weights"]  # where tensors live, never what is computed
    assert retain["amp"] == system["amp"]
    if retain["kept_block_bytes"] < (40 << 20) or _huge_pages_always():
        pytest.skip("this C library or kernel keeps no 40 MB block, or faults it in huge pages")
    # 40 MB is 10,240 pages of 4 KiB: faulted in on every allocation by the system's malloc, reused when retained
    assert system["faults_per_allocation"] > 5000
    assert retain["faults_per_allocation"] < 100


class _FakeLibc:
    """A C library whose mallopt accepts what ``accepts`` says, recording its calls."""

    def __init__(self, malloc, accepts=lambda parameter, value: True, glibc=True):
        self.malloc, self.calls = malloc, []
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.28"

        def mallopt(parameter, value):
            self.calls.append((parameter, value))
            return int(accepts(parameter, value))

        self.mallopt = mallopt


def _with_libraries(monkeypatch, libc, process_malloc=None):
    process = _FakeLibc(process_malloc or libc.malloc)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.so.6")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: process if name is None else libc)
    return retain_freed_host_memory.__wrapped__()  # uncached: the process's own answer stays as it was


def test_nothing_is_retained_without_glibcs_own_malloc(monkeypatch):
    real = ctypes.CDLL(ctypes.util.find_library("c") or None)
    malloc, other_function = real.malloc, real.free  # two real symbols at different addresses
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert retain_freed_host_memory.__wrapped__() == 0  # no C library found
    assert _with_libraries(monkeypatch, _FakeLibc(malloc, glibc=False)) == 0  # musl: its mallopt means other things
    preloaded = _FakeLibc(malloc)
    assert _with_libraries(monkeypatch, preloaded, process_malloc=other_function) == 0  # jemalloc or TCMalloc serve
    assert preloaded.calls == []  # glibc's settings left alone
    glibc = _FakeLibc(malloc)
    assert _with_libraries(monkeypatch, glibc) == 1 << 30
    assert sorted(glibc.calls) == [(-3, 1 << 30), (-1, 1 << 30)]
    # a glibc that refuses an mmap threshold over 32 MiB (mallopt(3)'s documented limit): the largest it takes
    old = _FakeLibc(malloc, accepts=lambda parameter, value: parameter != -3 or value <= 32 << 20)
    assert _with_libraries(monkeypatch, old) == 32 << 20
    assert _with_libraries(monkeypatch, _FakeLibc(malloc, accepts=lambda parameter, value: False)) == 0
