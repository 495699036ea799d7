"""Directional checks, localization by group testing, and the Taylor-remainder verdict.

``mode="directional"`` compares ``u . g`` with the finite-difference derivative of the cost along a few
seeded random unit directions ``u`` (2 evaluations per direction with central differences) instead of
checking every entry.  When that fails, the wrong entries are found without a full check:

1. one directional check restricted to each block tells the failing blocks;
2. inside a failing block, contiguous ranges of entries are bisected: a range is guilty when a directional
   check restricted to it fails.  Down at single entries the check *is* the coordinate check, so the wrong
   entries are reported with their block, index, numerical and analytical values, as a full check would.
   One wrong entry costs ``~4 log2(P)`` evaluations.  When more than ``MAX_SPREAD`` ranges are guilty at
   once (a whole block is wrong) bisection stops and says so; a few directions restricted to that block
   then give the doctor its block-level evidence (a common factor, a sign, zeros, a penalty).

3. The Taylor remainder ``r(h) = |J(x + h u) - J(x) - h g.u|`` along a failing direction shrinks like
   ``h^2`` when the gradient is right and like ``h`` when it is wrong; its fitted slope is a verdict that
   needs no tolerance.

What a PASS guarantees: for each entry ``j``, an error of that entry alone larger than its reported
tolerance ``min_k tau_k / |u_kj|`` (over the whole-vector directions ``k``) would have failed direction ``k``.
Errors in several entries can cancel along a random direction only on a set of directions of measure zero.

Evaluators
----------
* :class:`FunctionDirections` re-evaluates the cost (any subject; optionally spread over an executor); each
  difference carries twice the cost's measured noise.
* :class:`~layerkit.fast.directions.NetworkDirections` propagates the change exactly through a network's
  layers; its rounding is tiny, so the step can be ``sqrt(eps)``, once its own noise has been measured on a
  difference table (a user's rule that cancels would be caught there).

Tolerance of one directional derivative: the formula of :mod:`layerkit.check.tolerance`, with the stencil's
noise (the evaluator's bound divided by the step) and its truncation from the model ``(h / l)^p V / l`` of
:mod:`layerkit.check.methods` (``l = max(1, max |x|)`` on the direction's support).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from attrs import evolve, frozen
from numpy.typing import NDArray

from ..fast.directions import Direction
from ..numerics import machine_eps
from .kinks import COARSER, MAX_LINES, SETTLED, finding_text, kinked_sides, line_sides, settle
from .noise import Noise, noise_from_table
from .probes import as_scalar_cost
from .refine import WIDE, across_scales, confirms, refine
from .report import BlockSummary, DirectionalEvidence, DirectionRecord, Finding, Report, relative_difference
from .tolerance import SAFETY, directional_tolerance

#: Default number of random directions of the first, whole-vector check.
DEFAULT_DIRECTIONS = 2
#: Guilty ranges at one bisection level beyond which the mismatch counts as spread over the block.
MAX_SPREAD = 32
#: A failing row or column of at most this many entries is measured entry by entry (see ``locate``).
LINE = 64
#: Most guilty ranges of columns (or rows) at one level before the search by lines gives up (``locate``).
LINES = 4
#: A failing direction is measured again when it fails by less than this many times its tolerance.
SECOND_LOOK = 100.0

__all__ = ["DEFAULT_DIRECTIONS", "Direction", "DirectionalTest", "FunctionDirections", "run_directional",
           "taylor_remainder"]


@frozen(eq=False)
class DirectionalTest:
    """One directional derivative: numerical ``n`` (finite differences), analytical ``a = g . u``."""

    direction: Direction
    numerical: float
    analytical: float
    tolerance: float
    step: float
    #: The error model's part of the tolerance, ``SAFETY (noise + truncation)``: what the finite difference
    #: itself cannot resolve (without the rounding of ``u . g`` and the floor).
    bound: float = 0.0
    #: ``tolerance + error`` of the first estimate, when a second look replaced it (0 otherwise): an error
    #: that the first estimate would have let through never gets the second look.
    first_reach: float = 0.0

    @property
    def error(self) -> float:
        return abs(self.numerical - self.analytical)

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)

    def record(self, x: NDArray) -> DirectionRecord:
        return DirectionRecord(self.numerical, self.analytical, self.tolerance,
                               float(self.direction.u @ x[self.direction.lo:self.direction.hi]), self.bound)


# ---------------------------------------------------------------------- evaluators
def _cost_along(cost: Callable[[NDArray], Any], x0: NDArray, lo: int, hi: int, u: NDArray, s: float) -> Any:
    """``cost(x0 + s u)`` for ``u`` supported on ``[lo, hi)``; a picklable worker for executors."""
    x = np.array(x0, copy=True)
    x[lo:hi] += (s * u).astype(x.dtype)
    return as_scalar_cost(cost(x), "along a direction")


class FunctionDirections:
    """Cost differences along directions by re-evaluating ``cost`` (optionally over an executor); each
    carries twice the cost's noise ``noise_level``."""

    exact = False
    #: How much noisier than its rounding the cost is (set by the check from its noise measurement).
    noise_excess = 1.0

    def __init__(self, cost: Callable[[NDArray], Any], x0: NDArray, f0: float,
                 executor: Executor | None = None, noise_level: float = 0.0) -> None:
        self.cost, self.x0, self.f0, self.executor = cost, x0, float(np.real(f0)), executor
        self.dtype = x0.dtype
        self.n_evals = 0
        self.noise_level = noise_level

    def delta(self, dirs: Sequence[Direction], steps: NDArray) -> tuple[NDArray, NDArray]:
        """``J(x0 + steps[s, k] u_k) - J(x0)`` and its noise bound, both of shape ``(S, len(dirs))``."""
        S = steps.shape[0]
        jobs = [(d.lo, d.hi, d.u, float(steps[s, k])) for s in range(S) for k, d in enumerate(dirs)]
        self.n_evals += len(jobs)
        with np.errstate(all="ignore"):
            if self.executor is None:
                costs = [_cost_along(self.cost, self.x0, *job) for job in jobs]
            else:
                futures = [self.executor.submit(_cost_along, self.cost, self.x0, *job) for job in jobs]
                costs = [f.result() for f in futures]
        c = np.asarray([float(np.real(v)) for v in costs]).reshape(S, len(dirs))
        eps = float(np.finfo(self.dtype).eps)
        noise = np.maximum(2 * self.noise_level, eps * (np.abs(c) + abs(self.f0)))
        return c - self.f0, noise


