"""Writes docs/suite.md, the suite reference, from the suite schema's dataclasses.

Every key a suite may hold is read by ``bench/pipeline/suite/`` into a field of a dataclass (the recipe, the runtime,
a strategy's or a dataset's ``Options``...). This script lists each key with its type, its default and its
description: the comment on the field's line in the source, or on the comment lines right above it. So a key
is documented where it is declared, and a field added without a comment, or without running this script, fails
``tests/test_docs.py``.

docs/suite.md keeps everything above its marker line (written by hand); everything below is generated.

    python scripts/suite_reference.py           # rewrites docs/suite.md
    python scripts/suite_reference.py --check   # exit 1 when docs/suite.md is not what this script writes
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUTPUT = ROOT / "docs" / "suite.md"

# The schema, imported by module path: when a module moves, only these imports change.
from bench.pipeline import shifts as shift_schema  # noqa: E402
from bench.pipeline.suite import schema  # noqa: E402  (DataSettings, DatasetSpec)
from bench.pipeline.suite import sections as suite_keys  # noqa: E402  (the parser's key sets)
from bench.pipeline.tuning import Tuning  # noqa: E402
from transfer_core.data.augment import Augmentation  # noqa: E402
from transfer_core.datasets import DATASETS, DatasetReader  # noqa: E402
from transfer_core.datasets.prepare import Selection  # noqa: E402
from transfer_core.estimators import ESTIMATORS  # noqa: E402
from transfer_core.pretrained import PretrainedSpec  # noqa: E402
from transfer_core.runtime import RuntimeSettings  # noqa: E402
from transfer_core.shifts.corruptions import CONSTANTS, CORRUPTIONS, FAMILIES, SEVERITIES  # noqa: E402
from transfer_core.strategies import STRATEGIES  # noqa: E402
from transfer_core.training import TrainRecipe  # noqa: E402

MARKER = (
    "<!-- Generated below this line by scripts/suite_reference.py from the comments on the schema's fields: "
    "edit those, then run `python scripts/suite_reference.py`. Above it, written by hand. -->"
)
DEFAULT_HEAD = "# Suite reference\n\n"

# Keys the parser reads without a dataclass field of the same name, described here (the parser's key sets,
# imported above, decide which keys exist: a key added there without a line here stops this script).
TOP_LEVEL = {
    "schema_version": ("integer", "required", f"`{schema.SCHEMA_VERSION}`: the version of this schema"),
    "name": ("string", "required", "letters, digits, `.`, `_`, `-`: results go to `results/<name>/`"),
    "description": ("string", '`""`', "free text"),
    "data": ("mapping", "`{}`", "where the datasets are, and how subsets are drawn: [`data:`](#data)"),
    "source": (
        "mapping or list of mappings",
        "required",
        "a dataset trained on here ([dataset keys](#datasets-source-and-targets) plus any [`train:`](#train) key), "
        "or [pretrained weights](#pretrained-sources); a list: several sources",
    ),
    "targets": ("list of mappings", "required", "the target datasets: [dataset keys](#datasets-source-and-targets)"),
    "backbones": (
        "list of strings",
        "required unless every source is pretrained",
        "registered names (`python -m bench list`), or any timm / torchvision model (`timm:NAME`, `torchvision:NAME`)",
    ),
    "strategies": ("mapping", "required", "strategy name → its section: [`strategies:`](#strategies)"),
    "estimators": ("list", "none", "transferability estimators: [`estimators:`](#estimators)"),
    "train": ("mapping", "`{}`", "the training recipe every strategy and source starts from: [`train:`](#train)"),
    "runtime": ("mapping", "`{}`", "device, precision, compilation, data backend: [`runtime:`](#runtime)"),
    "seeds": ("list of integers", "`[0]`", "one cell per seed; no seed repeated"),
    "tuning": ("mapping", "`{}`", "equal-budget search and refit: [`tuning:`](#tuning)"),
}
DATASET_KEYS = {  # key -> (the DatasetSpec field whose comment describes it, or a description)
    "dataset": (
        None,
        "a registered dataset name ([below](#datasets-known)); `hf:NAME` is `dataset: hf` with `source: NAME`",
    ),
    "name": ("label", None),
    "resolution": ("resolution", None),
    "augment": (None, "training-time augmentation: [`augment:`](#augment)"),
    "shifts": ("shifts", None),
}
PRETRAINED_KEYS = {  # key -> (the PretrainedSpec field whose comment describes it, or a description)
    "pretrained": (None, "`timm:NAME.TAG` (a timm model with its weights tag) or `torchvision:NAME`"),
    "weights": ("weights", None),
    "file": ("file", None),
    "name": ("label", None),
    "checkpoint": (None, "a state dict (or `.safetensors`) of a model this harness, timm or torchvision builds"),
    "backbone": (None, "with `checkpoint`: the backbone it was saved from (`resnet8`, `timm:resnet18`, ...)"),
}
CORRUPTION_KEYS = {  # key -> (the CorruptionShift field whose comment describes it, or a description)
    "corruptions": (
        None,
        "`all`, a family ("
        + ", ".join(f"`{family}`" for family in FAMILIES)
        + ") or a list of corruption and family names: "
        + ", ".join(f"`{name}`" for name in CORRUPTIONS),
    ),
    "severities": (None, "severities to score, each in " + ", ".join(map(str, SEVERITIES))),
    "seed": ("seed", None),
    "constants": ("constants", None),
}
# Fields declared without a comment, described here until their source has one (a comment there wins).
# defaults the parser sets instead of the dataclass's
DEFAULT_OVERRIDES = {
    (Selection, "val_fraction"): "`0.1` on a target (`0.2` with `examples`); `0` on a source or a shift",
    (schema.DatasetSpec, "label"): "the dataset's name, with its classes",
    (PretrainedSpec, "label"): "the model's name",
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _comments_of(cls: type) -> dict[str, str]:
    """Field name -> the comments on its line(s) and on the comment lines right above it, for the fields ``cls``
    itself declares. Empty where its source cannot be read (a class made by ``make_dataclass``)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    described = {}
    for statement in ast.parse(source).body[0].body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above, line = [], statement.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        trailing = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
        described[statement.target.id] = " ".join(part for part in above + trailing if part)
    return described


