"""Fingerprints of each component's behaviour, recorded with the versions they were made under.

Each probe runs one component (a strategy, a dataset reader, a backbone, the training loop, a data-path
module, an estimator, a corruption...) on tiny fixed inputs and returns the versions of every component it ran
(``transfer_core/versions.py``'s ``code_versions``) and a fingerprint of what came out: counts and labels
exactly, floats as a few sums and fixed random projections, which move when any value moves.
``tests/test_versions.py`` compares them with ``fingerprints.json``: new numbers under the recorded versions
mean a component changed what it computes without raising its version (its cached models would be reused).

The probes run in fp32, eager, on one thread, so the numbers are bitwise the same from run to run on one kind of
machine; another kind (another CPU instruction set, another torch release) sums in another order, so the
fingerprints hold the machine they were recorded on (``host``) and are compared only on its kind.

After raising a version, record them again: ``python tests/fingerprints.py --record``. Recording refuses to
change a fingerprint whose versions did not change (the failure it would hide is the one the test is for);
``--force`` records anyway, for a new kind of machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

TESTS = Path(__file__).resolve().parent
RECORDED = TESTS / "fingerprints.json"
sys.path.insert(0, str(TESTS))  # the miniatures' writers live beside this file

from transfer_core.backbones import BACKBONES, create_backbone  # noqa: E402
from transfer_core.data import Augmentation, BatchFormat, create_loader, dali_available  # noqa: E402
from transfer_core.datasets import DATASETS, Digits, Selection, create_dataset_reader, prepare_dataset  # noqa: E402
from transfer_core.estimators import ESTIMATORS, EstimatorInputs  # noqa: E402
from transfer_core.runtime import resolve_runtime  # noqa: E402
from transfer_core.strategies import STRATEGIES, TargetTask  # noqa: E402
from transfer_core.training import TrainRecipe, train  # noqa: E402
from transfer_core.versions import code_versions  # noqa: E402

# fp32 and eager whatever the CPU: bf16 autocast (auto on CPUs with native bf16) and compile-when-it-pays (decided
# from measured step times) would make the numbers depend on the machine and its load
RUNTIME = resolve_runtime("cpu", amp="off", compile="off", cpu_bf16=False, eval_batch_size=64)
AUGMENT = Augmentation(crop_padding=2, flip="random")
NO_AUGMENT = Augmentation(crop_padding=0, flip="none")
# gentle enough that every strategy learns something in two epochs (a collapsed fit would fingerprint little)
RECIPE = TrainRecipe(epochs=2, lr=0.02, batch_size=16)
TRAINED = ["training"]  # what every probe that trains runs besides its own component


def summary(*tensors) -> list[float]:
    """Count, sum, sum of squares and two fixed random projections of all values: any moved value moves them."""
    flat = torch.cat([torch.as_tensor(t).detach().double().flatten() for t in tensors])
    directions = torch.randn(2, flat.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [float(flat.numel()), float(flat.sum()), float((flat**2).sum()), *map(float, directions @ flat)]


def host() -> dict:
    """The kind of machine fingerprints are comparable on: float sums run in the same order there."""
    return {
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": ".".join(torch.__version__.split("+")[0].split(".")[:2]),
    }


def weights(model: torch.nn.Module) -> list[float]:
    return summary(*[value for _, value in sorted(model.state_dict().items()) if value.is_floating_point()])


@contextmanager
def one_thread():
    """Probes run on one thread: float sums in one order, whatever the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Context:
    """What the probes share, made once: a folder with a miniature of every dataset, digits source and target."""

    def __init__(self, folder: Path):
        import datasets as hf_datasets
        from test_datasets import _write_every_dataset

        hf_datasets.config.HF_DATASETS_CACHE = str(folder / "hf-cache")  # Arrow files made here, not in ~/.cache
        self.folder = folder
        self.dataset_options = _write_every_dataset(folder)
        self.source = prepare_dataset(
            "digits", Digits.Options(), Selection(classes=(0, 1, 2, 3, 4), per_class=30), folder, False
        )
        self.target = prepare_dataset(
            "digits",
            Digits.Options(),
            Selection(classes=(5, 6, 7, 8, 9), per_class=20, val_fraction=0.25, test_per_class=10),
            folder,
            False,
        )
        self._source_model = None

    def source_model(self) -> torch.nn.Module:
        if self._source_model is None:
            torch.manual_seed(0)
            model = RUNTIME.prepare(create_backbone("resnet8", self.source.num_classes, 1))
            loader = RUNTIME.loader(self.source, "train", 16, True, AUGMENT, seed=0)
            train(model, loader, RECIPE, RUNTIME)
            self._source_model = model
        return self._source_model


def _digits_versions(parts, **components) -> dict:
    return code_versions(parts, datasets=["digits"], data_backend="torch", backbone="resnet8", **components)


def probe_training(ctx: Context):
    return _digits_versions(TRAINED), weights(ctx.source_model())


