"""Finite differences whose stencil crosses a kink (a ReLU's 0, say): measured again without crossing.

A network with layers that declare ``kinks`` (points where they are not differentiable) is piecewise smooth.
A stencil that moves a kinked unit's input across a kink differences two pieces: its estimate is not a
derivative, however right the gradient is.  For a failing entry ``j`` of a full check (the line
``x0 + t e_j``) or a failing direction ``u`` of a directional one (``x0 + t u``), :func:`settle` finds out
whether the stencil ``|t| <= reach`` changes the side of a kink of any example (``sides(t)``: the sign of
every kinked layer's input minus each kink, from one forward pass), and if so:

* halves the step until ``+-h`` keeps every side (at most :data:`HALVINGS` times): the cost is smooth on
  that interval, and the central difference there is a derivative again, judged with the tolerance of its
  own step: rounding ``SAFETY (n(h) + n(-h)) / (2 h)`` from the evaluator's noise bound, plus twice the
  change of the estimate from ``h`` to ``h/2`` (its truncation, measured), plus the caller's part (the
  rounding of the analytic value);
* when no such step exists (an input exactly at a kink, which every step moves off it: a side of 0 at the
  point itself goes there directly), takes the one-sided
  differences on each side, each over an interval that keeps its own sides and extrapolated from ``h`` and
  ``h/2``: the analytic value may be anything between the two one-sided slopes (a subgradient).

What is settled this way passes, with a ``nonsmooth`` finding that says so; what still disagrees fails as
before: a wrong derivative of a ReLU (1 everywhere, or the step on the wrong side) is wrong away from its
kinks too, where no stencil crosses one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from .tolerance import SAFETY

#: Halvings of the step tried before a line is taken to sit exactly on a kink.
HALVINGS = 30
#: Most failing entries (or directions) examined per check: each costs a few dozen forward passes.
MAX_LINES = 64

#: ``delta(ts)``: cost changes ``J(x0 + t v) - J(x0)`` at the steps ``ts`` and a bound on their rounding.
Delta = Callable[[NDArray], tuple[NDArray, NDArray]]


@frozen
class Settled:
    """The outcome for one line: ``how`` is ``"smooth"`` (the stencil crosses no kink: nothing to settle),
    ``"smaller-step"``, ``"one-sided"`` or ``"failing"``; ``value`` and ``tolerance`` are the new estimate
    and its tolerance when settled."""

    how: str
    value: float = float("nan")
    tolerance: float = float("nan")
    step: float = 0.0
    #: Evaluations spent: forward passes for the sides and cost changes for the differences.
    evals: int = 0


def _central(delta: Delta, h: float) -> tuple[float, float]:
    d, n = delta(np.array([h, -h]))
    return float((d[0] - d[1]) / (2 * h)), float(SAFETY * (abs(n[0]) + abs(n[1])) / (2 * h))


def _one_sided(delta: Delta, h: float) -> tuple[float, float]:
    """``(J(x + h v) - J(x)) / h`` extrapolated from ``h`` and ``h/2`` (``h`` of either sign)."""
    d, n = delta(np.array([h, h / 2]))
    e1, e2 = d[0] / h, d[1] / (h / 2)
    return float(2 * e2 - e1), float(SAFETY * (abs(n[0] / h) + abs(2 * n[1] / h)) + 2 * abs(e1 - e2))


def settle(sides: Callable[[float], NDArray | None], delta: Delta, reach: float, analytic: float,
           extra_tolerance: float) -> Settled:
    """Settle one line (module docstring): ``sides(t)`` at ``x0 + t v`` (``sides(0)`` at the point itself;
    None where ``x0 + t v`` rounds to ``x0``: a step too small to move anything establishes nothing),
    ``delta`` along the same line, ``reach`` the stencil's half-width, ``analytic`` the analytic slope."""
    seen: set[float] = set()
    spent = [0]
    plain_sides, plain_delta = sides, delta

    def sides(t: float) -> NDArray | None:  # type: ignore[no-redef]
        if t not in seen:
            seen.add(t)
            spent[0] += 1
        return plain_sides(t)

    def delta(ts: NDArray) -> tuple[NDArray, NDArray]:  # type: ignore[no-redef]
        spent[0] += len(ts)
        return plain_delta(ts)

    out = _settle(sides, delta, reach, analytic, extra_tolerance)
    return Settled(out.how, out.value, out.tolerance, out.step, spent[0])


