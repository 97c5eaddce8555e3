"""A mutation pass over the core: each mutant is one small change to the training loop, a strategy, the plan
or the versions, applied to the working tree, run against the tests that should catch it, and restored.

A mutant the tests catch is "killed"; one they miss "survived": either a test is missing, or the change does
not alter behaviour (an equivalent mutant). ``python scripts/mutation_pass.py [--only SUBSTRING]`` prints one
line per mutant and a summary; run it on a clean tree (it refuses otherwise), with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["-m", "not slow"]

# (file, original text, mutated text, what it breaks, the tests run against it)
MUTANTS = [
    (
        "transfer_core/training.py",
        "        return progress / warmup",
        "        return 1.0",
        "no warmup",
        ["tests/test_versions.py", "tests/test_strategies.py"],
    ),
    (
        "transfer_core/training.py",
        "        return max(0.0, 1 - rest)",
        "        return max(0.0, 1 - rest / 2)",
        "one-cycle decays half as fast",
        ["tests/test_versions.py", "tests/test_strategies.py"],
    ),
    (
        "transfer_core/training.py",
        "nesterov=recipe.momentum > 0",
        "nesterov=False",
        "plain momentum instead of Nesterov",
        ["tests/test_versions.py", "tests/test_strategies.py"],
    ),
    (
        "transfer_core/training.py",
        '"params": [p for _, p in part if p.ndim > 1], "weight_decay"',
        '"params": [p for _, p in part if p.ndim >= 1], "weight_decay"',
        "weight decay on biases and BatchNorm too",
        ["tests/test_versions.py", "tests/test_strategies.py"],
    ),
    (
        "transfer_core/training.py",
        "label_smoothing=recipe.label_smoothing)",
        "label_smoothing=0.0)",
        "label smoothing ignored",
        ["tests/test_training_loop.py", "tests/test_strategies.py", "tests/test_versions.py"],
    ),
    (
        "transfer_core/training.py",
        "    _keep_statistics(model, frozen_statistics)\n",
        "    _keep_statistics(model, ())\n",
        "frozen statistics update",
        ["tests/test_strategies.py"],
    ),
    (
        "transfer_core/training.py",
        "        m.momentum = None  # None",
        "        m.momentum = 0.1  # None",
        "BatchNorm re-estimation as a running average",
        ["tests/test_training_loop.py", "tests/test_strategies.py", "tests/test_versions.py"],
    ),
    (
        "transfer_core/training.py",
        "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()",
        "    return 100.0 * (top[:, :1] == labels[:, None]).any(dim=1).float().mean().item()",
        "top-5 scored as top-1",
        ["tests/test_training_loop.py", "tests/test_strategies.py", "tests/test_versions.py"],
    ),
    (
        "transfer_core/strategies/alpha_mix.py",
        "torch.lerp(value_0, value_1, alpha)",
        "torch.lerp(value_0, value_1, 1 - alpha)",
        "alpha reversed inside (0, 1)",
        ["tests/test_strategies.py"],
    ),
    (
        "transfer_core/strategies/l2_sp.py",
        "return 0.5 * self.options.sp_weight * sum(moved, zero)",
        "return 0.0 * self.options.sp_weight * sum(moved, zero)",
        "L2-SP's pull toward the source dropped",
        ["tests/test_strategies.py", "tests/test_versions.py"],
    ),
    (
        "transfer_core/strategies/lp_ft.py",
        '        model = copy.deepcopy(ingredients["linear_probe"].model)  # the probe stays as it was fitted',
        '        model = copy.deepcopy(ingredients["linear_probe"].model)  # the probe stays as it was fitted\n        model.reset_head(task.target.num_classes)',  # noqa: E501
        "LP-FT starts from a fresh head, not the probe's",
        ["tests/test_strategies.py", "tests/test_versions.py"],
    ),
    (
        "transfer_core/strategies/base.py",
        "        parameter.requires_grad_(trains(name) and name not in frozen_stages)",
        "        parameter.requires_grad_(trains(name))",
        "freeze_stages ignored",
        ["tests/test_strategies.py"],
    ),
    (
        "transfer_core/strategies/base.py",
        "        body_lr_scale=options.backbone_lr_scale,",
        "        body_lr_scale=1.0,",
        "backbone_lr_scale ignored",
        ["tests/test_strategies.py"],
    ),
    (
        "bench/pipeline/plan.py",
        '            "target": self._data(cell.target, test_split=False),\n            "backbone": cell.backbone,\n            "seed": cell.seed,\n            "runtime": self._runtime_settings(cell.target, False),\n            # a fit',  # noqa: E501
        '            "target": self._data(cell.target, test_split=True),\n            "backbone": cell.backbone,\n            "seed": cell.seed,\n            "runtime": self._runtime_settings(cell.target, False),\n            # a fit',  # noqa: E501
        "a fitted model's key holds the test split",
        ["tests/test_plan.py"],
    ),
    (
        "bench/pipeline/plan.py",
        '"code": self._code(["training"], [cell.target], cell.backbone, strategies=[spec.name]),',
        '"code": self._code(["training"], [cell.target], cell.backbone),',
        "a fit's key lacks its strategy's version",
        ["tests/test_versions.py"],
    ),
    (
        "bench/pipeline/plan.py",
        '    versions = {"torch": _release(torch.__version__)}',
        "    versions = {}",
        "torch's release out of the keys",
        ["tests/test_plan.py"],
    ),
    (
        "bench/pipeline/plan.py",
        "            **components,\n        )",
        "        )",
        "no strategy or estimator version in any key",
        ["tests/test_versions.py"],
    ),
    (
        "transfer_core/versions.py",
        "            versions.update(data_path_versions(reader.array_backed, data_backend))",
        "            pass",
        "the data path's versions out of the keys",
        ["tests/test_versions.py"],
    ),
    (
        "transfer_core/data/augment.py",
        "generator=generator) < 0.5, shard)",
        "generator=generator) < 0.45, shard)",
        "flips drawn at 45%",
        ["tests/test_versions.py"],
    ),
    (
        "transfer_core/datasets/prepare.py",
        "_STATISTICS_IMAGES = 256",
        "_STATISTICS_IMAGES = 255",
        "normalisation statistics from one image fewer",
        ["tests/test_versions.py", "tests/test_image_folders.py", "tests/test_datasets.py"],
    ),
]


def run_tests(tests: list[str], slow: bool) -> tuple[bool, float]:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *([] if slow else QUICK), *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return done.returncode == 0, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="the mutants whose description holds this")
    args = parser.parse_args()
    if subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip():
        print("mutation_pass: the tree has uncommitted changes; commit or stash them first", file=sys.stderr)
        return 2
    survived = []
    chosen = [m for m in MUTANTS if args.only in m[3]]
    for path, original, mutated, what, tests in chosen:
        file = ROOT / path
        text = file.read_text()
        if text.count(original) != 1:
            print(f"  stale   {what}: {path} no longer holds the text once")
            survived.append(what)
            continue
        file.write_text(text.replace(original, mutated))
        try:
            passed, seconds = run_tests(tests, slow="test_versions.py" in " ".join(tests))
        finally:
            file.write_text(text)
        print(
            f"  {'SURVIVED' if passed else 'killed  '} {what} ({path}; {', '.join(tests)}; {seconds:.0f} s)", flush=True
        )
        if passed:
            survived.append(what)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutants killed; survived: {survived or 'none'}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