def scored(task: TargetTask, model: torch.nn.Module) -> dict:
    """What evaluation makes of a model: its metrics, which test images it got right, and its logits."""
    val, test = task.outputs(model)
    return {
        "metrics": sorted(task.metrics_from_logits(val, test).items()),
        "test_correct": task.test_correct(test)["bits"],
        "logits": summary(test[0], *([val[0]] if val is not None else [])),
    }


def probe_evaluation(ctx: Context):
    """Ten classes, so top-5 is computed too; a model trained a little, so the scores are not chance's."""
    data = prepare_dataset(
        "digits", Digits.Options(), Selection(per_class=12, val_fraction=0.25, test_per_class=6), ctx.folder, False
    )
    torch.manual_seed(1)
    model = RUNTIME.prepare(create_backbone("resnet8", data.num_classes, 1))
    train(model, RUNTIME.loader(data, "train", 16, True, NO_AUGMENT, seed=0), RECIPE, RUNTIME)
    return _digits_versions(TRAINED + ["evaluation"]), scored(
        TargetTask(data, "resnet8", 0, RUNTIME, NO_AUGMENT), model
    )


def strategy_probe(name: str) -> Callable:
    def probe(ctx: Context):
        task = TargetTask(ctx.target, "resnet8", 0, RUNTIME, AUGMENT)
        fitted: dict = {}

        def fit(strategy: str):
            if strategy not in fitted:
                cls = STRATEGIES.get(strategy)
                ingredients = {i: fit(i) for i in cls.ingredients_of(cls.Options())}
                source = copy.deepcopy(ctx.source_model()) if cls.uses_source else None
                torch.manual_seed(2)
                fitted[strategy] = cls(cls.Options(), RECIPE).fit(task, source, ingredients) if cls.trains else None
            return fitted[strategy]

        cls = STRATEGIES.get(name)
        fit(name)
        evaluations = cls(cls.Options(), RECIPE).evaluate(task, {n: f for n, f in fitted.items() if f is not None})
        scores = [{"metrics": sorted(e.metrics.items()), "test_correct": e.test_correct["bits"]} for e in evaluations]
        own = weights(fitted[name].model) if cls.trains else None
        return _digits_versions(TRAINED + ["evaluation"], strategies=sorted(fitted)), {"weights": own, "scores": scores}

    return probe


def backbone_probe(name: str) -> Callable:
    def probe(ctx: Context):
        torch.manual_seed(0)
        model = create_backbone(name, 7, 3).eval()
        images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = model(images)
        return code_versions(backbone=name), {"weights": weights(model), "logits": summary(logits)}

    return probe


def dataset_probe(name: str) -> Callable:
    def probe(ctx: Context):
        reader = create_dataset_reader(name)
        options = reader.Options(**ctx.dataset_options.get(name, {}))
        data = prepare_dataset(name, options, Selection(val_fraction=0.3, seed=3), ctx.folder, False, resolution=8)
        splits = {}
        for split in ("train", "val", "test"):
            if getattr(data, split) is None:
                splits[split] = None
                continue
            loader = create_loader(data, split, BatchFormat(RUNTIME.device, data.mean, data.std), 32, False, NO_AUGMENT)
            batches = list(loader)
            labels = torch.cat([labels for _, labels in batches])
            splits[split] = {"labels": labels.tolist(), "pixels": summary(*[images for images, _ in batches])}
        described = {"classes": data.num_classes, "mean": list(data.mean), "std": list(data.std), "splits": splits}
        return code_versions(datasets=[name], data_backend="torch"), described

    return probe


def loader_probe(backend: str) -> Callable:
    """A training epoch with crops and flips: arrays (digits) on the device, or the same digits as PNG files."""

    def probe(ctx: Context):
        if backend == "arrays":
            name, data = "digits", ctx.source
        else:
            name = "image_folder"
            options = create_dataset_reader(name).Options(**ctx.dataset_options[name])
            data = prepare_dataset(name, options, Selection(), ctx.folder, False, resolution=8)
        loader = create_loader(
            data,
            "train",
            BatchFormat(RUNTIME.device, data.mean, data.std),
            16,
            True,
            AUGMENT,
            seed=5,
            backend="torch" if backend == "arrays" else backend,
        )
        loader.set_epoch(1)
        batches = list(loader)
        fingerprint = {
            "labels": torch.cat([y for _, y in batches]).tolist(),
            "pixels": summary(*[x for x, _ in batches]),
        }
        return code_versions(datasets=[name], data_backend="torch" if backend == "arrays" else backend), fingerprint

    return probe


def estimator_probe(name: str) -> Callable:
    def probe(ctx: Context):
        from estimator_inputs import fixed_inputs

        features, labels, probs = fixed_inputs("tall")
        score = ESTIMATORS.get(name)().score(EstimatorInputs(features, labels, probs))
        return code_versions(estimators=[name]), score

    return probe