def describe(cls: type, name: str) -> str:
    """The description of field ``name`` of dataclass ``cls``: the comments where it is declared (in ``cls`` or
    the base that declares it)."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            text = _comments_of(klass).get(name, "")
            if text:
                return text
            break
    raise SystemExit(
        f"suite_reference: {cls.__module__}.{cls.__qualname__}.{name} has no comment: add one on its line "
        "(what the key means), then run python scripts/suite_reference.py"
    )


PLURALS = {"integer": "integers", "number": "numbers", "string": "strings", "boolean": "booleans"}


def type_text(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        kinds = [type_text(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        if not args:
            return "list"
        item = type_text(args[0])
        return f"list of ({item})" if " or " in item else "list of " + PLURALS.get(item, item)
    if tp in (list, tuple):
        return "list"
    if tp is dict or origin is dict:
        return "mapping"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        items = [value_text(v) for v in value]
        if len(items) > 6:
            return f"[{', '.join(items[:3])}, …, {items[-1]}] ({len(items)} values)"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def default_text(cls: type, field: dataclasses.Field) -> str:
    override = DEFAULT_OVERRIDES.get((cls, field.name))
    if override:
        return override
    if field.default is not dataclasses.MISSING:
        return f"`{value_text(field.default)}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{value_text(field.default_factory())}`"
    return "required"


def field_rows(cls: type, only: Any = None, descriptions: dict | None = None) -> list[list[str]]:
    """One row per field of dataclass ``cls`` (those in ``only``, when given): key, type, default, description."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        text = (descriptions or {}).get(field.name) or describe(cls, field.name)
        rows.append([f"`{field.name}`", type_text(hints[field.name]), default_text(cls, field), text])
    return rows


def field_table(cls: type, only: Any = None, descriptions: dict | None = None) -> str:
    rows = field_rows(cls, only, descriptions)
    if not rows:
        return "No keys of its own.\n"
    return _table(["key", "type", "default", "description"], rows)


def keyed_rows(keys: dict, allowed: set, cls: type) -> list[list[str]]:
    """Rows for keys the parser reads by name (``allowed``), described by a field of ``cls`` or by ``keys``."""
    missing = set(allowed) - set(keys)
    if missing:
        raise SystemExit(f"suite_reference: the parser reads {sorted(missing)}; describe them in this script")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    rows = []
    for key, (field_name, text) in keys.items():
        if key not in allowed:
            continue
        if field_name is None:
            rows.append([f"`{key}`", "", "", text])
        else:
            field = fields[field_name]
            rows.append([f"`{key}`", type_text(hints[field_name]), default_text(cls, field), describe(cls, field_name)])
    return rows


