"""Where and how models run: device, mixed precision, torch.compile, memory layout.

Resolved once per run from the suite's ``runtime`` section; ``auto`` means the fast choice for the
device: bf16 autocast on CUDA and on CPUs with native bf16 instructions (AVX-512 BF16 or AMX), fp32 on
other CPUs; torch.compile on CUDA, and on CPU for a training long enough to repay its compilation
(``transfer_core/compiling.py`` decides, from the first eager steps' measured time).
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
from pathlib import Path
from typing import Callable, Literal, Optional, Union

import torch

from .checks import check_range
from .data import BatchFormat, create_loader, resolve_data_backend
from .distributed import WHOLE, Shard
from .host_memory import host_memory_retained, retain_freed_host_memory

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
INPUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RuntimeUnavailableError(RuntimeError):
    """The suite asks for a device or feature this machine does not have."""


@dataclass(frozen=True)
class RuntimeSettings:
    """What a suite's ``runtime`` section asks for ("auto": the fast choice for the device). ``resolve_runtime``
    turns it into the ``Runtime`` every model of the run trains and evaluates under."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto = bf16 on CUDA and on CPUs with native bf16
    compile: Literal["auto", "on", "off"] = "auto"  # auto = on for CUDA; on CPU, a training that repays it
    # torch.compile's mode
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    cudnn_benchmark: bool = True  # CUDA: cuDNN picks the fastest convolution algorithm per shape, once
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CUDA and on CPU
    eval_batch_size: int = 512  # images per evaluation batch
    workers: int = 2  # DataLoader workers or DALI threads for image folders (array datasets need none)
    data_backend: Literal["auto", "torch", "dali"] = "auto"  # image folders; auto = dali when installed
    input_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = the amp dtype, else float32
    deterministic: bool = False  # deterministic algorithms only, cuDNN benchmarking off: bitwise-reproducible runs
    cell_timeout_s: Optional[float] = None  # a training or evaluation running longer ends with status timeout
    # retain: freed host memory stays with the process for reuse, instead of being faulted in again every step
    # (glibc; transfer_core/host_memory.py); system: the C library's own behaviour. Same numbers either way.
    host_memory: Literal["retain", "system"] = "retain"

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
    compile: bool  # torch.compile allowed: always (compile_when "always") or where it pays ("pays")
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
    # "always": every model trained or evaluated is compiled; "pays" (compile: auto on CPU): a training is
    # compiled only when its measured eager steps project a time that repays the compilation (compiling.py)
    compile_when: Literal["always", "pays"] = "always"
    compile_cache: Optional[str] = None  # folder for inductor's on-disk cache and measured compile costs
    host_memory: Literal["retain", "system"] = "retain"  # process-wide: applied by apply_backend_flags

    @property
    def compile_always(self) -> bool:
        return self.compile and self.compile_when == "always"

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
        same model share one compiled wrapper and its cached graphs); the model itself when off. Under
        ``compile_when="pays"`` the model itself too: there only ``train`` compiles, through ``compile_now``,
        when its measured steps repay it; an evaluation (a few seconds of forward passes, in eval mode, which
        is another graph) never would."""
        if not self.compile or self.compile_when == "pays":
            return model
        return self.compile_now(model)

    def compile_now(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model``'s compiled wrapper, made on the first call (compilation itself happens at its first
        forward), with inductor's on-disk cache under ``compile_cache`` so later runs reuse its kernels."""
        if self.compile_cache is not None:
            use_inductor_cache(Path(self.compile_cache) / "inductor")
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
        if self.host_memory == "retain":
            retain_freed_host_memory()

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
        """Every switch, for provenance. Artifact keys take the subset that bears on each artifact
        (bench/pipeline/plan.py)."""
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
            # what this process's allocator does, not what was asked: retaining needs glibc, and lasts
            "host_memory": "retain" if host_memory_retained() else "system",
        }
        # only where they act
        if self.compile:
            described["compile_mode"] = self.compile_mode
            described["compile_when"] = self.compile_when
        if self.device.type == "cuda":
            described["cudnn_benchmark"] = self.cudnn_benchmark and not self.deterministic
        described["deterministic"] = self.deterministic
        return described


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def forget_compiled() -> None:
    """Drops every compiled wrapper. A wrapper holds its model, so an entry here would keep the model alive
    for the process's life: whoever is done with its models (the builder, after each artifact) calls this.
    The compiled graphs stay in torch's cache, where a new model of the same shapes finds them."""
    _COMPILED.clear()


