"""Where and how models run: device, mixed precision, torch.compile, memory layout.

Resolved once per run from the suite's ``runtime`` section; ``auto`` means the fast choice for the
device (bf16 autocast and compile on CUDA; fp32 and eager on CPU, where compiling costs more than it
saves for short runs).
"""
from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass
from typing import Optional

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class RuntimeUnavailableError(RuntimeError):
    """The suite asks for a device or feature this machine does not have."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: str  # "bf16", "fp16" or "off", already resolved from "auto"
    compile: bool
    channels_last: bool

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return AMP_DTYPES.get(self.amp)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Moves a model to the device and layout; the caller keeps the module, compiled or not."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, model: torch.nn.Module):
        return torch.compile(model) if self.compile else model

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> dict:
        return {"device": str(self.device), "amp": self.amp, "compile": self.compile, "channels_last": self.channels_last}


def resolve_runtime(device: str = "auto", amp: str = "auto", compile: str = "auto", channels_last: bool = True) -> Runtime:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeUnavailableError("runtime.device is cuda but no CUDA device is available; use --device cpu or auto")
    resolved = torch.device(device)
    on_cuda = resolved.type == "cuda"
    if amp == "auto":
        amp = "bf16" if on_cuda else "off"
    compile_on = on_cuda if compile == "auto" else compile == "on"
    return Runtime(resolved, amp, compile_on, channels_last)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured): CUDA's peak allocation since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"  # Linux reports KiB