def calibrate(probe: Any, x: NDArray, seed: int) -> float:
    """The noise level of an exact evaluator, measured on its own difference table along a random direction
    (8 evaluations of the evaluator, see :mod:`layerkit.check.noise`); 0 when the table shows no noise."""
    rng = np.random.default_rng(seed + 7)
    u = rng.standard_normal(x.size)
    d = Direction(0, x.size, u / np.linalg.norm(u))
    scale = max(1.0, float(np.max(np.abs(x))))
    delta = machine_eps(x.dtype) ** 0.25 / 10 * scale
    for _ in range(3):
        offsets = (np.arange(9) - 4) * delta
        values, _ = probe.delta([d], offsets[:, None])
        level, _, verdict = noise_from_table(values[:, 0], differences=True)
        if verdict == "ok":
            return level
        if verdict == "too small":
            return 0.0
        delta /= 100
    return 0.0


def taylor_remainder(probe: Any, x: NDArray, grad: NDArray, d: Direction) -> dict[str, Any]:
    """Slope of ``r(h) = |J(x + h u) - J(x) - h g.u|`` against ``h`` along ``d``, and its verdict.

    ``h`` runs over 13 values from ``1e-1`` to ``1e-7`` (times ``max(1, |x|)`` on the support); values whose
    remainder is within 100 times the probe's rounding bound are dropped, and the slope is fitted on the
    four smallest remaining steps (the asymptotic regime): about 2 for a right gradient, 1 for a wrong one.
    """
    eps = float(np.finfo(x.dtype).eps)
    scale = max(1.0, float(np.max(np.abs(x[d.lo:d.hi]))))
    hs = scale * np.logspace(-1, -7, 13)
    dj, noise = probe.delta([d], hs[:, None])
    a = float(grad[d.lo:d.hi] @ d.u)
    r = np.abs(dj[:, 0] - hs * a)
    usable = r > 100 * (noise[:, 0] + eps * abs(a) * hs)
    idx = np.flatnonzero(usable)
    base = {"all_h": hs.tolist(), "all_remainder": r.tolist()}
    if idx.size < 3:
        return {**base, "slope": float("nan"), "h": [], "remainder": [],
                "verdict": "the Taylor test is inconclusive: the remainder is lost in roundoff"}
    tail = idx[-4:]
    slope = float(np.polyfit(np.log(hs[tail]), np.log(r[tail]), 1)[0])
    if slope < 1.5:
        verdict = (f"the Taylor remainder shrinks like h^{slope:.2f} along a failing direction (a right gradient "
                   "gives h^2): the gradient is wrong, whatever the step")
    else:
        verdict = (f"the Taylor remainder shrinks like h^{slope:.2f} (h^2 expected of a right gradient): the "
                   "gradient looks right along this direction; the mismatch may be the step's or the precision's")
    return {**base, "slope": slope, "verdict": verdict, "h": hs[tail].tolist(), "remainder": r[tail].tolist()}


