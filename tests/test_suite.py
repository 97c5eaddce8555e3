import copy

import pytest
import yaml
from conftest import REPO, tiny_suite

from bench.cli import main
from bench.pipeline.suite import SuiteError, check_data, expand_cells, load_suite, parse_suite


def error_of(raw) -> str:
    with pytest.raises(SuiteError) as info:
        parse_suite(raw)
    return str(info.value)


def test_shipped_suites_are_valid():
    for path in sorted((REPO / "suites").glob("*.yaml")):
        suite = load_suite(str(path))
        assert expand_cells(suite), path


def test_tiny_suite_expands_to_every_combination():
    raw = tiny_suite(seeds=[0, 1])
    suite = parse_suite(raw)
    cells = expand_cells(suite)
    assert len(cells) == 4 * 2
    # alpha-mix runs after the strategies it combines
    names = [s.name for s in suite.strategies]
    assert names.index("alpha_mix") > max(names.index("linear_probe"), names.index("full_finetune"))
    assert cells[0].cell_id == "digits[0-4]->digits[5-9]/resnet8/scratch/seed0"
    assert len(expand_cells(suite, "alpha_mix")) == 2


def test_train_defaults_flow_into_strategies_and_source():
    suite = parse_suite(tiny_suite())
    assert suite.sources[0].recipe.batch_size == 16 and suite.sources[0].recipe.epochs == 2
    finetune = suite.strategy("full_finetune")
    assert finetune.recipe.lr == 0.05 and finetune.recipe.epochs == 2


def test_a_strategys_own_defaults_win_over_the_suites_train_section():
    raw = tiny_suite(
        train={"batch_size": 16, "lr": 0.2, "label_smoothing": 0.1, "weight_decay": 1e-3},
        strategies={"linear_probe": {}, "lp_ft": {}, "l2_sp": {}, "full_finetune": {}},
    )
    suite = parse_suite(raw)
    probe, lp_ft, l2_sp, finetune = (
        suite.strategy(n).recipe for n in ("linear_probe", "lp_ft", "l2_sp", "full_finetune")
    )
    assert (probe.lr, probe.label_smoothing, probe.epochs, probe.batch_size) == (0.05, 0.0, 40, 256)
    assert probe.weight_decay == 1e-3  # a key the probe sets no default for still comes from train:
    assert lp_ft.lr == 0.01 and lp_ft.label_smoothing == 0.1
    assert l2_sp.weight_decay == 0.0 and l2_sp.lr == 0.2
    assert finetune.lr == 0.2 and finetune.weight_decay == 1e-3
    raw["strategies"]["linear_probe"] = {"lr": 0.3, "label_smoothing": 0.05}
    probe = parse_suite(raw).strategy("linear_probe").recipe
    assert probe.lr == 0.3 and probe.label_smoothing == 0.05