def _settle(sides: Callable[[float], NDArray | None], delta: Delta, reach: float, analytic: float,
            extra_tolerance: float) -> Settled:
    base = sides(0.0)

    def keeps(t: float) -> bool:
        at = sides(t)
        return at is not None and bool(np.array_equal(at, base))

    def same(t1: float, t2: float) -> bool:
        a1, a2 = sides(t1), sides(t2)
        return a1 is not None and a2 is not None and bool(np.array_equal(a1, a2))

    if not (reach > 0) or (keeps(reach) and keeps(-reach)):
        return Settled("smooth")
    h = reach
    # a unit exactly on a kink (among those the stencil moves to another side) is moved off it by any step
    # that the engine resolves, even where the forward pass rounds the move away: no smaller step keeps it,
    # go to the one-sided slopes
    ends = [sides(reach), sides(-reach)]
    moved = np.zeros(base.shape, dtype=bool)
    for end in ends:
        if end is not None:
            moved |= end != base
    for _ in range(0 if np.any(base[moved] == 0) else HALVINGS):
        h /= 2
        if keeps(h) and keeps(-h):
            est, tol = _central(delta, h)
            est_half, tol_half = _central(delta, h / 2)
            tol = max(tol, tol_half) + 2 * abs(est - est_half) + extra_tolerance
            if abs(est - analytic) <= tol:
                return Settled("smaller-step", est, tol, h)
            return Settled("failing", est, tol, h)
    # on a kink: one-sided slopes over intervals that keep their own sides
    sided = []
    for sign in (1.0, -1.0):
        t = sign * reach
        for _ in range(HALVINGS):
            t /= 2
            # one piece on (0, t], and off the point's own pattern (a step too small to move the kinked
            # inputs at all in the forward pass establishes nothing)
            if same(t, t / 2) and same(t / 2, t / 4) and not keeps(t / 4):
                sided.append(_one_sided(delta, t))
                break
        else:
            return Settled("failing")
    (right, tr), (left, tl) = sided
    lo, hi = min(left, right), max(left, right)
    tol = max(tr, tl) + extra_tolerance
    if lo - tol <= analytic <= hi + tol:
        nearest = min((right, left), key=lambda v: abs(v - analytic))
        return Settled("one-sided", nearest, tol + abs(nearest - analytic), abs(t))
    return Settled("failing", right, tol, abs(t))


def finding_text(n: int, names: str, smaller: int, one_sided: int) -> str:
    """The message of a ``nonsmooth`` finding for ``n`` settled entries or directions."""
    how = []
    if smaller:
        how.append(f"{smaller} with a smaller step that crosses none agree")
    if one_sided:
        how.append(f"{one_sided} sitting on a kink: the analytic value lies between the one-sided slopes "
                   "(a subgradient)")
    what = "entr" + ("y" if n == 1 else "ies")
    return (f"the finite-difference stencil of {n} {what} ({names}) crossed a kink of a layer that is not "
            f"differentiable everywhere (e.g. ReLU at 0); measured again, {'; '.join(how)}: not a failure")


def kinked_sides(subject: Any) -> Callable[[NDArray], NDArray] | None:
    """The subject's ``kink_sides`` when it has kinked layers (a network with ReLUs), else None."""
    if not getattr(subject, "kinked", None):
        return None
    return getattr(subject, "kink_sides", None)


def line_sides(sides: Callable[[NDArray], NDArray], x0: NDArray, lo: int, hi: int,
               v: NDArray) -> Callable[[float], NDArray | None]:
    """``t -> sides(x0 + t v)`` for ``v`` supported on ``[lo, hi)`` (in ``x0``'s dtype), memoized; None when
    ``x0 + t v`` rounds to ``x0`` (for ``t != 0``)."""
    memo: dict[float, NDArray | None] = {}

    def at(t: float) -> NDArray | None:
        if t not in memo:
            theta = np.array(x0, copy=True)
            theta[lo:hi] = theta[lo:hi] + (t * np.asarray(v, dtype=np.float64)).astype(theta.dtype)
            memo[t] = None if t != 0 and np.array_equal(theta[lo:hi], x0[lo:hi]) else sides(theta)
        return memo[t]

    return at


def coordinate_delta(probe: Any, j: int) -> Delta:
    """``delta`` along axis ``j`` of a probe (``subset(...).delta`` and ``noise``)."""
    sub = probe.subset([j])

    def delta(ts: NDArray) -> tuple[NDArray, NDArray]:
        steps = np.asarray(ts, dtype=np.float64)[:, None]
        d = np.asarray(sub.delta(steps), dtype=np.float64)[:, 0]
        return d, np.asarray(sub.noise(steps), dtype=np.float64)[:, 0]

    return delta