def _docline(cls: type) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def _reader(name: str):
    return DATASETS.get(name)


def datasets_section() -> str:
    out = ["## Datasets: `source:` and `targets:`\n\n"]
    out.append(
        "Each target, and a source trained here, is a mapping of these keys, the selection keys, and the dataset's "
        "own keys ([below](#each-datasets-own-keys)). A source also takes any [`train:`](#train) key; a target "
        "takes `shifts`.\n\n"
    )
    rows = keyed_rows(DATASET_KEYS, set(DATASET_KEYS), schema.DatasetSpec)
    for row in rows:
        if row[0] == "`dataset`":
            row[1:3] = ["string", "required"]
        elif row[0] == "`augment`":
            row[1:3] = ["mapping", "the dataset's"]
    out.append(_table(["key", "type", "default", "description"], rows))
    out.append("\n### Selection\n\nWhich classes and images of the dataset are used, and how much validation.\n\n")
    out.append(field_table(Selection, only=suite_keys.SELECTION_KEYS))
    out.append("\n### `augment:`\n\nTraining only; a mapping of these keys, each defaulting to the dataset's own.\n\n")
    out.append(field_table(Augmentation))
    changed = [
        [f"`{name}`", ", ".join(f"`{k}: {value_text(v)}`" for k, v in _reader(name).augmentation_defaults.items())]
        for name in DATASETS.names()
        if _reader(name).augmentation_defaults
    ]
    out.append("\nDatasets whose defaults differ from the table's:\n\n")
    out.append(_table(["dataset", "augmentation defaults"], changed))
    out.append("\n### Datasets known\n\n")
    rows = []
    for name in DATASETS.names():
        reader = _reader(name)
        reads = "arrays, on the device" if reader.array_backed else "encoded images, decoded to `resolution`"
        official = "yes" if reader.publishes_val else "no"
        if reader.has_official_val is not DatasetReader.has_official_val:
            official = "when its keys name one"
        rows.append([f"`{name}`", reads, official, _docline(reader)])
    out.append(_table(["dataset", "reads", "official validation split", "what it is"], rows))
    out.append("\n### Each dataset's own keys\n\n")
    rows, bare = [], []
    for name in DATASETS.names():
        reader = _reader(name)
        spec = getattr(reader, "spec", None)  # torchvision's sets: their options are torchvision's arguments
        passed = getattr(spec, "options", {}) or {}
        descriptions = {
            key: f"torchvision's `{spec.torchvision_class}` argument `{argument}`"
            for key, (argument, _) in passed.items()
        }
        own = field_rows(reader.Options, descriptions=descriptions)
        if not own:
            bare.append(f"`{name}`")
        rows += [[f"`{name}`", *row] for row in own]
    out.append(_table(["dataset", "key", "type", "default", "description"], rows))
    out.append(f"\nNo keys of their own: {', '.join(bare)}.\n")
    return "".join(out)


def pretrained_section() -> str:
    allowed = suite_keys.PRETRAINED_KEYS | suite_keys.CHECKPOINT_KEYS
    rows = keyed_rows(PRETRAINED_KEYS, allowed, PretrainedSpec)
    for row in rows:
        if row[0] in ("`pretrained`", "`checkpoint`"):
            row[1:3] = ["string", "required (one of the two)"]
        elif row[0] == "`backbone`":
            row[1:3] = ["string", "required with `checkpoint`"]
    return (
        "## Pretrained sources\n\n"
        "A source that is loaded, not trained: `{pretrained: ...}` (with `weights`, `file`, `name`) or "
        "`{checkpoint: ..., backbone: ...}` (with `name`).\n\n"
        + _table(["key", "type", "default", "description"], rows)
    )