@pytest.mark.parametrize(
    "finetune, built_from", [("lp_ft", ["linear_probe", "lp_ft"]), ("full_finetune", ["linear_probe", "full_finetune"])]
)
def test_alpha_mix_alone_builds_the_ingredients_its_options_name(finetune, built_from):
    suite = parse_suite(tiny_suite(strategies={"scratch": {}, "alpha_mix": {"finetune": finetune}}))
    assert sorted(s.name for s in suite.ingredients) == sorted(built_from)
    assert sorted(suite.fitted_models("alpha_mix")) == sorted(built_from)
    assert suite.uses_source("alpha_mix") and suite.uses_source(finetune) and not suite.uses_source("scratch")
    if finetune == "lp_ft":  # it starts from the probe, not from the source itself, yet reads the source
        assert suite.fitted_models("lp_ft") == ["lp_ft", "linear_probe"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s.update(colour="blue"), "suite.colour: unknown key; allowed:"),
        (lambda s: s["train"].update(lrr=0.1), "train.lrr: unknown key; allowed: batch_size"),
        (lambda s: s["train"].update(lr="fast"), "train.lr: expected a number, got 'fast'"),
        (lambda s: s["train"].update(epochs=2.5), "train.epochs: expected an integer"),
        (lambda s: s["train"].update(lr=-1), "train.lr: -1.0 is outside (0, inf]"),
        (
            lambda s: s["targets"][0].update(dataset="imagenet"),
            "targets[0].dataset: unknown dataset 'imagenet'; known: caltech101, cifar10, cifar100",
        ),
        (lambda s: s.update(backbones=["resnet9000"]), "backbones[0]: unknown backbone 'resnet9000'"),
        (
            lambda s: s["strategies"].update(lora={}),
            "strategies.lora: unknown strategy; known: alpha_mix, full_finetune, l2_sp, linear_probe, lp_ft, scratch",
        ),
        (
            lambda s: s["strategies"]["alpha_mix"].update(alphas=[0, 1.5]),
            "strategies.alpha_mix.alphas[1]: 1.5 is outside [0, 1]",
        ),
        (
            lambda s: s["strategies"]["alpha_mix"].update(space="softmax"),
            "strategies.alpha_mix.space: 'softmax' is not allowed; choose 'weights' | 'logits' | 'probs' | 'outputs'",
        ),
        (lambda s: s["targets"][0].update(val_fraction=1.0), "targets[0].val_fraction: 1.0 is outside [0, 1)"),
        (lambda s: s["source"].update(classes=[]), "source.classes: expected 2 or more to classify, got []"),
        (lambda s: s["targets"][0].update(classes=[7]), "targets[0].classes: expected 2 or more to classify, got [7]"),
        (lambda s: s["runtime"].update(device="tpu"), "runtime.device: 'tpu' is not allowed"),
        (lambda s: s.update(seeds=[0, 0]), "seeds: repeated seed"),
        (lambda s: s.update(schema_version=2), "schema_version: expected 1, got 2"),
        (lambda s: s.pop("targets"), "targets: expected a non-empty list"),
        (
            lambda s: s["runtime"].update(data_backend="opencv"),
            "runtime.data_backend: 'opencv' is not allowed; choose 'auto' | 'torch' | 'dali'",
        ),
        (
            lambda s: s["targets"][0].update(augment={"flip": "sometimes"}),
            "targets[0].augment.flip: 'sometimes' is not allowed",
        ),
        (
            lambda s: s["targets"][0].update(augment={"padding_mode": "wrap"}),
            "targets[0].augment.padding_mode: 'wrap' is not allowed",
        ),
        (lambda s: s["targets"][0].update(augment={"cutout": -2}), "targets[0].augment.cutout: -2 is outside [0, inf]"),
        (
            lambda s: s["targets"][0].update(augment={"random_resized_crop": 0.5}),
            "targets[0].augment.random_resized_crop: only for image folders",
        ),
        (lambda s: s["targets"][0].update(resolution=0), "targets[0].resolution: 0 is outside [1, inf]"),
        (
            lambda s: s["targets"][0].update(dataset="image_folder", path="x", classes=None),
            "targets[0].resolution: image_folder needs one",
        ),
        (
            lambda s: s["targets"][0].update(
                dataset="image_folder", path="x", classes=None, resolution=32, augment={"flip": "alternate"}
            ),
            "targets[0].augment.flip: alternate needs an array dataset",
        ),
        (
            lambda s: s["targets"][0].update(
                dataset="image_folder", path="x", classes=None, resolution=32, bad_files="ignore"
            ),
            "targets[0].bad_files: 'ignore' is not allowed; choose 'error' | 'skip'",
        ),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_field(mutate, expected):
    raw = copy.deepcopy(tiny_suite())
    mutate(raw)
    message = error_of(raw)
    assert expected in message


def test_missing_data_without_download_names_the_folder_and_the_fixes(tmp_path):
    suite = parse_suite(tiny_suite(targets=[{"dataset": "cifar100"}], source={"dataset": "cifar10"}))
    with pytest.raises(SuiteError) as info:
        check_data(suite, tmp_path)
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "--data-root" in message and "data.download: true" in message