# ---------------------------------------------------------------------- the directional check
class _Axes:
    """The minimal probe a stencil's ``plan`` needs along directions: steps are not snapped."""

    def __init__(self, h: NDArray) -> None:
        self.n_axes = h.size
        self.dtype = h.dtype
        self.real_dtype = h.dtype

    def snap(self, h: NDArray) -> NDArray:
        return h


class _AlongDirections:
    """The probe protocol over directions instead of coordinates, for :func:`~layerkit.check.refine.refine`:
    ``delta(steps)`` is the evaluator's change along each direction."""

    cheap = False
    noise_excess = 1.0

    def __init__(self, probe: Any, dirs: list[Direction], lengths: NDArray, dtype: Any) -> None:
        self.probe, self.dirs, self.lengths = probe, dirs, lengths
        self.n_axes = len(dirs)
        self.dtype = self.real_dtype = np.dtype(dtype)
        self._noise: tuple[NDArray, NDArray] | None = None

    def scale(self) -> NDArray:
        return self.lengths

    def snap(self, h: NDArray) -> NDArray:
        return h

    def delta(self, steps: NDArray) -> NDArray:
        d, noise = self.probe.delta(self.dirs, np.asarray(steps, dtype=np.float64))
        self._noise = (steps, noise)
        return d

    def noise(self, steps: NDArray) -> NDArray:
        if self._noise is None or self._noise[0] is not steps:
            self.delta(steps)
        assert self._noise is not None
        return self._noise[1]