def probe_pretrained(ctx: Context):
    """A harness model's weights saved as a DDP user would (``module.`` prefixes), loaded as a source."""
    from transfer_core.pretrained import PretrainedSpec, load_body

    torch.manual_seed(3)
    saved = create_backbone("resnet8", 4, 3)
    path = ctx.folder / "saved.pt"
    torch.save({f"module.{k}": v for k, v in saved.state_dict().items()}, path)
    loaded = load_body(PretrainedSpec("checkpoint", "resnet8", file=str(path)), path, 3)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = loaded.head(loaded.body.eval()(images))
    return code_versions(["pretrained"], backbone="resnet8"), summary(logits)


def probe_corruptions(ctx: Context):
    from transfer_core.shifts.corruptions import CORRUPTIONS, corrupt

    clean = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    return code_versions(["corruptions"]), {
        name: summary(corrupt(clean, name, 3, seed=0, constants="cifar")) for name in CORRUPTIONS
    }


UNAVAILABLE_HERE = {"data/dali": "NVIDIA DALI is not installed"}  # probes that need what a machine may lack


def probes() -> dict[str, Callable]:
    """Every probe, by the component it is named for: one per registered strategy, dataset, backbone and
    estimator (a new one is probed without a line here), and the parts that are not registered."""
    found = {"training": probe_training, "evaluation": probe_evaluation, "pretrained": probe_pretrained}
    found["corruptions"] = probe_corruptions
    found.update({f"strategy/{name}": strategy_probe(name) for name in STRATEGIES.names()})
    found.update({f"dataset/{name}": dataset_probe(name) for name in DATASETS.names()})
    found.update({f"backbone/{name}": backbone_probe(name) for name in BACKBONES.names()})
    found["backbone/torchvision:mobilenet_v3_small"] = backbone_probe("torchvision:mobilenet_v3_small")
    found.update({f"estimator/{name}": estimator_probe(name) for name in ESTIMATORS.names()})
    found["data/arrays"], found["data/folders"] = loader_probe("arrays"), loader_probe("torch")
    if dali_available():
        found["data/dali"] = loader_probe("dali")
    return found


def run_probes(folder: Path) -> dict:
    """Every probe's versions and fingerprint, and the machine they were made on, as ``fingerprints.json`` holds
    them."""
    ctx = Context(folder)
    found = {}
    with one_thread():
        for name, probe in probes().items():
            versions, fingerprint = probe(ctx)
            found[name] = {"versions": versions, "fingerprint": json.loads(json.dumps(fingerprint))}
    return {"host": host(), "probes": found}


def differences(recorded, measured, where: str = "", rel: float = 1e-9) -> list[str]:
    """Where two fingerprints differ: floats beyond ``rel`` (relative to the larger, or 1e-12 absolute: on one
    kind of machine the probes are bitwise repeatable), the rest exactly."""
    if isinstance(recorded, dict) and isinstance(measured, dict):
        if recorded.keys() != measured.keys():
            return [f"{where}: keys {sorted(recorded)} != {sorted(measured)}"]
        return [d for key in recorded for d in differences(recorded[key], measured[key], f"{where}/{key}", rel)]
    if isinstance(recorded, list) and isinstance(measured, list):
        if len(recorded) != len(measured):
            return [f"{where}: {len(recorded)} values != {len(measured)}"]
        return [d for i, (a, b) in enumerate(zip(recorded, measured)) for d in differences(a, b, f"{where}[{i}]", rel)]
    if isinstance(recorded, float) or isinstance(measured, float):
        if isinstance(recorded, (int, float)) and isinstance(measured, (int, float)):
            if math.isclose(recorded, measured, rel_tol=rel, abs_tol=1e-12) or (
                recorded != recorded and measured != measured
            ):
                return []
    elif recorded == measured:
        return []
    return [f"{where}: recorded {recorded!r}, now {measured!r}"]


def unjustified_changes(recorded: dict, measured: dict) -> list[str]:
    """The probes whose fingerprint moved while their versions stayed: what recording would paper over."""
    if recorded.get("host") != measured["host"]:
        return []  # another kind of machine: nothing to compare against
    return [
        name
        for name, now in measured["probes"].items()
        if name in recorded["probes"]
        and recorded["probes"][name]["versions"] == now["versions"]
        and differences(recorded["probes"][name]["fingerprint"], now["fingerprint"])
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help=f"write every probe's fingerprint to {RECORDED.name}")
    parser.add_argument("--force", action="store_true", help="record even fingerprints whose versions did not change")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        measured = run_probes(Path(folder))
    if not args.record:
        print(json.dumps(measured, indent=1, sort_keys=True))
        return 0
    unjustified = unjustified_changes(json.loads(RECORDED.read_text()), measured) if RECORDED.exists() else []
    if unjustified and not args.force:
        print(
            f"fingerprints: the numbers of {', '.join(unjustified)} moved while their versions did not: raise the "
            "version of the component that changed, then record (--force records anyway)",
            file=sys.stderr,
        )
        return 1
    RECORDED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(measured['probes'])} fingerprints in {RECORDED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
