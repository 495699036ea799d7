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
from ..check.kinks import undeclared
from ..check.methods import Central
from ..check.report import Finding
from ..numerics import Direction
from .case import Case

#: Most entries the kink test looks at (each costs 6 evaluations, and about 4 more per step it shrinks).
MAX_PROBED = 8


def kinks(case: Case, bad: NDArray) -> tuple[Finding, NDArray] | None:
    """``nonsmooth`` for the worst failing entries at which the cost has a kink: their one-sided slopes differ
    at every step down to the rounding (:func:`~layerkit.check.kinks.undeclared`), and the analytic value is
    neither of them.  A kink *near* the point, which a smaller step avoids, is not one: there the cost is
    smooth, and a note says where the kink is and that the mismatch remains clear of it.  Returns the finding
    and those entries."""
    worst = bad[np.argsort(-np.abs(case.n - case.a)[bad])][:MAX_PROBED]

    def outcomes() -> list[Any]:
        out = []
        for j in worst:
            probe = case.experiments.probe(np.array([j]))
            step = float(Central().steps(probe)[0])

            def delta(ts: NDArray, probe: Any = probe) -> tuple[NDArray, NDArray]:
                steps = np.asarray(ts, dtype=np.float64)[:, None]
                return (np.asarray(probe.delta(steps), dtype=np.float64)[:, 0],
                        np.asarray(probe.noise(steps), dtype=np.float64)[:, 0])

            out.append(undeclared(delta, step, float(case.a[j]), 0.0))
        return out

    found = case.attempt("the test for kinks", outcomes)
    if found is None:
        return None
    near = [(int(j), o) for j, o in zip(worst, found) if o.how == "failing" and o.distance > 0]
    if near:
        j, o = near[0]
        case.notes.append(f"{case.labels(np.array([j]))}: a kink of the cost lies within {32 * o.distance:.1e} of the "
                          f"point; at a step clear of it ({o.step:.1e}) the estimate is {o.value:.6g}, the analytic "
                          f"value {float(case.a[j]):.6g}: the mismatch is not the kink's")
    on = np.array([j for j, o in zip(worst, found) if o.how == "failing-at-kink"], dtype=np.int64)
    if not on.size:
        return None
    return Finding("nonsmooth", tuple(case.blocks_of(on)),
                   f"the cost has a kink at the point along {case.labels(on)} (ReLU at 0, abs, max): the one-sided "
                   "slopes differ at every step down to the rounding, and the analytic value is neither of them",
                   {"entries": [case.report.layout.label(int(j)) for j in on]}), on


def taylor_along(case: Case, j: int) -> dict[str, Any] | None:
    """The Taylor-remainder verdict along entry ``j``'s coordinate (13 evaluations)."""
    return case.attempt(f"the Taylor test along {case.report.layout.label(j)}", lambda: taylor_remainder(
        case.experiments.directions(), case.report.x.astype(case.subject.x0.dtype), case.a,
        Direction(j, j + 1, np.ones(1)), float(case.n[j] - case.a[j])))


def at_lambda_zero(case: Case) -> None:
    """A network with lambda > 0: the check again at lambda = 0, to tell the penalty from the data term (a
    note says which fails)."""
    pen = case.experiments.penalty_gradient()
    a0 = case.experiments.gradient(0.0)
    if pen is None or a0 is None:
        return
    with np.errstate(invalid="ignore"):
        ok = np.abs(case.n - pen - a0) <= case.tol
    ok = ok | ~np.isfinite(case.n)  # a non-finite estimate (the cost overflowed) says nothing of the backprop
    if case.directional:
        ok = ok | ~case.known
    if not np.isfinite(case.n[case.bad]).any():
        return
    case.notes.append("with lambda = 0 the check " + (
        "passes: the mismatch comes from the regularization term" if ok.all() else
        "still fails: the data term (backprop) is wrong too"))


def layers(case: Case) -> list[Finding]:
    """``layer-mismatch`` for each layer of a network that fails its own check (its backward is wrong); an
    undecided layer check accuses nobody."""
    results, unchecked = case.attempt("the check of each layer", case.experiments.check_layers) or ([], "")
    if unchecked:
        case.notes.append(unchecked)
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