# a cache folder the user chose for inductor (TORCHINDUCTOR_CACHE_DIR set before bench started) is kept
_USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def use_inductor_cache(folder: Path) -> None:
    """Points inductor's on-disk cache (compiled kernels, FX and AOTAutograd graphs) at ``folder``, under the
    harness's cache, so a model compiled by one run compiles in seconds in the next; a folder the user set
    in TORCHINDUCTOR_CACHE_DIR wins. Inductor reads the variable whenever it looks a graph up."""
    if _USER_INDUCTOR_CACHE is None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(folder).resolve())


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles), as PyTorch's own CPU feature
    probe (cpuinfo) reports it: there bf16 autocast trained ResNet-8 1.73x faster than fp32
    (``docs/runtime.md``); elsewhere there is no native bf16 arithmetic to gain from, so ``amp: auto`` stays fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


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


PEAK_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@functools.lru_cache(maxsize=None)
def measured_peak_tflops(device_str: str, precision: str = "bf16") -> Optional[float]:
    """The device's achievable dense matmul rate in ``precision`` (bf16 or fp32), measured here with the
    library's own matmul, not a datasheet figure: the denominator of model FLOPs utilisation. CUDA: 8192²
    matmuls timed with CUDA events; CPU: 1024² matmuls on every torch thread, perf_counter, the best of 5
    rounds of 5 (a shared machine's slow round is not the hardware's rate; 1024² reaches the rate of 2048²
    and 4096² on 2 Zen 4 cores, and rounds of a tenth of a second keep the clock's and the scheduler's noise
    out). Half a second to a second, once per process, outside any cell's time limit (``bench/pipeline/build.py``)."""
    device, dtype = torch.device(device_str), PEAK_DTYPES[precision]
    size, repeats, rounds = (8192, 20, 1) if device.type == "cuda" else (1024, 5, 5)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, clocks, oneDNN's packing
        a @ b
    best = float("inf")
    for _ in range(rounds):
        timer = Timer(device).start()
        for _ in range(repeats):
            a @ b
        best = min(best, timer.stop())
    return 2 * size**3 * repeats / best / 1e12


def peak_precision(amp: str) -> str:
    """The matmul peak a model's utilisation is measured against: bf16 under bf16 or fp16 autocast, else fp32."""
    return "fp32" if amp == "off" else "bf16"


def resolve_runtime(
    settings: Union[RuntimeSettings, str] = RuntimeSettings(),
    shard: Shard = WHOLE,
    cuda_available: Optional[bool] = None,
    cpu_bf16: Optional[bool] = None,
    **changes,
) -> Runtime:
    """The runtime ``settings`` ask for on this machine (a device name alone: the defaults on it); ``changes``
    replace settings by name (``resolve_runtime("cpu", eval_batch_size=64)``). ``cuda_available`` and
    ``cpu_bf16`` override this process's own answers (a Ray driver resolves for its cluster's GPUs; tests
    inject either CPU). Refuses what the machine cannot do."""
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
    if cpu_bf16 is None:
        cpu_bf16 = native_cpu_bf16()
    if amp == "auto":
        amp = "bf16" if on_cuda or cpu_bf16 else "off"
    compile_on = compile == "on" or (compile == "auto" and not (settings.deterministic and not on_cuda))
    # auto on CPU: only where it pays, decided from measured steps; a deterministic run decides nothing by timing
    compile_when = "pays" if compile == "auto" and not on_cuda else "always"
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
        compile_when=compile_when,
        host_memory=settings.host_memory,
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
