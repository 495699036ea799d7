"""The readable text of a :class:`~layerkit.check.report.Report`: the verdict, a line per block, the worst
entries, the findings, the right and wrong blocks, the step verdict, the notes and the evaluations spent."""

from __future__ import annotations

from typing import Any

import numpy as np


def render(report: Any, top: int | None = None) -> str:
    """The table ``str(report)`` prints (``top``: how many worst entries, default all the report keeps)."""
    lines = [report.verdict]
    if report.directional is not None:
        lines.append(_directional_line(report.directional))
    lines += _block_lines(report)
    lines += _worst_lines(report.worst[: (len(report.worst) if top is None else top)])
    for f in report.findings:
        where = f" [{', '.join(f.blocks)}]" if f.blocks else ""
        lines.append(f"  {f.code}{where}: {f.message}")
    if report.step_verdict or report.findings:
        lines.append(f"  {report.blocks_verdict}")
    if report.step_verdict:
        lines.append(f"  step: {report.step_verdict}")
    lines += [f"  note: {note}" for note in report.notes]
    own = report.target_evals
    split = "" if own is None else (f" ({own} of the network itself, {report.n_evals - own} of the engine's exact "
                                    "cost changes)")
    lines.append(f"  {report.n_evals} evaluations{split} in {report.seconds * 1e3:.1f} ms")
    return "\n".join(lines)


def _directional_line(d: Any) -> str:
    loc = d.localized
    return (f"  directional: {d.n_directions} random directions"
            + (f"; localized {len(loc)} entr{'y' if len(loc) == 1 else 'ies'}" if loc else "")
            + (f"; spread over {', '.join(d.spread_blocks)}" if d.spread_blocks else "")
            + f" (evaluations: {', '.join(f'{k} {v}' for k, v in d.evaluations.items())})")


def _block_lines(report: Any) -> list[str]:
    width = max([len(b.name) for b in report.blocks] + [5])
    alone = None if report.directional is None else report.directional.block_tests
    lines = []
    for b in report.blocks:
        mark = "ok  " if b.passed else "FAIL"
        shape = "x".join(map(str, b.shape)) or "scalar"
        if alone is not None and b.name not in alone and not b.n_failed:  # only the whole-vector directions
            lines.append(f"  {mark} {b.name:<{width}} {shape:>9}  (through the whole-vector directions only)")
            continue
        extra = "" if b.passed else f"  ({b.n_failed} of {int(np.prod(b.shape))} entries off)" if b.n_failed else \
            "  (fails along its own directions; no entry localized)"
        lines.append(f"  {mark} {b.name:<{width}} {shape:>9}  rel diff {b.relative_difference:9.2e}"
                     f"  max abs err {b.max_abs_error:9.2e}{extra}")
    return lines


def _worst_lines(worst: Any) -> list[str]:
    if not worst:
        return []
    lw = max(len(e.label) for e in worst)
    return ["  worst entries:"] + [
        f"    {e.label:<{lw}}  numerical {e.numerical: .10e}  analytical {e.analytical: .10e}"
        f"  error {e.error:.2e} (tol {e.tolerance:.1e})" for e in worst]