class _Directional:
    def __init__(self, subject: Any, strategy: Any, probe: Any, f0: Any, a: NDArray, n_directions: int,
                 seed: int, evaluations: dict[str, int] | None = None, rounding_dtype: Any = None,
                 budget: int | None = None, progress: Callable[[str, int], None] | None = None) -> None:
        """The evaluator's own noise is measured (``calibrate``) unless its rules are layerkit's own."""
        self.subject, self.strategy, self.probe = subject, strategy, probe
        self.n_directions = n_directions
        #: Most evaluations localization may bring the check to (None: no limit), and whether it stopped there.
        self.budget, self.over_budget = budget, False
        self.progress = progress
        #: Directions whose stencil crossed a kink and that were settled without crossing (with how).
        self.settled: list[tuple[Direction, str]] = []
        #: Directions settled only within a tolerance coarser than the first (with how many times).
        self.coarse: list[tuple[Direction, float]] = []
        self.rng = np.random.default_rng(seed)
        self.f0, self.a = float(np.real(f0)), a
        self.x = subject.x0
        self.rounding_dtype = self.x.dtype if rounding_dtype is None else rounding_dtype
        self.layout = subject.layout
        self.eps = machine_eps(self.x.dtype)
        self.evals: dict[str, int] = dict(evaluations or {"analytic": 1})
        self.tiny_steps = bool(getattr(probe, "exact", False))
        # layerkit's own rules are exact identities: at sqrt(eps) steps their truncation is negligible and
        # their rounding bound needs no measurement
        self.known_rules = bool(getattr(subject, "known_rules", False))
        if self.tiny_steps and not self.known_rules:
            probe.noise_floor = calibrate(probe, self.x, seed)
            self.evals["calibrate"] = 9
            # a noise above the rounding bound of exact propagation means a rule that cancels: normal steps
            self.tiny_steps = probe.noise_floor <= 64 * self.eps * max(abs(self.f0), 1e-300)

    def direction(self, lo: int, hi: int) -> Direction:
        u = self.rng.standard_normal(hi - lo)
        return Direction(lo, hi, u / np.linalg.norm(u))

    def length(self, d: Direction) -> float:
        """The length scale the step along ``d`` is relative to: that of the *smallest* parameter it moves,
        ``min_j max(1, |x_j|)`` over ``u_j != 0``, so that no entry is moved beyond the scale its own terms
        curve on (a direction over a bias of size 1 and weights of size 1e6 would otherwise step by 1e3 on
        the bias, and the truncation model, built on one scale, would not see it)."""
        moved = np.abs(self.x[d.lo:d.hi])[np.asarray(d.u) != 0]
        return max(1.0, float(np.min(moved, initial=np.inf))) if moved.size else 1.0

    def step(self, d: Direction) -> float:
        if self.strategy.step != "auto":
            return float(self.strategy.step)
        if self.tiny_steps:  # roundoff ~ eps sum|terms| does not grow as h shrinks: take h small
            return math.sqrt(self.eps) * self.length(d)
        excess = max(1.0, float(getattr(self.probe, "noise_excess", 1.0)))
        return self.strategy.base_step(self.x.dtype, excess) * self.length(d)

    def run_tests(self, dirs: list[Direction], stage: str) -> list[DirectionalTest]:
        hs = np.array([self.step(d) for d in dirs])
        steps, coef = self.strategy.plan(_Axes(hs), hs)
        d, noise = self.probe.delta(dirs, steps)
        n = np.einsum("sn,sn->n", coef, d)
        noise_term = np.einsum("sn,sn->n", np.abs(coef), noise)
        order = getattr(self.strategy, "order", 2)
        used = steps.size
        if getattr(self.probe, "exact", False) and not self.known_rules:  # the truncation from a second step
            steps2, coef2 = self.strategy.plan(_Axes(hs / 2), hs / 2)
            d2, _ = self.probe.delta(dirs, steps2)
            trunc = np.abs(n - np.einsum("sn,sn->n", coef2, d2)) / (1 - 2.0**-order)
            used += steps2.size
        else:
            length = np.array([self.length(di) for di in dirs])
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                V = np.abs(n) * length
                if steps.shape[0] >= 2 and np.allclose(steps[0], -steps[1]):
                    V = np.maximum(V, np.nan_to_num(np.abs(d[0] + d[1]) / hs**2) * length**2)
                trunc = (hs / length) ** order * V / length
        out = []
        for k, di in enumerate(dirs):
            a = float(self.a[di.lo:di.hi] @ di.u)
            tol = directional_tolerance(float(n[k]), a, float(noise_term[k]), float(trunc[k]), self.rounding_dtype)
            out.append(DirectionalTest(di, float(n[k]), a, float(tol), float(hs[k]),
                                       SAFETY * float(noise_term[k] + trunc[k])))
        self.evals[stage] = self.evals.get(stage, 0) + used
        out = self.kinks(self.second_look(out, stage), stage)
        if self.progress is not None:
            self.progress(stage, self.used)
        return out

    @property
    def used(self) -> int:
        """Evaluations spent so far (the analytic ones included)."""
        return sum(self.evals.values())

    def affordable(self, n_tests: int) -> bool:
        """Whether ``n_tests`` more directional tests fit in the budget (about ``2 + 1`` evaluations each:
        the stencil and a share of second looks); records when they do not."""
        if self.budget is None:
            return True
        points = max(1, len(getattr(self.strategy, "offsets", (1, -1))))
        if self.used + n_tests * (points + 1) <= self.budget:
            return True
        self.over_budget = True
        return False

    def kinks(self, tests: list[DirectionalTest], stage: str) -> list[DirectionalTest]:
        """Failing directions of a network with kinked layers whose stencil crosses a kink are measured again
        without crossing one (:mod:`layerkit.check.kinks`)."""
        sides = kinked_sides(self.subject)
        if sides is None:
            return tests
        out = list(tests)
        for k, t in enumerate(tests):
            if t.passed or len(self.settled) >= MAX_LINES:
                continue
            d = t.direction

            def delta(ts: NDArray, d: Direction = d) -> tuple[NDArray, NDArray]:
                values, noise = self.probe.delta([d], np.asarray(ts, dtype=np.float64)[:, None])
                return np.asarray(values, dtype=np.float64)[:, 0], np.asarray(noise, dtype=np.float64)[:, 0]

            rounding = directional_tolerance(t.analytical, t.analytical, 0.0, 0.0, self.rounding_dtype)
            done = settle(line_sides(sides, self.x, d.lo, d.hi, d.u), delta, 2 * t.step, t.analytical, rounding)
            self.evals[stage] = self.evals.get(stage, 0) + done.evals
            if done.how in SETTLED or done.how == "between":
                out[k] = DirectionalTest(d, done.value, t.analytical, done.tolerance, done.step, done.tolerance,
                                         max(t.first_reach, t.tolerance + t.error))
                if done.how == "between" or done.tolerance > COARSER * t.tolerance:
                    self.coarse.append((d, done.tolerance / t.tolerance))
                else:
                    self.settled.append((d, done.how))
        return out

    def second_look(self, tests: list[DirectionalTest], stage: str) -> list[DirectionalTest]:
        """Measure failing directions again over a ladder of steps (:mod:`layerkit.check.refine`), when the step
        was automatic: every failing direction of the first two stages, and during bisection those that fail
        by less than ``SECOND_LOOK`` times their tolerance (a model that misjudged the truncation; a wrong
        gradient fails by far more).  The new estimate replaces the first only when it discredits it (they
        differ by more than the first's tolerance); one that confirms it leaves the failure standing."""
        if self.strategy.step != "auto":
            return tests
        # the few first directions decide the verdict: those always get a second look; bisection's many ranges
        # only when they fail by little
        always = stage != "localize"
        again = [k for k, t in enumerate(tests) if not t.passed and (always or t.error < SECOND_LOOK * t.tolerance)]
        if not again:
            return tests
        line = _AlongDirections(self.probe, [tests[k].direction for k in again],
                                np.array([self.length(tests[k].direction) for k in again]), self.x.dtype)
        confirmed = confirms(line, [tests[k].numerical for k in again], [tests[k].step for k in again],
                             [tests[k].tolerance for k in again])
        self.evals[stage] = self.evals.get(stage, 0) + 2 * len(again)
        again = [k for k, c in zip(again, confirmed) if not c]  # the others: the step is not the cause
        if not again:
            return tests
        dirs = [tests[k].direction for k in again]
        est = refine(_AlongDirections(self.probe, dirs, np.array([self.length(d) for d in dirs]), self.x.dtype))
        assert est.noise is not None and est.truncation is not None  # refine measures both
        self.evals[stage] = self.evals.get(stage, 0) + 16 * len(dirs)
        out = list(tests)
        for i, k in enumerate(again):
            t = tests[k]
            n = float(est.values[i])
            if not abs(n - t.numerical) > t.tolerance:  # it confirms the first estimate: the failure stands
                continue
            tol = directional_tolerance(n, t.analytical, float(est.noise[i]), float(est.truncation[i]),
                                        self.rounding_dtype)
            out[k] = DirectionalTest(t.direction, n, t.analytical, tol, float(est.step[i]),
                                     SAFETY * float(est.noise[i] + est.truncation[i]),
                                     max(t.first_reach, t.tolerance + t.error))
        return out

    # -- group testing -------------------------------------------------------------------------------
    def bisect(self, lo: int, hi: int) -> tuple[list[DirectionalTest], bool]:
        """Guilty single entries in ``[lo, hi)`` and whether the search stopped because of spread (or the
        budget)."""
        level = [(lo, hi)]
        leaves: list[DirectionalTest] = []
        while level:
            halves = []
            for a, b in level:
                mid = (a + b) // 2
                halves += [(a, mid), (mid, b)]
            halves = [(a, b) for a, b in halves if b > a]
            if not self.affordable(len(halves)):
                return leaves, True
            tests = self.run_tests([self.direction(a, b) for a, b in halves], "localize")
            guilty = [t for t in tests if not t.passed]
            leaves += [t for t in guilty if t.direction.hi - t.direction.lo == 1]
            level = [(t.direction.lo, t.direction.hi) for t in guilty if t.direction.hi - t.direction.lo > 1]
            if len(level) > MAX_SPREAD:  # too many guilty ranges at once: spread (found entries stay found)
                return leaves, True
        return leaves, False

    def on_entries(self, entries: NDArray) -> Direction:
        """A seeded random unit direction supported on the flat ``entries`` only."""
        entries = np.sort(np.asarray(entries, dtype=np.int64))
        lo, hi = int(entries[0]), int(entries[-1]) + 1
        u = np.zeros(hi - lo)
        w = self.rng.standard_normal(entries.size)
        u[entries - lo] = w / np.linalg.norm(w)
        return Direction(lo, hi, u)

    def locate(self, block: Any) -> tuple[list[DirectionalTest], bool]:
        """Guilty single entries of a 2-D block, by rows and columns: a wrong gradient is typically wrong along
        whole columns (the bias column, an input) or rows (one unit).  First the columns are bisected with
        directions spanning every row, then the rows (when more than :data:`LINES` column ranges are guilty at
        once, the error is not confined to a few columns); the entries of each guilty line are then measured
        one by one, or the line is bisected when it is longer than :data:`LINE`.  Ten wrong entries in one
        column cost about ``2 log2(cols) + 10`` tests.  Falls back to plain bisection when neither confines
        the error.  Returns the leaves and whether the search stopped because of spread or the budget."""
        grid = block.grid() + block.start
        rows, cols = block.shape
        for axis in (1, 0):
            lines = self.guilty_lines(grid, axis)
            if lines is None:
                if self.over_budget:
                    return [], True
                continue
            leaves: list[DirectionalTest] = []
            for k in lines:
                entries = grid[:, k] if axis == 1 else grid[k, :]
                found, stopped = self.bisect_entries(np.sort(entries))
                leaves += found
                if stopped:
                    return leaves, True
            return leaves, False
        return self.bisect(block.start, block.stop)

    def guilty_lines(self, grid: NDArray, axis: int) -> list[int] | None:
        """The columns (``axis=1``) or rows (``axis=0``) of a block whose directions fail, by bisection over
        ranges of them (each test spans the whole other axis); None when more than :data:`LINES` ranges are
        guilty at once, or the budget ends the search."""
        n = grid.shape[axis]
        level, found = [(0, n)], []
        while level:
            halves = []
            for a, b in level:
                if b - a == 1:
                    found.append(a)
                    continue
                mid = (a + b) // 2
                halves += [(a, mid), (mid, b)]
            if not halves:
                break
            if not self.affordable(len(halves)):
                return None
            dirs = [self.on_entries((grid[:, a:b] if axis == 1 else grid[a:b, :]).ravel()) for a, b in halves]
            tests = self.run_tests(dirs, "localize")
            level = [h for h, t in zip(halves, tests) if not t.passed]
            if len(level) > LINES:
                return None
        return found

    def bisect_entries(self, entries: NDArray) -> tuple[list[DirectionalTest], bool]:
        """Bisection over a sorted set of flat entries (a row or column that fails).  When every half of a
        level fails (the error fills the line: the bias column) and at most :data:`LINE` entries remain, they
        are measured one by one, which costs less than bisecting on."""
        level = [entries]
        leaves: list[DirectionalTest] = []
        dense = False
        while level:
            if dense and sum(g.size for g in level) <= LINE:
                halves = [g[k:k + 1] for g in level for k in range(g.size)]
            else:
                halves = [part for group in level for part in (group[: group.size // 2], group[group.size // 2:])
                          if part.size]
            if not self.affordable(len(halves)):
                return leaves, True
            dirs = [Direction(int(h[0]), int(h[0]) + 1, np.ones(1)) if h.size == 1 else self.on_entries(h)
                    for h in halves]
            tests = self.run_tests(dirs, "localize")
            leaves += [t for t, h in zip(tests, halves) if not t.passed and h.size == 1]
            level = [h for t, h in zip(tests, halves) if not t.passed and h.size > 1]
            dense = len(halves) > 1 and all(not t.passed for t in tests)
            if len(level) > MAX_SPREAD:
                return leaves, True
        return leaves, False

    def taylor(self, d: Direction) -> dict[str, Any]:
        """Fit the slope of the Taylor remainder along ``d`` (see :func:`taylor_remainder`)."""
        out = taylor_remainder(self.probe, self.x, self.a, d)
        self.evals["taylor"] = self.evals.get("taylor", 0) + len(out["all_h"])
        return out

    # -- assembly --------------------------------------------------------------------------------------
    def run(self) -> tuple[list[DirectionalTest], dict[str, list[DirectionalTest]], list[DirectionalTest],
                           list[str], dict[str, Any] | None, bool]:
        P = self.x.size
        first = self.run_tests([self.direction(0, P) for _ in range(self.n_directions)], "directions")
        block_tests: dict[str, list[DirectionalTest]] = {}
        leaves: list[DirectionalTest] = []
        spread: list[str] = []
        passed = all(t.passed for t in first)
        taylor: dict[str, Any] | None = None
        self.scales = None
        if not passed and not getattr(self.probe, "exact", False):
            failing = [t for t in first if not t.passed]
            line = _AlongDirections(self.probe, [t.direction for t in failing],
                                    np.array([self.length(t.direction) for t in failing]), self.x.dtype)
            line.noise_excess = float(getattr(self.probe, "noise_excess", 1.0))
            analytical = np.array([t.analytical for t in failing])
            numerical = np.array([t.numerical for t in failing])
            self.scales = (across_scales(line, analytical, numerical),
                           [f"direction {first.index(t) + 1}" for t in failing], numerical, analytical)
            self.evals["scales"] = 2 * WIDE * len(failing)
        if not passed:
            sized = [b for b in self.layout.blocks if b.size]
            per_block = self.run_tests([self.direction(b.start, b.stop) for b in sized], "blocks")
            for b, t in zip(sized, per_block):
                block_tests[b.name] = [t]
            failing_blocks = [b for b, t in zip(sized, per_block) if not t.passed]
            for b in failing_blocks:
                if b.size == 1:
                    leaves += [t for t in block_tests[b.name]]
                    continue
                found, stopped = self.locate(b) if len(b.shape) == 2 and min(b.shape) > 1 else \
                    self.bisect(b.start, b.stop)
                leaves += found
                if stopped:
                    spread.append(b.name)
                    block_tests[b.name] += self.run_tests([self.direction(b.start, b.stop) for _ in range(3)],
                                                          "blocks")
            # The Taylor verdict along the direction where the mismatch stands out most: a localized entry,
            # else the worst block-restricted direction, else the worst whole-vector one.
            ratio = lambda t: t.error / max(t.tolerance, 1e-300)  # noqa: E731
            candidates = leaves or [t for tests in block_tests.values() for t in tests if not t.passed] or first
            taylor = self.taylor(max(candidates, key=ratio).direction)
        return first, block_tests, leaves, spread, taylor, passed

    def detectable(self, first: list[DirectionalTest]) -> NDArray:
        """Per entry, the smallest error of that entry alone that one of the whole-vector directions detects:
        ``min_k (tau_k + |n_k - a_k|) / |u_kj|`` (``inf`` where every direction misses the entry), with the
        first estimate's reach where a second look replaced it (an error has to fail the first to get the
        second)."""
        out = np.full(self.x.size, np.inf)
        for t in first:
            with np.errstate(divide="ignore"):
                out = np.minimum(out, max(t.tolerance + t.error, t.first_reach) / np.abs(t.direction.u))
        return out


def run_directional(subject: Any, strategy: Any, probe: Any, f0: Any, a: NDArray, *,
                    n_directions: int = DEFAULT_DIRECTIONS, seed: int = 0, top: int = 5, t0: float | None = None,
                    evaluations: dict[str, int] | None = None, noise: Noise | None = None,
                    evaluator: str = "cost", rounding_dtype: Any = None, budget: int | None = None,
                    progress: Callable[[str, int], None] | None = None) -> Report:
    """The directional check of ``subject`` with evaluator ``probe`` (module docstring); the analytic gradient
    ``a`` and cost ``f0`` at ``x0`` are already known, and ``evaluations`` (by purpose) were spent on them;
    ``rounding_dtype`` is the dtype of the analytic gradient's rounding (default: the parameters').  Returns a
    Report whose ``directional`` field holds the evidence and whose ``measured`` mask marks the localized
    entries.  ``budget`` caps the evaluations localization may bring the check to (it stops, with a note, when
    the next round would not fit); ``progress(stage, evaluations)`` is called after each round of tests."""
    t0 = time.perf_counter() if t0 is None else t0
    run = _Directional(subject, strategy, probe, f0, a, n_directions, seed, evaluations, rounding_dtype, budget,
                       progress)
    first, block_tests, leaves, spread, taylor, passed = run.run()
    x, layout = run.x, run.layout
    P = x.size
    numerical = np.full(P, np.nan)
    tolerance = run.detectable(first)
    measured = np.zeros(P, dtype=bool)
    for t in leaves:
        j, u = t.direction.lo, float(t.direction.u[0])
        numerical[j], tolerance[j], measured[j] = t.numerical / u, t.tolerance / abs(u), True
    blocks = []
    for b in layout.blocks:
        tests = block_tests.get(b.name)
        ok = True if tests is None else all(t.passed for t in tests)
        nb = np.array([t.numerical for t in tests]) if tests else np.zeros(0)
        ab = np.array([t.analytical for t in tests]) if tests else np.zeros(0)
        n_bad = int(np.sum(measured[b.slice])) if not ok else 0
        blocks.append(BlockSummary(b.name, b.shape, relative_difference(nb, ab) if tests else 0.0,
                                   float(np.max(np.abs(nb - ab), initial=0.0)), n_bad, ok))
    evidence = DirectionalEvidence(
        n_directions=len(first), tests=tuple(t.record(x) for t in first),
        block_tests={name: tuple(t.record(x) for t in tests) for name, tests in block_tests.items()},
        localized=tuple(layout.label(t.direction.lo) for t in leaves), spread_blocks=tuple(spread),
        evaluations=dict(run.evals), taylor=taylor, scales=run.scales)
    h0 = float(np.median([t.step for t in first]))
    report = Report.build(
        method=strategy.name, step=h0, step_rule="auto" if strategy.step == "auto" else "fixed", dtype=x.dtype,
        numerical=numerical, analytical=a, rtol=0.0, atol=tolerance, layout=layout, x=x, cost=f0,
        n_evals=sum(run.evals.values()), seconds=time.perf_counter() - t0, top=top,
        measured=measured, blocks=tuple(blocks), passed=passed, subject=subject.kind, lambda_=subject.lambda_,
        m=subject.m, mode="directional", evaluator=evaluator, noise=noise, directional=evidence)
    if run.settled:
        n = len(run.settled)
        spans = sorted({(d.lo, d.hi) for d, _ in run.settled})
        names = ", ".join(layout.label(lo) if hi - lo == 1 else f"a direction over {layout.label(lo)}.."
                          f"{layout.label(hi - 1)}" for lo, hi in spans[:4]) + (" ..." if len(spans) > 4 else "")
        smaller = sum(how == "own-piece" for _, how in run.settled)
        names_of = tuple(dict.fromkeys(layout.block_of(lo).name for lo, _ in spans))
        text = finding_text(n, names, smaller, n - smaller).replace(
            "entr" + ("y" if n == 1 else "ies"), "direction" + ("" if n == 1 else "s"), 1)
        report = evolve(report, findings=(Finding("nonsmooth", names_of, text, {"directions": n}),) + report.findings)
    if run.over_budget:
        report = evolve(report, notes=report.notes + (
            f"localization stopped at the evaluation budget ({budget}): the entries named are those found by "
            "then; the failing blocks stand",))
    if run.coarse:
        worst = max(r for _, r in run.coarse)
        coarse_blocks = tuple(dict.fromkeys(layout.block_of(d.lo).name for d, _ in run.coarse))
        report = evolve(report, passed=False, findings=report.findings + (Finding(
            "precision-limited", coarse_blocks,
            f"inconclusive: the stencil of {len(run.coarse)} direction{'' if len(run.coarse) == 1 else 's'} crossed "
            f"a kink; measured without crossing one they agree only within up to {worst:.0f} times the first "
            "tolerance (a step that stays on one piece resolves less there), or several units sit on kinks the "
            "direction moves in different ways (the analytic value lies between the one-sided slopes)",
            {"unresolved": True, "covers_mismatch": True}),))
    # the summary numbers of a directional check are those of its whole-vector directions
    nf = np.array([t.numerical for t in first])
    af = np.array([t.analytical for t in first])
    err = np.abs(nf - af)
    return evolve(report, relative_difference=relative_difference(nf, af), max_abs_error=float(err.max(initial=0.0)),
                  max_rel_error=float(np.max(err / np.maximum(np.maximum(np.abs(nf), np.abs(af)), 1e-300),
                                              initial=0.0)))
