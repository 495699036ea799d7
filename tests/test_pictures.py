"""Report.plot, the CLI's --plot and Report._repr_html_ (parsed, not eyeballed)."""

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import layerkit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))


class _Tables(HTMLParser):
    """Rows of each table (by class), the verdict's class, list items and images."""

    def __init__(self):
        super().__init__()
        self.tables, self.items, self.images, self.verdict = {}, [], [], None
        self._table = self._row = self._cell = None
        self._li = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "data-verdict" in a:
            self.verdict = a["data-verdict"]
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("class"), [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "li":
            self._li = ""
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._table is not None:
            self._table.append(self._row)
        elif tag == "table":
            self._table = None
        elif tag == "li":
            self.items.append(self._li)
            self._li = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._li is not None:
            self._li += data


def _forum():
    import forum_bug

    return forum_bug.problem().check()


def test_html_of_a_failing_report_has_the_blocks_worst_entries_and_findings():
    report = _forum()
    page = _Tables()
    page.feed(report._repr_html_())
    assert page.verdict == "failed"
    blocks = page.tables["blocks"]
    assert blocks[0][0] == "block" and [r[0] for r in blocks[1:]] == ["Theta1", "Theta2"]
    assert [r[-1] for r in blocks[1:]] == ["ok", "FAIL"] and blocks[2][4] == "3"
    worst = page.tables["worst"]
    assert len(worst) == 1 + len(report.worst) and worst[1][0] == report.worst[0].label
    assert any(item.startswith("regularization-mismatch") for item in page.items)
    html = report._repr_html_()
    assert "<style>" in html and 'tr class="fail"' in html and ".verdict.failed" in html
    assert any(item.startswith("correct: Theta1") for item in page.items)  # the text report's lines
    assert any(item.startswith("step: ") for item in page.items)
    pytest.importorskip("matplotlib")
    assert page.images and page.images[0].startswith("data:image/png;base64,")


def test_html_without_matplotlib_is_the_tables_alone(monkeypatch):
    import layerkit.check.plot as plot

    def missing():
        raise ImportError("pictures need matplotlib")

    monkeypatch.setattr(plot, "_matplotlib", missing)
    net = layerkit.Network.from_sizes([3, 4, 2], seed=0)
    report = layerkit.check_network(net, np.ones((4, 3)), [0, 1, 0, 1], 1.0)
    page = _Tables()
    page.feed(report._repr_html_())
    assert page.verdict == "passed" and not page.images and len(page.tables["blocks"]) == 3


def test_plot_draws_one_panel_per_block_and_outlines_the_failing_entries():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    report = _forum()
    fig = report.plot()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["Theta1 5x4: ok", "Theta2 3x6: FAIL (3 entries)"]
    outlined = [p for p in panels[1].patches if isinstance(p, Rectangle)]
    assert sorted((int(p.get_x() + 0.5), int(p.get_y() + 0.5)) for p in outlined) == [(0, 0), (0, 1), (0, 2)]
    assert not panels[0].patches
    assert "regularization-mismatch" in fig.get_supxlabel()
    plt.close(fig)


def test_a_directional_report_draws_unmeasured_entries_as_unknown():
    pytest.importorskip("matplotlib")
    import forum_bug
    import matplotlib.pyplot as plt

    report = forum_bug.problem().check(mode="directional")
    fig = report.plot()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert panels[1].get_title().endswith("3 of 18 measured")
    data = panels[1].images[0].get_array()
    assert int(np.ma.count(data)) == 3  # only the localized entries carry a value
    plt.close(fig)


def test_cli_writes_the_picture(tmp_path):
    pytest.importorskip("matplotlib")
    out = subprocess.run([sys.executable, "-m", "layerkit.cli.app", "check", str(ROOT / "examples" / "forum_bug.py:problem"),
                          "--plot", str(tmp_path / "bug.png"), "-q"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 1 and (tmp_path / "bug.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "layerkit.cli.app", "check", "--plot", str(tmp_path / "no" / "x.png")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "--plot" in bad.stderr and "Traceback" not in bad.stderr


def test_a_block_measured_along_its_own_directions_is_drawn_not_grey():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 30))

    def fun(w):  # a whole-block scale bug: every entry off, nothing to localize
        return float(np.sum(np.sin(A * w.reshape(30, 30)))), 2 * (A * np.cos(A * w.reshape(30, 30))).ravel()

    report = layerkit.check_function(fun, rng.standard_normal(900), blocks={"W": (30, 30)}, mode="directional")
    assert not report.passed
    fig = report.plot()
    image = fig.axes[0].images[0].get_array()
    assert not np.ma.getmaskarray(image).all()
    assert "along its own directions" in fig.axes[0].get_title()
    plt.close(fig)
