"""The one training loop, strategy-agnostic, and the evaluation helpers every strategy shares.

A strategy decides *what* is trained (which model, which parameters require grad, from which
initialisation); ``train`` trains whatever parameters require grad, on whatever loader it is given.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Literal, Optional

import torch
import torch.nn.functional as F
from torch.profiler import record_function
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from .checks import check_range
from .compiling import CompileCosts, CompileDecision, compile_entry, graph_signature
from .data import Loader
from .distributed import WHOLE, gather_cat, mean_over_ranks
from .runtime import Runtime

# The version of this module's numbers (training, prediction, BatchNorm re-estimation, the optimiser and its
# schedule): in the key of everything that trains or predicts (``transfer_core/versions.py``). Raise it in any
# change that moves a number here.
VERSION = 1


@dataclass(frozen=True)
class TrainRecipe:
    batch_size: int = 128  # images per optimisation step
    epochs: int = 10  # passes over the training split
    # optimisation steps, whatever the split's size (epochs then only round it up to whole passes, the last
    # cut short): a data-size sweep that trains every size as long sets it
    steps: Optional[int] = None
    lr: float = 0.1  # peak learning rate of the schedule
    momentum: float = 0.9  # SGD momentum (Nesterov)
    weight_decay: float = 5e-4  # L2 on weights; BatchNorm and biases are not decayed
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"  # learning-rate shape over all steps
    warmup_fraction: float = 0.15  # share of steps spent warming up linearly from 0 to lr

    def __post_init__(self):
        for name, low, high, low_open, high_open in [
            ("batch_size", 1, None, False, False),
            ("epochs", 1, None, False, False),
            ("steps", 1, None, False, False),
            ("lr", 0, None, True, False),
            ("momentum", 0, 1, False, True),
            ("weight_decay", 0, None, False, False),
            ("label_smoothing", 0, 1, False, True),
            ("warmup_fraction", 0, 1, False, True),
        ]:
            check_range(name, getattr(self, name), low, high, low_open, high_open)


class Diverged(RuntimeError):
    """Training produced a non-finite loss."""


@dataclass
class TrainStats:
    train_s: float = 0.0  # steady-state training seconds (evaluation excluded)
    compile_s: float = 0.0  # first step when compiling: compilation and warm-up, kept apart
    images: int = 0  # training images processed (epochs x images per epoch, partial batches dropped)
    steps: int = 0
    flops: float = 0.0  # training FLOPs: forward + backward per image x images
    final_loss: float = float("nan")
    data_s: float = 0.0  # of train_s, host seconds spent waiting for the loader's next batch
    selection_s: float = 0.0  # choosing among a grid's models on validation: not training, but part of the cost
    selection_flops: float = 0.0  # the forward passes of that choice (validation, and a refit's scoring)
    compiled_steps: int = 0  # steps run by the compiled model (compile: auto on CPU compiles mid-training)
    compile_decision: Optional[dict] = None  # compile: auto on CPU: what was measured and decided (compiling.py)
    compiles: list = field(default_factory=list)  # each compile: graph, seconds, first in its process (compiling.py)

    def __iadd__(self, other: "TrainStats") -> "TrainStats":
        self.compiled_steps += other.compiled_steps
        self.compiles = self.compiles + other.compiles
        # a sum over several trainings (a grid's points) keeps the decision of one that compiled, if any did:
        # the one its compiles belong to; else the last
        compiled_before = bool(self.compile_decision and self.compile_decision.get("compiled"))
        if other.compile_decision and (other.compile_decision.get("compiled") or not compiled_before):
            self.compile_decision = other.compile_decision
        self.train_s += other.train_s
        self.compile_s += other.compile_s
        self.images += other.images
        self.steps += other.steps
        self.flops += other.flops
        self.data_s += other.data_s
        self.selection_s += other.selection_s
        self.selection_flops += other.selection_flops
        self.final_loss = other.final_loss
        return self


def lr_factor(recipe: TrainRecipe, progress: float) -> float:
    """Multiplier of the peak lr at ``progress`` in [0, 1) of all steps."""
    warmup = recipe.warmup_fraction
    if recipe.schedule == "constant":
        return 1.0
    if progress < warmup:
        return progress / warmup
    rest = (progress - warmup) / max(1e-8, 1 - warmup)
    if recipe.schedule == "onecycle":
        return max(0.0, 1 - rest)
    return 0.5 * (1 + math.cos(math.pi * rest))


def _optimizer(model: torch.nn.Module, recipe: TrainRecipe, body_lr_scale: float) -> torch.optim.Optimizer:
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    groups = []
    for in_body in (True, False):
        # discriminative learning rates: a classifier's body (the transferred part) may learn slower than its head
        lr = recipe.lr * (body_lr_scale if in_body else 1.0)
        part = [(name, p) for name, p in params if name.startswith("body.") == in_body]
        # decaying BatchNorm scales and biases only fights the normalisation; decay matrices and kernels only
        groups += [
            {"params": [p for _, p in part if p.ndim > 1], "weight_decay": recipe.weight_decay, "lr": lr},
            {"params": [p for _, p in part if p.ndim <= 1], "weight_decay": 0.0, "lr": lr},
        ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]], lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0
    )


def batchnorm_layers(model: torch.nn.Module, parameters: Iterable[str]) -> set[str]:
    """The names of the BatchNorm layers of ``model`` whose scale or shift is among ``parameters`` (names as
    ``model.named_parameters`` gives them): e.g. the BatchNorm layers of a frozen stage."""
    parameters = set(parameters)
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        and any(f"{name}.{own}" in parameters for own, _ in module.named_parameters(recurse=False))
    }


def _keep_statistics(model: torch.nn.Module, layers: Collection[str]) -> None:
    """Puts the BatchNorm ``layers`` in evaluation mode: they normalise with their running statistics and do not
    update them, while the rest of the model trains."""
    modules = dict(model.named_modules())
    for name in layers:
        if not isinstance(modules.get(name), torch.nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"frozen_statistics names {name!r}, which is not a BatchNorm layer of the model")
        modules[name].eval()


def count_flops_per_image(model: torch.nn.Module, inputs: torch.Tensor, backward: bool, runtime: Runtime) -> float:
    """FLOPs per image of one forward (and backward) pass, counted by torch.utils.flop_counter on a copy,
    so the real model's weights, grads and BatchNorm statistics are untouched."""
    probe = copy.deepcopy(model)
    sample = inputs[: min(8, len(inputs))]  # FLOPs per image do not depend on batch size for these models
    with FlopCounterMode(display=False) as counter, runtime.autocast():
        if backward:
            probe(sample).float().sum().backward()
        else:
            with torch.no_grad():
                probe(sample)
    return counter.get_total_flops() / len(sample)


