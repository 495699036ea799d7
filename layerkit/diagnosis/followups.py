"""The doctor's follow-up experiments, run through its budgeted runner
(:class:`~layerkit.diagnosis.experiments.Experiments`) only when a check failed: the kink test on the worst
entries, the Taylor remainder along the worst one, and for networks the gradient at lambda = 0 and a check of
every layer on its own.  A follow-up the budget cannot pay for, or that fails far from ``x0``, becomes a note.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..check.directional import taylor_remainder
from ..check.kinks import one_sided_jumps
from ..check.methods import Central
from ..check.report import Finding
from ..numerics import Direction
from .case import Case

#: Most entries the kink test looks at.
MAX_PROBED = 24


def kinks(case: Case, bad: NDArray) -> tuple[Finding, NDArray] | None:
    """``nonsmooth`` for the worst failing entries whose one-sided slopes jump by an amount that does not
    shrink with the step (:func:`~layerkit.check.kinks.one_sided_jumps`): a kink the cost does not declare
    (``abs``, ``max``), where no finite difference is meaningful.  Returns the finding and those entries."""
    worst = bad[np.argsort(-np.abs(case.n - case.a)[bad])][:MAX_PROBED]

    def slopes() -> list[NDArray]:
        probe = case.experiments.probe(worst)
        return one_sided_jumps(probe, Central().steps(probe) * 1e2)

    jumps = case.attempt("the test for kinks", slopes)
    if jumps is None:
        return None
    j_big, j_small = jumps
    with np.errstate(invalid="ignore", divide="ignore"):
        kink = (j_small > 0.5 * j_big) & (j_small > 1e-3 * np.maximum(np.abs(case.n[worst]), np.abs(case.a[worst]))) \
            & (j_small > 0)
    if not kink.any():
        return None
    idx = worst[kink]
    return Finding("nonsmooth", tuple(case.blocks_of(idx)),
                   f"the one-sided slopes of {case.labels(idx)} differ by {float(np.max(j_small[kink])):.2e} "
                   "and do not shrink with the step: the cost has a kink there (ReLU at 0, abs, max), where "
                   "no finite difference is meaningful",
                   {"entries": [case.report.layout.label(int(j)) for j in idx],
                    "jump": float(np.max(j_small[kink]))}), idx


def taylor_along(case: Case, j: int) -> dict[str, Any] | None:
    """The Taylor-remainder verdict along entry ``j``'s coordinate (13 evaluations)."""
    return case.attempt(f"the Taylor test along {case.report.layout.label(j)}", lambda: taylor_remainder(
        case.experiments.directions(), case.report.x.astype(case.subject.x0.dtype), case.a,
        Direction(j, j + 1, np.ones(1))))


def at_lambda_zero(case: Case) -> None:
    """A network with lambda > 0: the check again at lambda = 0, to tell the penalty from the data term (a
    note says which fails)."""
    pen = case.experiments.penalty_gradient()
    a0 = case.experiments.gradient(0.0)
    if pen is None or a0 is None:
        return
    ok = np.abs(case.n - pen - a0) <= case.tol
    if case.directional:
        ok = ok | ~case.known
    case.notes.append("with lambda = 0 the check " + (
        "passes: the mismatch comes from the regularization term" if ok.all() else
        "still fails: the data term (backprop) is wrong too"))


def layers(case: Case) -> list[Finding]:
    """``layer-mismatch`` for each layer of a network that fails its own check (its backward is wrong); an
    undecided layer check accuses nobody."""
    results = case.attempt("the check of each layer", case.experiments.check_layers) or []
    names: dict[int, dict[str, str]] = {}
    for b in getattr(case.subject.network, "bindings", ()):
        names.setdefault(b.index, {})[b.param] = b.block
    out = []
    for k, layer, rep in results:
        if rep.passed or rep.inconclusive:
            continue
        mine = names.get(k, {})
        out.append(Finding("layer-mismatch", tuple([mine[b] for b in rep.failed_blocks if b in mine] or [f"layer {k}"]),
                           f"layer {k} ({layer!r}) fails its own check_layer: its backward is wrong "
                           f"(input gradient {'wrong' if 'x' in rep.failed_blocks else 'right'}; "
                           f"relative difference {rep.relative_difference:.2e})", {"layer": k, "layer_repr": repr(layer)}))
    return out
