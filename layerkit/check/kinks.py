"""Finite differences whose stencil crosses a kink (a ReLU's 0, say): measured again without crossing.

A network with layers that declare ``kinks`` (points where they are not differentiable) is piecewise smooth.
A stencil that moves a kinked unit's input across a kink differences two pieces: its estimate is not a
derivative, however right the gradient is.  For a failing entry ``j`` of a full check (the line
``x0 + t e_j``) or a failing direction ``u`` of a directional one (``x0 + t u``), :func:`settle` finds out
whether the stencil ``|t| <= reach`` changes the side of a kink of any example (``sides(t)``: the sign of
every kinked layer's input minus each kink, from one forward pass), and if so:

* when the point is off every kink (the kink is near): on each side whose stencil end stays on the point's
  own piece, the one-sided difference ``(J(x + t v) - J(x)) / t`` at ``t, t/2, t/4``, extrapolated to
  ``O(t^2)`` twice, its truncation the change between the two extrapolations (measured, three times its
  estimate) and its rounding ``SAFETY |n| / t``; ``t`` is doubled (at most :data:`GROWTH` times) while it
  stays on the piece and the tolerance falls.  When the kinks are close on both sides, a central difference at a step halved (at most
  :data:`HALVINGS` times) until ``+-h`` keeps every side, with its truncation measured the same way.  The
  point is inside one piece, so the analytic value must match that piece's slope;
* when the point sits on a kink (an input exactly at it, which every step moves off it: a side of 0 at the
  point itself), the one-sided differences on both sides, each over an interval that stays on one piece:
  the analytic value must match one of the two (the derivative of one of the pieces, as any choice of
  ``f'`` at the kink gives for one unit on it).  Anything in between is not accepted: along a direction
  the two slopes can differ by much, and an error that falls between them would pass.  When several units
  sit on kinks and move off them in different directions, each contributes one of its own one-sided slopes
  and the analytic value may lie anywhere between the line's two: that is undecidable from the cost
  (``"between"``), and the check is inconclusive, never passed.

The lines are a full check's failing entries, and its passing entries whose first stencil straddles a
kink the point sits on (the central difference is then the mean of the slopes, and agreeing with it proves
nothing: :func:`~layerkit.check.full.settle_kinks`), or a directional check's failing directions.

Each tolerance includes the caller's part (the rounding of the analytic value).
What is settled this way passes, with a ``nonsmooth`` finding that says so; what still disagrees fails as
before: a wrong derivative of a ReLU (1 everywhere, or the step on the wrong side) is wrong away from its
kinks too, where no stencil crosses one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from .noise import EXCESS_THRESHOLD
from .report import Finding
from .tolerance import SAFETY

#: Halvings of the step tried before a line is taken to sit exactly on a kink.
HALVINGS = 30
#: Divisions of the step by 8 tried before a line of a cost that declares no kinks is taken to sit on one
#: (``8^-13``: from a step of ``1e-5`` to below ``1e-16``, where rounding hides any jump).
SHRINKS = 13
#: One-sided windows tried at a point on a kink, each 8 times narrower than the one before.
WINDOWS = 4
#: How much coarser than the first tolerance a kink-free re-measurement may be and still settle a failure;
#: beyond, the result is inconclusive (an error between the two tolerances would pass).
COARSER = 2.0
#: Doublings of a one-sided step while it stays on one piece and its tolerance falls (a wider step rounds
#: less per unit of step, until its truncation takes over).
GROWTH = 40
#: Most failing entries (or directions) examined per check: each costs a few dozen forward passes.
MAX_LINES = 64

#: ``delta(ts)``: cost changes ``J(x0 + t v) - J(x0)`` at the steps ``ts`` and a bound on their rounding.
Delta = Callable[[NDArray], tuple[NDArray, NDArray]]


@frozen
class Settled:
    """The outcome for one line: ``how`` is ``"smooth"`` (the stencil crosses no kink: nothing to settle),
    ``"own-piece"`` (measured on the point's own side of every kink), ``"on-kink"`` (the point sits on a kink:
    the analytic value is one of the one-sided slopes), ``"between"`` (several units sit on kinks and the
    analytic value lies between the one-sided slopes: undecidable from the cost) or ``"failing"``; ``value``
    and ``tolerance`` are the new estimate and its tolerance."""

    how: str
    value: float = float("nan")
    tolerance: float = float("nan")
    step: float = 0.0
    #: Evaluations spent: forward passes for the sides and cost changes for the differences.
    evals: int = 0
    #: For a kink the cost does not declare (:func:`undeclared`): the step below which the stencil stopped
    #: crossing it (the kink lies between it and twice it), or the smallest step measured at a kink.
    distance: float = float("nan")


def _central(delta: Delta, h: float) -> tuple[float, float]:
    """The central difference at ``h/2``, with its rounding bound and its truncation (an ``O(h^2)`` error:
    a third of the change from ``h`` to ``h/2``, taken whole for safety)."""
    d, n = delta(np.array([h, -h, h / 2, -h / 2]))
    e1, e2 = (d[0] - d[1]) / (2 * h), (d[2] - d[3]) / h
    return float(e2), float(SAFETY * (abs(n[2]) + abs(n[3])) / h + abs(e1 - e2))


def _one_sided(delta: Delta, t: float) -> tuple[float, float]:
    """``(J(x + t v) - J(x)) / t`` (``t`` of either sign) at ``t, t/2, t/4``, extrapolated to ``O(t^2)`` twice
    (``R = 2 D(t/2) - D(t)``); the second extrapolation, with its rounding bound and its truncation (the
    change between the two, taken whole: three times the ``O(t^2)`` error's estimate)."""
    d, n = delta(np.array([t, t / 2, t / 4]))
    e = d / np.array([t, t / 2, t / 4])
    r1, r2 = 2 * e[1] - e[0], 2 * e[2] - e[1]
    noise = SAFETY * (2 * abs(n[2]) / abs(t / 4) + abs(n[1]) / abs(t / 2))
    return float(r2), float(noise + abs(r1 - r2))


class _Remembered:
    """A :data:`Delta` that evaluates each step once: steps measured before (``known``, ``{t: (value, noise)}``)
    or asked for again are read from memory; ``spent[0]`` counts the evaluations made."""

    def __init__(self, delta: Delta, known: Mapping[float, tuple[float, float]] | None = None) -> None:
        self.delta = delta
        self.memo: dict[float, tuple[float, float]] = dict(known or {})
        self.spent = [0]

    def __call__(self, ts: NDArray) -> tuple[NDArray, NDArray]:
        steps = [float(t) for t in np.asarray(ts, dtype=np.float64)]
        new = list(dict.fromkeys(t for t in steps if t not in self.memo))
        if new:
            values, noise = self.delta(np.array(new))
            self.spent[0] += len(new)
            self.memo.update(zip(new, zip(np.asarray(values, dtype=np.float64).tolist(),
                                          np.asarray(noise, dtype=np.float64).tolist())))
        return (np.array([self.memo[t][0] for t in steps]), np.array([self.memo[t][1] for t in steps]))


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


class _Line:
    """A line ``x0 + t v`` as :func:`settle` sees it: which side of every kink each point is on."""

    def __init__(self, sides: Callable[[float], NDArray | None], delta: Delta, reach: float) -> None:
        self.sides, self.delta, self.reach = sides, delta, reach
        at_zero = sides(0.0)
        assert at_zero is not None  # t = 0 is the point itself
        self.base: NDArray = at_zero
        moved = np.zeros(self.base.shape, dtype=bool)
        for end in (sides(reach), sides(-reach)):
            if end is not None:
                moved |= end != self.base
        self.moved = moved
        # a unit exactly on a kink (among those the stencil moves to another side) is moved off it by any step
        # that the engine resolves, even where the forward pass rounds the move away
        self.on_kink = bool(np.any(self.base[moved] == 0))

    def keeps(self, t: float) -> bool:
        at = self.sides(t)
        return at is not None and bool(np.array_equal(at, self.base))

    def same(self, t1: float, t2: float) -> bool:
        a1, a2 = self.sides(t1), self.sides(t2)
        return a1 is not None and a2 is not None and bool(np.array_equal(a1, a2))

    def piece(self, t: float) -> bool:
        """One piece on ``(0, t]``: the point's own (off a kink), or the one beside it (on a kink, where a
        step too small to move the kinked inputs at all in the forward pass establishes nothing)."""
        if self.on_kink:
            # the units on a kink leave it; every other unit keeps the point's side (a second kink crossed
            # between 0 and t would put its own slope into the one-sided difference, weighted by d / t)
            return (self.same(t, t / 2) and self.same(t / 2, t / 4) and not self.keeps(t / 4)
                    and self.off_kink_kept(t))
        return self.keeps(t) and self.keeps(t / 2) and self.keeps(t / 4)

    def off_kink_kept(self, t: float) -> bool:
        """Whether every unit that is not on a kink at the point is on the point's side at ``t``."""
        at = self.sides(t)
        off = self.base != 0
        return at is not None and bool(np.array_equal(at[off], self.base[off]))

    def best_on_piece(self, sign: float, extra: float) -> tuple[float, float, float] | None:
        """The one-sided estimate with the least tolerance on one piece: from the widest step below the
        stencil's reach that stays there, doubled (at most :data:`GROWTH` times) while it stays there and the
        tolerance (rounding over the step, plus the truncation that grows with it) keeps falling."""
        t = sign * self.reach
        for _ in range(HALVINGS):
            if self.piece(t):
                break
            t /= 2
        else:
            return None
        best = None
        for _ in range(GROWTH + 1):
            est, tol = _one_sided(self.delta, t)
            if not (np.isfinite(est) and np.isfinite(tol)):
                break
            if best is not None and tol >= best[1]:
                break
            best = (est, tol + extra, abs(t))
            if not (self.piece(2 * t) and self.same(2 * t, t)):
                break
            t *= 2
        return best

    def between_kinks(self, extra: float) -> tuple[float, float, float] | None:
        """Kinks close on both sides: a central difference at a step halved until ``+-h`` keeps every side."""
        h = self.reach
        for _ in range(HALVINGS):
            h /= 2
            if self.keeps(h) and self.keeps(-h):
                est, tol = _central(self.delta, h)
                return est, tol + extra, h
        return None


def _settle(sides: Callable[[float], NDArray | None], delta: Delta, reach: float, analytic: float,
            extra_tolerance: float) -> Settled:
    base = sides(0.0)
    assert base is not None  # t = 0 is the point itself
    if not (reach > 0) or all(_same_side(sides(t), base) for t in (reach, -reach)):
        return Settled("smooth")
    line = _Line(sides, delta, reach)
    candidates = []
    for sign in (1.0, -1.0):
        if line.on_kink or line.keeps(sign * reach):
            best = line.best_on_piece(sign, extra_tolerance)
            if best is not None:
                candidates.append(best)
    if line.on_kink and len(candidates) < 2:
        return Settled("failing")
    if not candidates:
        central = line.between_kinks(extra_tolerance)
        if central is None:
            return Settled("failing")
        candidates.append(central)
    return _verdict(line, candidates, analytic)


def _same_side(at: NDArray | None, base: NDArray) -> bool:
    return at is not None and bool(np.array_equal(at, base))


def _verdict(line: _Line, candidates: list[tuple[float, float, float]], analytic: float) -> Settled:
    how = "on-kink" if line.on_kink else "own-piece"
    for est, tol, step in sorted(candidates, key=lambda c: abs(c[0] - analytic)):
        if abs(est - analytic) <= tol:
            return Settled(how, est, tol, step)
    if line.on_kink and int(np.sum(line.base[line.moved] == 0)) >= 2:
        # several units on a kink, moved off it in different directions: each contributes one of its
        # one-sided slopes (or anything between, for a subgradient), and the cost alone cannot tell which
        (a, ta, sa), (b, tb, sb) = candidates
        tol = max(ta, tb)
        if min(a, b) - tol <= analytic <= max(a, b) + tol:
            est, _, step = min(candidates, key=lambda c: abs(c[0] - analytic))
            return Settled("between", est, tol + abs(est - analytic), step)
    est, tol, step = min(candidates, key=lambda c: c[1])
    return Settled("failing", est, tol, step)


#: The outcomes of :func:`settle` and :func:`undeclared` that settle a failure.
SETTLED = ("own-piece", "on-kink", "near-kink")

#: How much coarser than the first tolerance the estimate at a step shrunk below an undeclared kink's distance
#: may be and still settle a failure (the rounding grows like ``1 / h``: a kink up to 64 times closer than the
#: step); beyond, the result is inconclusive.  The report's ``detectable`` counts the coarser tolerance.
NEAR_COARSER = 64.0


def rough_cost(noise: Any) -> bool:
    """Whether a cost's measured noise exceeds its rounding by more than
    :data:`~layerkit.check.noise.EXCESS_THRESHOLD` times: such a cost is rough at every scale (a staircase of
    rounded values has a jump at every stair), not piecewise smooth, and :func:`undeclared` cannot tell a
    kink near the point from its texture, so it is not asked; nor is it of a cost that is not deterministic
    (its differences at the same steps differ)."""
    return noise is not None and (not noise.deterministic or bool(noise.measured)
                                  and float(noise.excess) > EXCESS_THRESHOLD)


def _jump(d: NDArray, n: NDArray, t: float) -> tuple[float, float]:
    """``|D+ - D-|`` from the changes at ``+t, -t`` and the rounding bound of that difference."""
    return abs(d[0] / t + d[1] / t), SAFETY * (abs(n[0]) + abs(n[1])) / t


def _smooth(j: NDArray, r: NDArray) -> bool:
    """Whether the jumps ``j`` at steps ``t, t/2, ...`` shrink like the step, as on a smooth cost where
    ``J''`` dominates them (each between 0.3 and 0.7 of the one before), or are all lost in rounding ``r``.
    A kink crossed at every step gives ratios near 1, or one near 1 and then a collapse; a cost with
    ``J'' = 0`` at the point gives ratios near 1/4 and is measured further (:func:`undeclared`).  A kink the
    three stencils cross leaves a jump of about the same size in each of them, above its rounding; jumps
    resolved at fewer than two of the steps are rounding (or a kink between ``t/2`` and ``t``, the second
    look's), not evidence of a kink.  Jumps that halve but keep a constant part the same at both pairs of
    steps (``2 j(t/2) - j(t)``) are a kink's jump beside the curvature's, not a smooth cost's."""
    if np.count_nonzero(j > r) < 2:
        return True
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = j[1:] / j[:-1]
    if not np.all((ratios >= 0.3) & (ratios <= 0.7)):
        return False
    # jumps that halve may still carry a constant part: J'' t plus a kink's jump.  j(t) = a t + b gives
    # b = 2 j(t/2) - j(t) twice; on a smooth cost b is the O(t^3) leak, 8 times smaller at the finer pair,
    # at a kink it is the same both times and above the rounding of the pair
    b1, b2 = 2 * j[1] - j[0], 2 * j[2] - j[1]
    constant = b1 > 2 * r[1] + r[0] and b2 > 2 * r[2] + r[1] and 0.5 <= b2 / b1 <= 2.0
    return not constant


def undeclared(delta: Delta, step: float, analytic: float, extra_tolerance: float,
               known: Mapping[float, tuple[float, float]] | None = None) -> Settled:
    """A failing line of a cost that declares no kinks, tested for one near the point.

    The one-sided slopes ``D+(t) = (J(x + t v) - J(x)) / t`` and ``D-(t) = (J(x) - J(x - t v)) / t`` differ by
    about ``|J''| t`` on a smooth cost (the jump halves with the step) and by a fraction of the slopes' jump
    at a kink the stencil crosses (which does not halve).  At ``t = step, step / 2, step / 4`` (6
    evaluations): jumps that halve each time, or are all lost in rounding, show no kink (``"smooth"``: the
    failure stands; a kink between ``step / 4`` and ``step`` is the second look's, which measures at a
    quarter of the step).  Otherwise ``t`` is divided by 8 (at most :data:`SHRINKS` times) until the jump
    falls below 1/64 of the largest seen: the stencil crosses the kink by at most 1/64 of ``t`` and ``t / 2``
    does not cross it at all; it lies between ``t`` and ``32 t`` away (``distance``), and the cost is smooth on
    ``[-t / 2, t / 2]`` -- the one-sided estimates converge.  There, the central difference at ``t / 2`` with
    its rounding and its truncation (the change from ``t`` to ``t / 2``, which also holds any sliver of
    crossing at ``t``) is compared with ``analytic``: ``"near-kink"`` when it agrees,
    ``"failing"`` when it does not (the gradient is wrong at the point, whatever the kink).  A jump that
    persists until rounding hides it means the point sits on the kink (``"on-kink"``): the analytic value
    must be one of the one-sided slopes, each measured over ``[0, +-step]`` (one piece, unless another kink
    lies within the step) and extrapolated, or the line fails (``"failing-at-kink"``).

    Each step is evaluated once: ``known`` holds the changes already measured along the line (``{t: (value,
    noise)}``, the failing test's own stencil), and a step asked for again is read from what was measured;
    only new evaluations are counted."""
    delta = _Remembered(delta, known)
    spent = delta.spent

    def at(t: float) -> tuple[NDArray, NDArray]:
        return delta(np.array([t, -t, t / 2, -t / 2]))

    def done(how: str, value: float = float("nan"), tol: float = float("nan"), t: float = 0.0) -> Settled:
        return Settled(how, value, tol, t, spent[0], t)

    d, n = at(step)
    (j1, r1), (j2, r2) = _jump(d[:2], n[:2], step), _jump(d[2:], n[2:], step / 2)
    dq, nq = delta(np.array([step / 4, -step / 4]))
    j4, r4 = _jump(dq, nq, step / 4)
    jumps, rounding = np.array([j1, j2, j4]), np.array([r1, r2, r4])
    if not np.all(np.isfinite(jumps)) or _smooth(jumps, rounding):
        return done("smooth")
    biggest = float(jumps.max())
    t = step / 4
    for _ in range(SHRINKS):
        t /= 8
        d, n = at(t)
        jt, rt = _jump(d[:2], n[:2], t)
        if not np.isfinite(jt):
            break
        if jt <= biggest / 64:  # across the kink by 1/64 of the step at most, and t / 2 not at all
            e1, e2 = (d[0] - d[1]) / (2 * t), (d[2] - d[3]) / t
            tol = SAFETY * (abs(n[2]) + abs(n[3])) / t + abs(e1 - e2) + extra_tolerance
            return done("near-kink" if abs(e2 - analytic) <= tol else "failing", float(e2), float(tol), t)
        if jt <= rt:
            break  # the jump is lost in rounding before it shrank: the point sits on the kink
    jump = biggest
    tried: list[tuple[float, float]] = []
    window = step
    for _ in range(WINDOWS):
        # the point is on the kink (or closer to it than the rounding lets a step tell): each side of it is
        # one piece as far as the window, unless another kink lies within it -- a narrower window leaves it out
        sides = []
        for sign in (1.0, -1.0):
            est, tol = _one_sided(delta, sign * window)
            sides.append((est, tol + extra_tolerance))
        for est, tol in sorted(sides, key=lambda c: abs(c[0] - analytic)):
            if abs(est - analytic) <= tol and tol <= jump / 4:  # resolved well enough to tell the sides apart
                return Settled("on-kink", est, tol, window, spent[0], t)
        tried += sides
        window /= 8
        if min(tol for _, tol in sides) > jump / 4:
            break  # rounding blurs the sides beyond this: a narrower window tells less
    est, tol = min(tried, key=lambda c: c[1])
    return Settled("failing-at-kink", est, tol, step, spent[0], t)


@frozen
class Tally:
    """How the settled lines of a check were settled: ``own_piece`` and ``on_kink`` at kinks layers declare,
    ``near`` at a kink the cost does not declare, the farthest of which about ``distance`` from the point (in
    units of the line's parameter); ``declared``: whether the subject declares its kinks."""

    own_piece: int = 0
    on_kink: int = 0
    near: int = 0
    distance: float = 0.0
    declared: bool = True

    @property
    def n(self) -> int:
        return self.own_piece + self.on_kink + self.near


def finding_text(names: str, tally: Tally) -> str:
    """The message of a ``nonsmooth`` finding for the entries or directions of ``tally``."""
    n, how = tally.n, []
    if tally.own_piece:
        how.append(f"{tally.own_piece} measured on the point's own side of every kink agree")
    if tally.on_kink:
        how.append(f"{tally.on_kink} sitting on a kink: the analytic value is one of the one-sided slopes (the "
                   "derivative of one piece)")
    what = "entr" + ("y" if n == 1 else "ies")
    if tally.near and not (tally.own_piece or tally.on_kink):
        return (f"the finite-difference stencil of {n} {what} ({names}) crossed a kink of the cost, within "
                f"{tally.distance:.1e} of the point (the one-sided slopes jump at larger steps and converge at "
                "smaller ones: the cost is smooth at the point itself); measured at a step that stays clear of "
                "it, they agree: not a failure")
    if tally.near:
        how.append(f"{tally.near} measured at a step clear of a kink within {tally.distance:.1e} of the point agree")
    where = "a layer that is not differentiable everywhere (e.g. ReLU at 0)" if tally.declared else \
        "the cost (a point where it is not differentiable: max, abs, a ReLU it does not declare)"
    return (f"the finite-difference stencil of {n} {what} ({names}) crossed a kink of {where}; measured again, "
            f"{'; '.join(how)}: not a failure")


def at_kink_finding(kind: str, names: str, n: int, blocks: tuple[str, ...], evidence: dict[str, Any]) -> Finding:
    """``nonsmooth`` for lines whose one-sided slopes differ down to the rounding (the point sits on a kink of
    the cost) and match neither of them: the analytic value is not the derivative of either piece."""
    what = ("entr" + ("y" if n == 1 else "ies")) if kind == "entry" else "direction" + ("" if n == 1 else "s")
    return Finding("nonsmooth", blocks,
                   f"the point sits on a kink of the cost along {n} {what} ({names}): the one-sided slopes differ "
                   "at every step down to the rounding, and the analytic value matches neither of them",
                   evidence)


def kinked_sides(subject: Any) -> Callable[[NDArray], NDArray] | None:
    """The subject's ``kink_sides`` when it has kinked layers (a network with ReLUs), else None."""
    return subject.kink_sides if subject.kinked else None


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


def moves_off(line: Callable[[float], NDArray | None], t: float, at: NDArray, units: NDArray | None = None) -> bool:
    """Whether the stencil ``+-t`` of ``line`` (:func:`line_sides`) puts some kinked unit (of ``units``, a
    mask; all by default) on another side than ``at``, its side at the point (up to two forward passes)."""
    mine = at if units is None else at[units]
    for sign in (1.0, -1.0):
        end = line(sign * t)
        if end is not None and bool(np.any((end if units is None else end[units]) != mine)):
            return True
    return False


def coordinate_delta(probe: Any, j: int) -> Delta:
    """``delta`` along axis ``j`` of a probe (``subset(...).delta`` and ``noise``)."""
    sub = probe.subset([j])

    def delta(ts: NDArray) -> tuple[NDArray, NDArray]:
        steps = np.asarray(ts, dtype=np.float64)[:, None]
        d = np.asarray(sub.delta(steps), dtype=np.float64)[:, 0]
        return d, np.asarray(sub.noise(steps), dtype=np.float64)[:, 0]

    return delta


def direction_delta(evaluator: Any, d: Any) -> Delta:
    """``delta`` along a direction ``d`` of a direction evaluator (``delta(dirs, steps) -> (values, noise)``)."""

    def delta(ts: NDArray) -> tuple[NDArray, NDArray]:
        values, noise = evaluator.delta([d], np.asarray(ts, dtype=np.float64)[:, None])
        return np.asarray(values, dtype=np.float64)[:, 0], np.asarray(noise, dtype=np.float64)[:, 0]

    return delta


def coarse(out: Settled, tolerance: float) -> bool:
    """Whether a settled line counts only as undecided: between two one-sided slopes, or measured without
    crossing a kink only within more than :data:`COARSER` times its first ``tolerance``."""
    limit = NEAR_COARSER if out.how == "near-kink" else COARSER
    return out.how == "between" or out.tolerance > limit * tolerance


def _names(labels: list[str], most: int) -> str:
    return ", ".join(labels[:most]) + (" ..." if len(labels) > most else "")


#: How the coarse-kink finding ends, for entries of a full check and for directions.
_COARSE_TAIL = {
    "entry": "or their units sit on kinks that the entry moves in different directions (the analytic value lies "
             "between the one-sided slopes, and the cost cannot tell which piece each unit's derivative belongs "
             "to)",
    "direction": "or several units sit on kinks the direction moves in different ways (the analytic value lies "
                 "between the one-sided slopes)",
}


def coarse_finding(kind: str, n: int, labels: list[str], worst: float | None, blocks: tuple[str, ...],
                   evidence: dict[str, Any]) -> Finding:
    """INCONCLUSIVE: the stencil of ``n`` entries (``kind="entry"``, named by ``labels``) or directions
    (``"direction"``) crossed a kink, and measured without crossing one they agree only coarsely
    (:func:`coarse`): within ``worst`` times their first tolerance, or (``worst`` None) only in lying between
    the one-sided slopes."""
    what = ("entr" + ("y" if n == 1 else "ies")) if kind == "entry" else "direction" + ("" if n == 1 else "s")
    names = f" ({_names(labels, 5)})" if labels else ""
    if worst is None:
        how = (f"the analytic value lies between the one-sided slopes there, matching neither (several units on "
               f"kinks that the {kind} moves in different directions, where the cost cannot tell which piece "
               f"each unit's derivative belongs to, or a derivative that is the mean of two slopes), or a side that no "
               f"step resolves")
    else:
        how = (f"measured without crossing one they agree only within up to {worst:.3g} times the first "
               f"tolerance (a step that stays on one piece resolves less there), {_COARSE_TAIL[kind]}")
    return Finding("precision-limited", blocks, f"inconclusive: the stencil of {n} {what}{names} crossed a kink; "
                   + how, evidence, bearing="undecided")


def straddle_finding(n: int, labels: list[str], blocks: tuple[str, ...], evidence: dict[str, Any]) -> Finding:
    """INCONCLUSIVE: ``n`` entries agree with a central difference across a kink the point sits on (the
    mean of its one-sided slopes), and were not measured on each side of it (budget, or a side that no step
    resolves)."""
    what = "entr" + ("y" if n == 1 else "ies")
    return Finding(
        "precision-limited", blocks,
        f"inconclusive: {n} {what} ({_names(labels, 5)}) agree with the central difference, but a unit sits "
        "exactly on a kink that their step moves, so that difference is the mean of two one-sided slopes, and "
        f"{'it was' if n == 1 else 'they were'} not measured on each side (the budget of {MAX_LINES} lines, "
        "or a side that no step resolves)", evidence, bearing="undecided")


def nonsmooth_finding(kind: str, names: str, tally: Tally, blocks: tuple[str, ...],
                      evidence: dict[str, Any]) -> Finding:
    """Not a failure: the stencil of ``tally.n`` entries (``kind="entry"``) or directions crossed a kink, and
    measured again without crossing one they agree (:func:`finding_text`)."""
    n = tally.n
    text = finding_text(names, tally)
    if kind == "direction":
        text = text.replace("entr" + ("y" if n == 1 else "ies"), "direction" + ("" if n == 1 else "s"), 1)
    return Finding("nonsmooth", blocks, text, evidence)