def strategies_section() -> str:
    out = ["## `strategies:`\n\n"]
    out.append(
        "Strategy name → its section: its own keys (below) and, for a strategy that trains, any "
        "[`train:`](#train) key. A key given as a list of values is a grid.\n\n"
    )
    rows = []
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        ingredients = cls.ingredients_of(cls.Options())
        space = ", ".join(f"{k}: {value_text(v)}" for k, v in cls.search_space.items())
        rows.append(
            [
                f"`{name}`",
                "yes" if cls.trains else "no",
                "yes" if cls.uses_source else "no",
                ", ".join(f"`{i}`" for i in ingredients) or "–",
                value_text(cls.recipe_defaults) if cls.recipe_defaults else "–",
                space or "–",
            ]
        )
    headers = ["strategy", "trains", "starts from the source", "ingredients", "own recipe defaults", "search space"]
    out.append(_table(headers, rows))
    for name in STRATEGIES.names():
        out.append(f"\n### `{name}`\n\n")
        out.append(field_table(STRATEGIES.get(name).Options))
    return "".join(out)


def estimators_section() -> str:
    out = ["## `estimators:`\n\n"]
    out.append(
        "A list of estimator names, or one-key mappings of a name to its keys: `[logme, leep, {knn: {k: 20}}]`.\n\n"
    )
    rows = []
    for name in ESTIMATORS.names():
        described = ESTIMATORS.get(name).describe()
        rows.append([f"`{name}`", described["reads"], described["paper"]])
    out.append(_table(["estimator", "reads", "paper"], rows))
    for name in ESTIMATORS.names():
        out.append(f"\n### `{name}`\n\n")
        out.append(field_table(ESTIMATORS.get(name).Options))
    return "".join(out)


def shifts_section() -> str:
    rows = keyed_rows(CORRUPTION_KEYS, shift_schema._CORRUPTION_KEYS, shift_schema.CorruptionShift)
    for row in rows:
        if row[0] == "`corruptions`":
            row[1:3] = ["string or list of strings", "required"]
        elif row[0] == "`severities`":
            row[1:3] = ["list of integers", f"`{value_text(list(SEVERITIES))}`"]
        elif row[0] == "`constants`":
            row[1] = " | ".join(f"`{c}`" for c in ("auto", *CONSTANTS))
    dataset_rows = [
        ["`dataset`", "string", "required", "any dataset, with its [dataset keys](#datasets-source-and-targets)"],
        *field_rows(shift_schema.DatasetShift, only={"split"}),
    ]
    dataset_rows[-1][1] = "`test` | `train`"
    return (
        "## `shifts:` (on a target)\n\n"
        "A list; each entry corrupts the target's test split, or names another dataset.\n\n"
        "A corruption entry:\n\n"
        + _table(["key", "type", "default", "description"], rows)
        + "\nA dataset entry:\n\n"
        + _table(["key", "type", "default", "description"], dataset_rows)
    )


def generated() -> str:
    missing = suite_keys.TOP_KEYS ^ set(TOP_LEVEL)
    if missing:
        raise SystemExit(
            f"suite_reference: top-level keys {sorted(missing)} differ from the parser's; update TOP_LEVEL"
        )
    recipe_defaults = [
        [f"`{name}`", value_text(STRATEGIES.get(name).recipe_defaults)]
        for name in STRATEGIES.names()
        if STRATEGIES.get(name).recipe_defaults
    ]
    sections = [
        "## Top level\n\n"
        + _table(["key", "type", "default", "description"], [[f"`{k}`", *v] for k, v in TOP_LEVEL.items()]),
        "## `data:`\n\n" + field_table(schema.DataSettings),
        datasets_section(),
        pretrained_section(),
        "## `train:`\n\n"
        "The recipe: in `train:`, in a source, and in the section of a strategy that trains. A strategy's own "
        "defaults win over `train:`; its own section wins over both.\n\n"
        + field_table(TrainRecipe)
        + "\nStrategies' own defaults:\n\n"
        + _table(["strategy", "defaults"], recipe_defaults),
        strategies_section(),
        "## `tuning:`\n\n" + field_table(Tuning),
        "## `runtime:`\n\n" + field_table(RuntimeSettings),
        estimators_section(),
        shifts_section(),
    ]
    return "\n".join(sections)


def render(head: str) -> str:
    return head + MARKER + "\n\n" + generated()


def head_of(text: str) -> str:
    return text.split(MARKER)[0] if MARKER in text else DEFAULT_HEAD


def expected(path: Path = OUTPUT) -> str:
    """What docs/suite.md should hold: its hand-written head, then the generated reference."""
    return render(head_of(path.read_text(encoding="utf-8")) if path.is_file() else DEFAULT_HEAD)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/suite.md differs from what is generated")
    args = parser.parse_args()
    text = expected()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != text:
            print("docs/suite.md is out of date: run python scripts/suite_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
