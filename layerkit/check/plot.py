"""Pictures and notebook views of a :class:`~layerkit.Report`: where gradients disagree, at a glance.

:func:`plot_report` draws one heatmap per block of ``|analytical - numerical| / tolerance`` on a log color
scale (1 is the tolerance: above it an entry fails, and is outlined), titled with the block's name, shape
and verdict, with the doctor's first finding as the caption.  A directional report measured only some
entries (the localized ones): the others are drawn as unknown (grey), never as agreeing; a block measured
only along its own directions is drawn whole in the colour of its worst direction, and says so.

:func:`report_html` is the report as HTML for notebooks (``Report._repr_html_``), styled (verdict colours,
FAIL rows marked): the verdict, the blocks, the worst entries, the findings, the correct and wrong blocks, the
step verdict, the notes and, when matplotlib is installed, the heatmap inline as a PNG.

matplotlib is an optional extra (``pip install 'layerkit[plot]'``); it is imported only here, only when a
picture is asked for.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError

#: Color scale of the ratio error / tolerance: from 1e-3 (far inside) to at least 1e3 (far outside).
RATIO_RANGE = (1e-3, 1e3)


def _matplotlib() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("pictures need matplotlib: pip install 'layerkit[plot]'") from None
    return plt


def block_ratios(report: Any, block: Any) -> tuple[NDArray, NDArray]:
    """``(ratio, known)`` of a block as a 2-D array (a 1-D block as one row): ``|a - n| / tolerance`` per
    entry (inf where the tolerance is 0 and they differ) and whether the entry was measured."""
    s = block.slice
    a, n, tol = report.analytical[s], report.numerical[s], report.tolerance[s]
    known = np.isfinite(n) if report.measured is None else (report.measured[s] & np.isfinite(n))
    if report.mode == "full":
        known = np.ones(block.size, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(n, dtype=np.float64))
        ratio = np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    shape = tuple(block.shape) if len(block.shape) == 2 else (1, block.size)
    order: Literal["C", "F"] = block.order if len(block.shape) == 2 else "C"
    return ratio.reshape(shape, order=order), known.reshape(shape, order=order)


def plot_report(report: Any, ax: Any = None) -> Any:
    """Draw ``report`` (module docstring) and return the matplotlib Figure.

    ``ax``: None (a new figure, one panel per block), one Axes (a report of one block), or a sequence of
    Axes, one per block.
    """
    plt = _matplotlib()
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    blocks = list(report.layout.blocks)
    if ax is None:
        widths = [max(1.0, min(4.0, (b.shape[1] if len(b.shape) == 2 else b.size) / 8)) for b in blocks]
        fig, axes = plt.subplots(1, len(blocks), figsize=(3.2 * len(blocks) + 1.5, 3.8), layout="constrained",
                                 gridspec_kw={"width_ratios": widths}, squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != len(blocks):
            raise InputError("ax", f"one Axes per block ({len(blocks)})", f"{len(axes)} Axes")
        fig = axes[0].figure
    lo, hi = RATIO_RANGE
    panels = [block_ratios(report, block) for block in blocks]
    finite = [float(np.max(r[k & np.isfinite(r)], initial=0.0)) for r, k in panels]
    top = max(hi, *finite)
    norm = LogNorm(vmin=lo, vmax=top)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#d9d9d9")
    image = None
    summaries = {b.name: b for b in report.blocks}
    alone = None if report.directional is None else report.directional.block_tests
    for block, axis, (ratio, known) in zip(blocks, axes, panels):
        shown = np.clip(np.where(np.isfinite(ratio), ratio, top), lo, top)
        data = np.ma.masked_array(shown, mask=~known)
        tests = list(alone.get(block.name, ())) if alone is not None and not known.any() else []
        if tests:  # measured along its own directions only: the whole block in the worst direction's colour
            worst = max(abs(t.numerical - t.analytical) / max(t.tolerance, np.finfo(float).tiny) for t in tests)
            data = np.ma.masked_array(np.full(shown.shape, np.clip(worst, lo, top)), mask=np.zeros(shown.shape, bool))
            axis.text(0.5, 0.5, f"{len(tests)} direction{'s' if len(tests) > 1 else ''} in the block\n"
                      f"worst {worst:.2g} x tolerance", transform=axis.transAxes, ha="center", va="center",
                      fontsize=8, color="white" if worst > 1 else "black")
        image = axis.imshow(data, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        for r, c in zip(*np.nonzero(known & (ratio > 1))):
            axis.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#00b050", linewidth=1.2))
        summary = summaries.get(block.name)
        verdict = "ok" if summary is None or summary.passed else f"FAIL ({summary.n_failed} entries)"
        what = "x".join(map(str, block.shape))
        if report.mode == "directional":
            verdict += (f", {int(known.sum())} of {block.size} measured" if not tests else
                        ", along its own directions")
        axis.set_title(f"{block.name} {what}: {verdict}", fontsize=9)
        axis.set_xlabel("column" if len(block.shape) == 2 else "entry", fontsize=8)
        axis.set_ylabel("row" if len(block.shape) == 2 else "", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        if len(block.shape) != 2:
            axis.set_yticks([])
    if image is not None:
        bar = fig.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
        bar.set_label("|analytical - numerical| / tolerance (outlined: > 1)", fontsize=8)
    fig.suptitle(report.verdict.split(":")[0].strip(), fontsize=10)
    if report.findings:
        first = report.findings[0]
        caption = textwrap.fill(f"{first.code}: {first.message}", width=int(17 * fig.get_figwidth()))
        fig.supxlabel(caption, fontsize=7, ha="left", x=0.01)
    return fig


def _png(report: Any) -> str | None:
    try:
        plt = _matplotlib()
    except ImportError:
        return None
    fig = plot_report(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: The fragment's own style, scoped to it: verdict colours, FAIL rows marked, monospace numbers.
STYLE = """<style>
.layerkit-report{font-family:system-ui,sans-serif;font-size:13px;line-height:1.4;max-width:64em}
.layerkit-report .verdict{padding:.3em .6em;border-radius:4px;margin:.3em 0}
.layerkit-report .verdict.passed{background:#e6f4ea;color:#137333}
.layerkit-report .verdict.failed{background:#fce8e6;color:#a50e0e}
.layerkit-report .verdict.inconclusive{background:#fef7e0;color:#8a5300}
.layerkit-report table{border-collapse:collapse;margin:.4em 0}
.layerkit-report th,.layerkit-report td{border-bottom:1px solid #ddd;padding:.15em .6em;text-align:right}
.layerkit-report th:first-child,.layerkit-report td:first-child{text-align:left}
.layerkit-report td{font-family:ui-monospace,monospace}
.layerkit-report tr.fail td{background:#fce8e6;color:#a50e0e;font-weight:600}
.layerkit-report .lines{list-style:none;padding-left:0}
.layerkit-report .lines .wrong{color:#a50e0e}
.layerkit-report .lines .step{color:#444}
</style>"""


def report_html(report: Any, picture: bool = True) -> str:
    """The report as an HTML fragment (module docstring)."""
    e = html.escape
    state = "passed" if report.passed else "inconclusive" if report.inconclusive else "failed"
    rows = "".join(
        f"<tr class=\"{'ok' if b.passed else 'fail'}\"><td>{e(b.name)}</td><td>{'x'.join(map(str, b.shape))}</td>"
        f"<td>{b.relative_difference:.2e}</td><td>{b.max_abs_error:.2e}</td><td>{b.n_failed}</td>"
        f"<td>{'ok' if b.passed else 'FAIL'}</td></tr>" for b in report.blocks)
    worst = "".join(
        f"<tr><td>{e(w.label)}</td><td>{w.numerical:.10e}</td><td>{w.analytical:.10e}</td><td>{w.error:.2e}</td>"
        f"<td>{w.tolerance:.2e}</td></tr>" for w in report.worst)
    findings = "".join(f"<li><code>{e(f.code)}</code> [{e(', '.join(f.blocks))}]: {e(f.message)}</li>"
                       for f in report.findings)
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    png = _png(report) if picture else None
    lines = [f'<li class="{"wrong" if report.failed_blocks else "correct"}">{e(report.blocks_verdict)}</li>']
    if report.step_verdict:
        lines.append(f'<li class="step">step: {e(report.step_verdict)}</li>')
    parts = [
        STYLE,
        f'<div class="layerkit-report" data-verdict="{state}">',
        f'<p class="verdict {state}"><b>{e(report.verdict)}</b></p>',
        '<table class="blocks"><thead><tr><th>block</th><th>shape</th><th>rel diff</th><th>max abs err</th>'
        f"<th>failed entries</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>",
    ]
    if worst:
        parts.append('<table class="worst"><thead><tr><th>entry</th><th>numerical</th><th>analytical</th>'
                     f"<th>error</th><th>tolerance</th></tr></thead><tbody>{worst}</tbody></table>")
    if findings:
        parts.append(f'<ul class="findings">{findings}</ul>')
    parts.append(f'<ul class="lines">{"".join(lines)}</ul>')
    if notes:
        parts.append(f'<ul class="notes">{notes}</ul>')
    if png is not None:
        parts.append(f'<img class="heatmap" alt="where the gradients disagree" src="data:image/png;base64,{png}"/>')
    parts.append("</div>")
    return "".join(parts)
