"""Where and how models run: device, mixed precision, torch.compile, memory layout.

Resolved once per run from the suite's ``runtime`` section; ``auto`` means the fast choice for the
device (bf16 autocast and compile on CUDA; fp32 and eager on CPU, where compiling costs more than it
saves for short runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import resource
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch

from .checks import check_range
from .data import BatchFormat, create_loader, resolve_data_backend
from .distributed import WHOLE, Shard

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
INPUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RuntimeUnavailableError(RuntimeError):
    """The suite asks for a device or feature this machine does not have."""


@dataclass(frozen=True)
class RuntimeSettings:
    """What a suite's ``runtime`` section asks for ("auto": the fast choice for the device). ``resolve_runtime``
    turns it into the ``Runtime`` every model of the run trains and evaluates under."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto = bf16 on CUDA, off on CPU
    compile: Literal["auto", "on", "off"] = "auto"  # auto = on for CUDA, off on CPU
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    cudnn_benchmark: bool = True  # CUDA: cuDNN picks the fastest convolution algorithm per shape, once
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CUDA and on CPU
    eval_batch_size: int = 512  # images per evaluation batch
    workers: int = 2  # DataLoader workers or DALI threads for image folders (array datasets need none)
    data_backend: Literal["auto", "torch", "dali"] = "auto"  # image folders; auto = dali when installed
    input_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = the amp dtype, else float32
    deterministic: bool = False  # deterministic algorithms only, cuDNN benchmarking off: bitwise-reproducible runs
    cell_timeout_s: Optional[float] = None  # a training or evaluation running longer ends with status timeout

    def __post_init__(self):
        check_range("eval_batch_size", self.eval_batch_size, 1, None)
        check_range("workers", self.workers, 0, None)
        if self.cell_timeout_s is not None:
            check_range("cell_timeout_s", self.cell_timeout_s, 0, None, low_open=True)