def _timed_batches(loader, stats: TrainStats):
    """The loader's batches, adding the time spent waiting for each to ``stats.data_s``."""
    batches = iter(loader)
    while True:
        waited = time.perf_counter()
        with record_function("data"):
            batch = next(batches, None)
        stats.data_s += time.perf_counter() - waited
        if batch is None:
            return
        yield batch


def _data_parallel(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """DistributedDataParallel: gradients averaged over ranks, so a step is one step on the global batch."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)


def train(
    model: torch.nn.Module,
    loader: Loader,
    recipe: TrainRecipe,
    runtime: Runtime,
    desc: str = "train",
    body_lr_scale: float = 1.0,
    penalty: Optional[Callable[[], torch.Tensor]] = None,
    frozen_statistics: Collection[str] = (),
) -> TrainStats:
    """Trains the parameters of ``model`` that require grad. ``loader`` yields device batches; when it is
    this rank's shard of the training data (under torchrun), the ranks train one model together.
    What a fit trains is two separate choices its caller makes: which parameters require grad, and which
    BatchNorm layers keep their running statistics (``frozen_statistics``, by module name: they run in
    evaluation mode; every other BatchNorm layer updates its statistics, whether its scale and shift train
    or not).
    ``body_lr_scale`` multiplies the learning rate of parameters under ``body.``; ``penalty()``, when given,
    is added to every step's loss (a regulariser on the weights, computed outside any compiled graph)."""
    shard = getattr(loader, "shard", WHOLE)
    optimizer = _optimizer(model, recipe, body_lr_scale)
    total_steps = recipe.steps if recipe.steps is not None and len(loader) else recipe.epochs * len(loader)
    epochs = math.ceil(total_steps / len(loader)) if len(loader) else 0
    if total_steps == 0:
        raise ValueError(
            f"{desc}: no training steps "
            f"(batch size {recipe.batch_size} exceeds the {loader.num_examples} training examples?)"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(recipe, step / total_steps))
    network = _data_parallel(model, runtime) if shard.world > 1 else model
    step_fn = runtime.compiled(network)  # the learning rate lives in the optimizer, outside the compiled graph
    # compile: auto on CPU starts eager and compiles only if the measured steps say it pays (compiling.py); not
    # under torchrun, where ranks timing their own steps could decide differently and wait on one another
    deciding = runtime.compile and runtime.compile_when == "pays" and step_fn is network and shard.world == 1
    decision = CompileDecision(CompileCosts(runtime.compile_cache), total_steps) if deciding else None
    compile_next = step_fn is not network  # the first step of a compiled model compiles (or finds) its graphs
    compiled_at = None  # (train_s, steps) when the compiled steps began
    # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 and fp32 do not
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp == "fp16")
    stats = TrainStats()
    model.train()
    _keep_statistics(model, frozen_statistics)
    progress = tqdm(
        total=total_steps, desc=desc, unit="step", leave=False, dynamic_ncols=True, disable=None
    )  # None: off when not a terminal

    def step(forward, images, labels) -> torch.Tensor:
        # the regions are named for profilers (scripts/profile_cell.py); unprofiled, a name costs microseconds
        with record_function("forward"):
            with runtime.autocast():
                loss = F.cross_entropy(forward(images), labels, label_smoothing=recipe.label_smoothing)
            if penalty is not None:
                loss = loss + penalty()
        with record_function("backward"):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
        with record_function("optimizer"):
            scaler.step(optimizer)
            scaler.update()
        return loss

    sample = None  # a few images of the first batch, for counting FLOPs after training
    data_before_compile = 0.0
    timer = runtime.timer().start()  # CUDA events on GPU: the GPU's time, not the host's
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        epoch_loss, epoch_steps = torch.zeros((), device=runtime.device), 0
        for images, labels in _timed_batches(loader, stats):
            if stats.steps == total_steps:  # a step budget ends inside the last pass
                break
            if sample is None:
                sample = images[:8].clone()
            compiling, compile_next = compile_next, False
            if compiling and decision is not None:
                try:
                    loss = step(step_fn, images, labels)
                except Exception as e:  # e.g. no C++ compiler: auto falls back to eager and says why
                    decision.failed(e)
                    step_fn = network
                    loss = step(step_fn, images, labels)
            else:
                loss = step(step_fn, images, labels)
            scheduler.step()
            epoch_loss += loss.detach()
            epoch_steps += 1
            stats.steps += 1
            stats.images += len(labels) * shard.world
            if compiling:
                # the first compiled step pays compilation and warm-up: kept apart from training time, and the
                # wait for its batch with it
                compile_s = timer.stop()
                stats.compile_s += compile_s
                timer.start()
                if step_fn is not network:  # compiled (auto may have fallen back to eager)
                    graph = (  # auto named the graph when it decided to compile; compile: on names it here
                        decision.signature
                        if decision is not None
                        else graph_signature(model, images, runtime.amp, runtime.channels_last, runtime.compile_mode)
                    )
                    stats.compiles.append(compile_entry(graph, compile_s))
                stats.data_s = data_before_compile
                compiled_at = (stats.train_s, stats.steps) if step_fn is not network else None
            elif decision is not None and decision.after_step(
                stats.steps,
                lambda: graph_signature(model, images, runtime.amp, runtime.channels_last, runtime.compile_mode),
            ):
                step_fn, compile_next = runtime.compile_now(network), True
                stats.train_s += timer.stop()  # the eager steps so far are training; the next one compiles
                timer.start()
                data_before_compile = stats.data_s
            progress.update()
        # one host sync per epoch: checking every step would stall the GPU pipeline
        mean_loss = mean_over_ranks(epoch_loss, shard).item() / max(1, epoch_steps)
        if not math.isfinite(mean_loss):
            progress.close()
            raise Diverged(f"{desc}: loss became non-finite in epoch {epoch + 1}")
        progress.set_postfix(loss=f"{mean_loss:.3f}")
        stats.final_loss = mean_loss
    stats.train_s += timer.stop()
    progress.close()
    if compiled_at is not None:
        stats.compiled_steps = stats.steps - compiled_at[1] + 1
        if decision is not None:
            decision.compiled(stats.compile_s, stats.compiled_steps - 1, stats.train_s - compiled_at[0])
    if decision is not None:
        stats.compile_decision = decision.details
    # counted after the timed region, on a copy: accounting is not training
    stats.flops = (
        count_flops_per_image(model, sample, backward=True, runtime=runtime) * stats.images
        if sample is not None
        else 0.0
    )
    return stats


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Loader, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) for every example of an evaluation loader, as float32 on the CPU; when the loader is
    this rank's part of the split, every rank gets every example's, in the split's order."""
    model.eval()
    # the same compiled wrapper as in training, so no second compilation (under torchrun, training compiled the
    # DistributedDataParallel wrapper instead, and this compiles the model itself once)
    forward = runtime.compiled(model)
    outputs, targets = [torch.empty(0)], [torch.empty(0, dtype=torch.int64)]  # a rank's part may be empty
    for images, labels in loader:
        with runtime.autocast():
            outputs.append(forward(images).float().cpu())
        targets.append(labels.cpu())
    shard = getattr(loader, "shard", WHOLE)
    return gather_cat(torch.cat(outputs), shard), gather_cat(torch.cat(targets), shard)


def top_k_pct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = logits.topk(k, dim=1).indices
    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()


@torch.no_grad()
def reestimate_batchnorm(model: torch.nn.Module, loader: Loader, runtime: Runtime) -> None:
    """Recomputes every BatchNorm's running mean/var as a plain average over ``loader``.

    Needed after interpolating weights: the interpolated network's activations no longer match either
    endpoint's running statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved_momentum = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average, i.e. the mean over all batches
    model.train()
    # eager on purpose: with momentum=None BatchNorm divides by its batch count as a Python number, which a
    # compiled graph would specialise on, recompiling every batch; this short pass gains nothing from compiling
    for images, _ in loader:
        with runtime.autocast():
            model(images)
    for m, momentum in zip(norms, saved_momentum):
        m.momentum = momentum
    model.eval()
