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
print(json.dumps({"faults_per_allocation": faults, "weights": digest, "recorded": runtime.describe()["host_memory"],
                  "amp": runtime.amp}))
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


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"), reason="retaining needs glibc")
def test_retained_host_memory_reuses_freed_pages_and_changes_no_number():
    system, retain = _side("system"), _side("retain")
    assert system["recorded"] == "system" and retain["recorded"] == "retain"  # the records say what ran
    # 40 MB is 10,240 pages of 4 KiB: faulted in on every allocation by the system's malloc, reused when retained
    assert system["faults_per_allocation"] > 5000
    assert retain["faults_per_allocation"] < 100
    assert retain["weights"] == system["weights"]  # where tensors live, never what is computed
    assert retain["amp"] == system["amp"]


def test_without_glibc_nothing_is_retained_and_the_records_say_system(monkeypatch):
    uncached = retain_freed_host_memory.__wrapped__
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert uncached() is False
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.so.6")

    class OtherLibc:  # a C library that is not glibc (musl has mallopt, with other parameters)
        mallopt = None

    monkeypatch.setattr(ctypes, "CDLL", lambda name: OtherLibc())
    assert uncached() is False