@dataclass(frozen=True)
class Runtime:
    """The resolved settings: a device, a precision, compiled or not; what training and evaluation run under."""

    device: torch.device
    amp: str  # "bf16", "fp16" or "off", already resolved from "auto"
    compile: bool
    channels_last: bool
    data_backend: str = "torch"  # image folders: "dali" or "torch", already resolved from "auto"
    input_dtype: torch.dtype = torch.float32  # dtype of the batches loaders hand the model
    workers: int = 0  # DataLoader workers or DALI threads for image folders
    compile_mode: str = "default"  # torch.compile mode: default, reduce-overhead, max-autotune, ...
    cudnn_benchmark: bool = True  # CUDA: let cuDNN time its convolution algorithms once per shape
    compile_backend: Union[str, Callable] = "inductor"  # tests swap in a counting backend
    eval_batch_size: int = 512  # images per evaluation (and BatchNorm re-estimation) batch
    shard: Shard = WHOLE  # this process's rank under torchrun; the whole work otherwise
    deterministic: bool = (
        False  # PyTorch's deterministic algorithms only (cuDNN benchmarking off): reproducible, slower
    )

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

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model compiled once and then reused (training, evaluation, BatchNorm re-estimation of the
        same model share one compiled wrapper and its cached graphs); the model itself when off."""
        if not self.compile:
            return model
        cached = _COMPILED.get(model)
        if cached is None or cached[0] != (self.compile_backend, self.compile_mode):
            options = {"mode": self.compile_mode} if self.compile_backend == "inductor" else {}
            cached = (
                (self.compile_backend, self.compile_mode),
                torch.compile(model, backend=self.compile_backend, **options),
            )
            _COMPILED[model] = cached
        return cached[1]

    def apply_backend_flags(self) -> None:
        """Sets the process-wide switches this runtime asks for (in every process that builds under it)."""
        if self.deterministic:
            # cuBLAS is deterministic only with a fixed workspace; read when cuBLAS starts, so set it early
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.are_deterministic_algorithms_enabled() != self.deterministic:  # the call imports the compiler stack
            torch.use_deterministic_algorithms(self.deterministic)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark and not self.deterministic
            torch.backends.cudnn.deterministic = self.deterministic

    def timer(self) -> "Timer":
        return Timer(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def batch_format(self, mean: tuple[float, ...], std: tuple[float, ...]) -> BatchFormat:
        return BatchFormat(self.device, mean, std, self.channels_last, self.input_dtype)

    def loader(self, data, split: str, batch_size: int, train: bool, augmentation, seed: int = 0, whole: bool = False):
        """``create_loader`` with this runtime's device, format, data backend, workers and shard (``whole``:
        every example on every rank, for work each rank repeats, such as BatchNorm re-estimation)."""
        return create_loader(
            data,
            split,
            self.batch_format(data.mean, data.std),
            batch_size,
            train,
            augmentation,
            seed,
            self.data_backend,
            self.workers,
            WHOLE if whole else self.shard,
        )

    def describe(self) -> dict:
        """Every switch, for provenance. Artifact keys take the subset that bears on each artifact (bench/plan.py)."""
        described = {
            "device": str(self.device),
            "amp": self.amp,
            "compile": self.compile,
            "channels_last": self.channels_last,
            "data_backend": self.data_backend,
            "input_dtype": str(self.input_dtype).removeprefix("torch."),
            "eval_batch_size": self.eval_batch_size,
            "workers": self.workers,
            "ranks": self.shard.world,
        }
        # only where they act
        if self.compile:
            described["compile_mode"] = self.compile_mode
        if self.device.type == "cuda":
            described["cudnn_benchmark"] = self.cudnn_benchmark and not self.deterministic
        described["deterministic"] = self.deterministic
        return described


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


class Timer:
    """Wall time of a region of device work: CUDA events on GPU (recorded in the stream, so the time is
    the GPU's, read after one synchronisation), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> "Timer":
        if self.cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record()
        else:
            self._began = time.perf_counter()
        return self

    def stop(self) -> float:
        """Seconds since ``start``; waits for the device to finish the work queued in between."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return self._begin.elapsed_time(end) / 1000.0
        return time.perf_counter() - self._began


@functools.lru_cache(maxsize=None)
def measured_bf16_peak_tflops(device_str: str, size: int = 8192, repeats: int = 20) -> Optional[float]:
    """The device's achievable dense bf16 matmul rate, measured here (not a datasheet figure): the
    denominator of model FLOPs utilisation. CUDA only; None elsewhere."""
    device = torch.device(device_str)
    if device.type != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):  # warm-up: kernel selection, clocks
        a @ b
    timer = Timer(device).start()
    for _ in range(repeats):
        a @ b
    seconds = timer.stop()
    return 2 * size**3 * repeats / seconds / 1e12


def resolve_runtime(
    settings: Union[RuntimeSettings, str] = RuntimeSettings(),
    shard: Shard = WHOLE,
    cuda_available: Optional[bool] = None,
    **changes,
) -> Runtime:
    """The runtime ``settings`` ask for on this machine (a device name alone: the defaults on it); ``changes``
    replace settings by name (``resolve_runtime("cpu", eval_batch_size=64)``). ``cuda_available`` overrides this
    process's own answer: a Ray driver resolves for its cluster's GPUs. Refuses what the machine cannot do."""
    settings = RuntimeSettings(device=settings) if isinstance(settings, str) else settings
    if changes:
        settings = dataclasses.replace(settings, **changes)
    device, amp, compile, input_dtype = settings.device, settings.amp, settings.compile, settings.input_dtype
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    if device.startswith("cuda") and not cuda_available:
        raise RuntimeUnavailableError(
            "runtime.device is cuda but no CUDA device is available; use --device cpu or auto"
        )
    resolved = torch.device(device)
    on_cuda = resolved.type == "cuda"
    if on_cuda and shard.world > 1:  # one GPU per rank: the one the process group set for this local rank
        resolved = torch.device("cuda", torch.cuda.current_device())
    if amp == "auto":
        amp = "bf16" if on_cuda else "off"
    compile_on = on_cuda if compile == "auto" else compile == "on"
    # auto: batches in the autocast dtype, halving loader bandwidth; the first layer would cast them anyway
    dtype = AMP_DTYPES.get(amp, torch.float32) if input_dtype == "auto" else INPUT_DTYPES[input_dtype]
    if dtype != torch.float32 and dtype != AMP_DTYPES.get(amp):
        raise RuntimeUnavailableError(
            f"runtime.input_dtype {input_dtype} needs amp {'bf16' if dtype == torch.bfloat16 else 'fp16'}: "
            "outside autocast the model's float32 weights cannot take it"
        )
    try:
        backend = resolve_data_backend(settings.data_backend)
    except ModuleNotFoundError as e:
        raise RuntimeUnavailableError(str(e)) from None
    runtime = Runtime(
        resolved,
        amp,
        compile_on,
        settings.channels_last,
        backend,
        dtype,
        settings.workers,
        settings.compile_mode,
        settings.cudnn_benchmark,
        eval_batch_size=settings.eval_batch_size,
        shard=shard,
        deterministic=settings.deterministic,
    )
    runtime.apply_backend_flags()
    return runtime


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured): CUDA's peak allocation since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"  # Linux reports KiB
