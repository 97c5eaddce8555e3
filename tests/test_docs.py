"""The manual: docs/suite.md is what scripts/suite_reference.py writes from the schema's dataclasses; every
relative link of the README, of docs/ and of the results folders' READMEs points to a file (and a heading) that
exists; the README stays a short map with its two newcomer commands and a line for every command."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
from conftest import REPO

from transfer_core.training import TrainRecipe

NEWCOMER_COMMANDS = (
    "pip install -e . && python -m bench run suites/quick.yaml",
    "pip install -e '.[test]' && python -m pytest",
)
README = REPO / "README.md"
SUITE_REFERENCE = REPO / "docs" / "suite.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "results").glob("*/README.md"))]


def generator():
    spec = importlib.util.spec_from_file_location("suite_reference", REPO / "scripts" / "suite_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suite_reference_is_what_the_schema_generates():
    written = SUITE_REFERENCE.read_text(encoding="utf-8")
    assert written == generator().expected(SUITE_REFERENCE), (
        "docs/suite.md differs from the schema: run python scripts/suite_reference.py"
    )
    for key in ("lr", "val_fraction", "eval_batch_size", "crop_padding", "trials", "alphas", "sp_weight", "k"):
        assert f"| `{key}` |" in written, f"docs/suite.md has no row for {key}"


@dataclasses.dataclass(frozen=True)
class RecipeWithANewKey(TrainRecipe):
    gradient_clip: float = 1.0  # the largest gradient norm a step applies


@dataclasses.dataclass(frozen=True)
class RecipeWithAnUndescribedKey(TrainRecipe):
    gradient_clip: float = 1.0


def test_a_key_added_to_the_schema_changes_the_reference_and_must_be_described(monkeypatch):
    reference = generator()
    monkeypatch.setattr(reference, "TrainRecipe", RecipeWithANewKey)
    assert "| `gradient_clip` | number | `1.0` | the largest gradient norm a step applies |" in reference.generated()
    monkeypatch.setattr(reference, "TrainRecipe", RecipeWithAnUndescribedKey)
    with pytest.raises(SystemExit, match="gradient_clip has no comment"):
        reference.generated()


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens, repeats
    numbered."""
    found: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(
        r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S), flags=re.M
    ):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in found else f"{slug}-{found[slug]}")
        found[slug] = found.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_is_a_short_map_with_the_newcomer_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220, "README.md is a map: move the details into docs/"
    for command in NEWCOMER_COMMANDS:
        assert command in text, f"README.md lost its newcomer command: {command}"
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"


def test_the_readme_has_a_line_for_every_command():
    commands = [
        re.search(r'^NAME(?:, ORDER)? = "([a-z-]+)"', path.read_text(encoding="utf-8"), flags=re.M)
        for path in sorted((REPO / "bench" / "commands").glob("*.py"))
    ]
    text = README.read_text(encoding="utf-8")
    missing = [m.group(1) for m in commands if m and f"`python -m bench {m.group(1)}" not in text]
    assert len([m for m in commands if m]) >= 12 and not missing, f"README.md's commands table lacks {missing}"


def test_the_manual_names_no_code_salt():
    """Keys hold per-component versions (transfer_core/versions.py); there is no global salt to bump."""
    for page in PAGES:
        assert "CODE_SALT" not in page.read_text(encoding="utf-8"), page.relative_to(REPO)


def test_a_module_over_400_lines_says_why_at_its_top():
    import ast

    long = []
    for path in sorted([*(REPO / "bench").rglob("*.py"), *(REPO / "transfer_core").rglob("*.py")]):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400 and "Longer than" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(str(path.relative_to(REPO)))
    assert not long, f"split these, or say at their top why they are longer than 400 lines: {long}"


def test_the_modules_that_find_the_checkout_find_it():
    """The gate runs the head from its checkout and provenance asks git about it: both must name the folder that
    holds bench/, transfer_core/ and suites/, wherever their modules sit."""
    from bench.measure.gate.run import HARNESS_ROOT
    from bench.pipeline.provenance import REPO_DIR

    for root in (HARNESS_ROOT, REPO_DIR):
        assert all((root / part).is_dir() for part in ("bench", "transfer_core", "suites")), root