def test_validate_command_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_suite()))
    assert main(["validate", str(good)]) == 0
    assert "4 cells" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_suite(backbones=["nope"])))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: ") and "backbones[0]" in err and len(err.splitlines()) == 1

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert main(["validate", str(broken)]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


def test_flip_booleans_and_new_keys_parse():
    raw = tiny_suite()
    raw["targets"][0].update(resolution=24, augment={"flip": True, "cutout": 3, "padding_mode": "zeros"})
    raw["source"]["augment"] = {"flip": False}
    raw["runtime"].update(data_backend="torch", input_dtype="float32")
    suite = parse_suite(raw)
    target = suite.targets[0]
    assert target.resolution == 24 and target.augmentation.flip == "random" and target.augmentation.cutout == 3
    assert suite.sources[0].data.augmentation.flip == "none"
    assert target.describe()["resolution"] == 24  # part of the config hash
    folder = parse_suite(tiny_suite(targets=[{"dataset": "image_folder", "path": "pets/photos", "resolution": 64}]))
    assert folder.targets[0].label == "photos"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {
                "targets": [
                    {"dataset": "digits", "classes": [5, 6]},
                    {"dataset": "digits", "classes": [5, 6], "name": "again"},
                ]
            },
            r"targets\[1\]: repeats targets\[0\] \(names aside\); list it once",
        ),
        ({"backbones": ["resnet8", "resnet8"]}, r"backbones\[1\]: repeats backbones\[0\]"),
        (
            {"source": [{"dataset": "digits", "epochs": 2}, {"dataset": "digits", "epochs": 2, "name": "twin"}]},
            r"source\[1\]: repeats source\[0\]",
        ),
    ],
)
def test_a_repeated_entry_is_refused(overrides, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite(tiny_suite(**overrides))


def test_a_strategy_that_selects_on_validation_needs_a_validation_split():
    raw = tiny_suite()
    raw["targets"][0]["val_fraction"] = 0
    raw["strategies"]["linear_probe"]["solver"] = "sgd"
    with pytest.raises(
        SuiteError, match=r"targets\[0\]\.val_fraction: alpha_mix chooses on validation data, and 0 leaves none"
    ):
        parse_suite(raw)
    raw["strategies"].pop("alpha_mix")
    parse_suite(raw)  # the other strategies do without one
    raw["strategies"]["linear_probe"]["solver"] = "lbfgs"  # the probe's default: its L2 chosen on validation
    with pytest.raises(SuiteError, match=r"linear_probe chooses on validation data.*or fit the probe by sgd"):
        parse_suite(raw)


def test_a_data_size_sweep_becomes_one_target_per_size():
    raw = tiny_suite()
    raw["targets"] = [
        {"dataset": "digits", "classes": [5, 6, 7, 8, 9], "per_class": [10, 20, 40], "val_fraction": 0.25}
    ]
    suite = parse_suite(raw)
    assert [t.label for t in suite.targets] == [
        "digits[5-9] (10/class)",
        "digits[5-9] (20/class)",
        "digits[5-9] (40/class)",
    ]
    assert {t.family for t in suite.targets} == {"digits[5-9]"} and [t.selection.per_class for t in suite.targets] == [
        10,
        20,
        40,
    ]
    assert len(expand_cells(suite)) == 3 * len(expand_cells(parse_suite(tiny_suite())))
    vtab = parse_suite({**raw, "targets": [{"dataset": "digits", "examples": [100, 300], "name": "d"}]})
    assert [t.label for t in vtab.targets] == ["d (100 examples)", "d (300 examples)"]
    assert all(t.selection.val_fraction == 0.2 for t in vtab.targets)  # VTAB-1k's 800/200
    assert error_of({**raw, "targets": [{"dataset": "digits", "per_class": [10, 10]}]}).startswith(
        "targets[0].per_class: expected a non-empty list of different sizes"
    )
    assert error_of({**raw, "targets": [{"dataset": "digits", "per_class": [10, 0]}]}).startswith(
        "targets[0].per_class[1]"
    )


def test_smaller_sizes_of_a_sweep_keep_a_subset_of_the_larger_ones_images():
    from pathlib import Path

    from transfer_core.datasets import Digits, Selection, prepare_dataset

    def train_images(**selection):
        data = prepare_dataset("digits", Digits.Options(), Selection(**selection), Path("."), False)
        return {tuple(image.flatten().tolist()) for image in data.train.images}

    assert train_images(per_class=10) <= train_images(per_class=40)
    small, large = train_images(examples=50), train_images(examples=200)
    assert len(small) <= 50 and small <= large


def test_resampling_per_seed_draws_each_seeds_subsets_validation_and_test_images(tmp_path):
    from bench.pipeline.build import BuildEnv, Builder
    from transfer_core.runtime import resolve_runtime

    def prepared(resample: str) -> dict:
        raw = tiny_suite(seeds=[0, 1, 2], data={"resample": resample})
        raw["targets"][0]["per_class"] = 20
        suite = parse_suite(raw)
        builder = Builder(BuildEnv(suite.name, tmp_path, False, tmp_path / "cache", resolve_runtime("cpu")))
        by_seed = {}
        for cell in expand_cells(suite):
            data = builder.data(cell.target)
            source = builder.data(cell.source.data)
            by_seed[cell.seed] = (data.train.images, data.val.images, data.test.images, source.train.images)
        return by_seed

    fixed, drawn = prepared("none"), prepared("per_seed")
    for part in range(4):  # target train, validation, test; source train
        assert all((fixed[s][part] == fixed[0][part]).all() for s in (1, 2))
        assert not (drawn[1][part] == drawn[2][part]).all()
    assert all((drawn[0][part] == fixed[0][part]).all() for part in range(4))  # seed 0 draws with data seed 0


def test_a_bench_error_is_one_line_whatever_it_is_given():
    """Messages quote names and values from files, which may hold line breaks: every BenchError joins its lines,
    so each test of an error's wording need not check its line count."""
    from bench.errors import BenchError, ReportError

    for error in (SuiteError("targets[0].name: 'a\nb'\r\n is\tbad"), ReportError("x\n\ny"), BenchError("\n")):
        assert "\n" not in str(error) and "\r" not in str(error) and "\t" not in str(error)
    assert str(SuiteError("targets[0].name: 'a\nb'  is bad")) == "targets[0].name: 'a b' is bad"
