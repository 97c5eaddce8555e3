"""report.html as a browser reads it: headless Chromium (Debian's ``chromium``; CI installs it and fails without
it, .ci/run) parses the page into the tables the report rendered, names with markup characters intact, and
paints the plots."""

import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image
from test_report import RECORDS, SEARCH, record

from bench.results.records import ResultsStore
from bench.results.report import load_results, write_reports
from bench.results.tables import TABLES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (apt-get install chromium)")


def chromium(*args: str) -> str:
    done = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Tables(HTMLParser):
    """The tables of a DOM as lists of rows of cell texts, and the SVG elements counted."""

    def __init__(self):
        super().__init__()
        self.tables, self.svgs, self._cell = [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "svg":
            self.svgs += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None


def test_chromium_reads_every_table_and_paints_the_plots(tmp_path):
    hostile = "b<i>&amp;|*x*"  # a target name with markup in it: shown as text, never as markup
    records = RECORDS + SEARCH + [record("linear_probe", s, 38.0 + s) for s in (0, 1)]
    records = [{**r, "target": hostile, "cell_id": r["cell_id"].replace("->b/", f"->{hostile}/")} for r in records]
    ResultsStore(tmp_path).append(records)
    write_reports(load_results(tmp_path), "Results: <s>")
    page = (tmp_path / "report.html").as_uri()

    dom = Tables()
    dom.feed(chromium("--dump-dom", page))
    assert len(dom.tables) == len(TABLES)
    for table, parsed in zip(TABLES, dom.tables):
        assert parsed[0] == table.headers  # every declared column, in order
        assert all(len(row) == len(table.headers) for row in parsed[1:])
        assert all(row[0] == f"a → {hostile}" for row in parsed[1:])  # the name as written, not as markup
    results, grid = dom.tables
    assert [row[2] for row in results[1:]][:2] == ["scratch", "linear_probe"]
    assert [row[3] for row in grid[1:]] == ["lr=0.01", "lr=0.1"]
    assert dom.svgs >= 2  # the accuracy-vs-compute and α plots, inline

    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,3000", page)
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    # text, rules and the plots' coloured markers: a blank or unstyled page has a handful of colours
    assert len(colours) > 200, f"the page painted {len(colours)} colours"
