"""Directional checks, the Taylor-remainder verdict, and what a directional PASS guarantees.

``mode="directional"`` compares ``u . g`` with the finite-difference derivative of the cost along a few
seeded random unit directions ``u`` (2 evaluations per direction with central differences) instead of
checking every entry.  When that fails, the wrong entries are found without a full check:

0. a single wrong entry that explains every failing direction is pinned from their mismatches
   (:mod:`layerkit.check.pinpoint`), and its own coordinate test carries the verdict; otherwise:
1. one directional test restricted to each block tells the failing blocks;
2. inside a failing block, the wrong entries are found by group testing (:mod:`layerkit.check.localize`);
   a block whose mismatch is spread over many entries gets a few more directions restricted to it, which
   give the doctor its block-level evidence (a common factor, a sign, zeros, a penalty);
3. the Taylor remainder ``r(h) = |J(x + h u) - J(x) - h g.u|`` along the direction where the mismatch stands
   out most shrinks like ``h^2`` when the gradient is right and like ``h`` when it is wrong; its fitted slope
   is a verdict that needs no tolerance.

Every test gets the safeguards of a full check's entries: a second look when it fails
(:mod:`layerkit.check.second_look`) and, for a subject with kinked layers, a stencil that crossed a kink
measured again without crossing one (:mod:`layerkit.check.kinks`).

What a PASS guarantees: for each entry ``j``, an error of that entry alone larger than its reported
tolerance ``min_k tau_k / |u_kj|`` (over the whole-vector directions ``k``) would have failed direction ``k``.
Errors in several entries can cancel along a random direction only on a set of directions of measure zero.

Evaluators (:mod:`layerkit.check.engine` chooses): the subject's own cost along directions
(:class:`~layerkit.check.probes.CostDirections`; each difference carries twice the cost's measured noise),
or the network engine (:class:`~layerkit.fast.directions.NetworkDirections`), which propagates the change
exactly through a network's layers: its rounding is tiny, so the step can be ``sqrt(eps)``, once its own
noise has been measured on a difference table (a user's rule that cancels would be caught there).

Tolerance of one directional derivative: the formula of :mod:`layerkit.check.tolerance`, with the stencil's
noise (the evaluator's bound divided by the step) and its truncation from the model
:func:`~layerkit.check.methods.truncation_model` (``l = min_j max(1, |x_j|)`` over the entries a direction
moves), or measured from a second step for an exact evaluator whose rules are not layerkit's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from attrs import evolve, field, frozen
from numpy.typing import NDArray

from ..numerics import Direction, machine_eps
from .baseline import Baseline
from .kinks import (
    MAX_LINES,
    SETTLED,
    Tally,
    coarse,
    coarse_finding,
    direction_delta,
    kinked_sides,
    line_sides,
    moves_off,
    nonsmooth_finding,
    settle,
    undeclared,
)
from .ledger import Ledger
from .localize import locate
from .methods import truncation_model
from .noise import EXCESS_THRESHOLD
from .pinpoint import pinpoint
from .probes import LineProbe
from .refine import WIDE, Ladder, across_scales, wide_ladder
from .report import BlockSummary, Comparison, DirectionalEvidence, DirectionRecord, Report, Setting, relative_difference
from .second_look import discredits, look_again
from .tolerance import SAFETY, directional_tolerance, error_bound, floor
from .verdicts import (
    TINY_CAUSE,
    below_floor,
    coarse_fixed_directions,
    resolution_cause,
    scales_verdict,
    undecided,
    unresolved,
    unresolved_blocks,
    unresolved_directions,
    unresolved_zero,
)

#: A failing direction is measured again when it fails by less than this many times its tolerance.
SECOND_LOOK = 100.0
#: A passing direction whose error bound exceeds this fraction of ``|u . g|`` is tested for a kink its stencil
#: crossed (on a cost that declares none): at the automatic step a smooth cost's bound is some ``1e-8`` of it,
#: and a crossed kink's jump, read as curvature by the truncation model, can hide an error of this size.
WEAK_PASS = 1e-2
#: A passing direction whose stencil, shortened this many times, still moves a unit across a declared kink is
#: settled like one on a kink: the kink is within 1/64 of the step, where a central difference is the mean of
#: the slopes but for ``K / 128`` (:meth:`Tester._moves_on_kink`).
NEAR_KINK = 64.0


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
    #: Half the jump of the stencil's one-sided slopes ``(J(x + h u) - J(x)) / h`` and ``(J(x) - J(x - h u)) / h``,
    #: with their rounding (NaN for a stencil without that pair): the most a kink the stencil crosses can
    #: move a central difference, since it moves the one slope it falls in and the mean by half of that.
    kink_reach: float = math.nan
    #: The cost changes the first estimate measured along the direction, ``{t: (value, noise)}``: a later test
    #: along the same line reads them instead of evaluating the same steps again (empty when replaced).
    measured: dict[float, tuple[float, float]] = field(factory=dict)

    @property
    def error(self) -> float:
        return abs(self.numerical - self.analytical)

    @property
    def passed(self) -> bool:
        return bool(math.isfinite(self.error) and self.error <= self.tolerance)

    def record(self, x: NDArray, keep: bool = False) -> DirectionRecord:
        """The report's record; ``keep`` keeps the direction itself (a block's own test)."""
        d = self.direction
        return DirectionRecord(self.numerical, self.analytical, self.tolerance, float(d.u @ x[d.lo:d.hi]),
                               self.bound, np.asarray(d.u, dtype=np.float64) if keep else None)


def taylor_remainder(probe: Any, x: NDArray, grad: NDArray, d: Direction,
                     mismatch: float | None = None) -> dict[str, Any]:
    """Slope of ``r(h) = |J(x + h u) - J(x) - h g.u|`` against ``h`` along ``d``, and its verdict.

    ``h`` runs over 13 values from ``1e-1`` to ``1e-7`` (times ``max(1, |x|)`` on the support); values whose
    remainder is within 100 times the probe's rounding bound are dropped, and the slope is fitted on the
    four smallest remaining steps (the asymptotic regime): about 2 for a right gradient, 1 for a wrong one.
    A wrong gradient shows slope 1 only where its term ``h |e|`` (``e`` the directional mismatch, ``mismatch``
    when the caller measured it) outweighs the curvature's ``c h^2``: when ``h |e|`` is under twice the
    remainder at the smallest usable step, a slope of 2 says nothing about the gradient, and the verdict says
    the test cannot see a mismatch that small.
    """
    scale = max(1.0, float(np.max(np.abs(x[d.lo:d.hi]))))
    hs = scale * np.logspace(-1, -7, 13)
    dj, noise = probe.delta([d], hs[:, None])
    return taylor_fit(hs, dj[:, 0], noise[:, 0], float(grad[d.lo:d.hi] @ d.u), float(np.finfo(x.dtype).eps),
                      mismatch)


def taylor_fit(hs: NDArray, dj: NDArray, noise: NDArray, a: float, eps: float,
               mismatch: float | None = None) -> dict[str, Any]:
    """The fit and verdict of :func:`taylor_remainder` from a ladder of positive steps ``hs`` (largest
    first), the cost differences ``dj = J(x + h u) - J(x)`` there and their ``noise``; ``a = g . u``."""
    r = np.abs(dj - hs * a)
    usable = r > 100 * (noise + eps * abs(a) * hs)
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
    elif mismatch is not None and abs(mismatch) * hs[tail[-1]] < 2 * r[tail[-1]]:
        verdict = (f"the Taylor remainder shrinks like h^{slope:.2f}, but at its smallest usable step the mismatch's "
                   f"part h |e| is {abs(mismatch) * hs[tail[-1]] / r[tail[-1]]:.2g} times the remainder: too small "
                   "against the curvature for the Taylor test to separate, which neither confirms nor rules it out")
    else:
        verdict = (f"the Taylor remainder shrinks like h^{slope:.2f} (h^2 expected of a right gradient): the "
                   "gradient looks right along this direction; the mismatch may be the step's or the precision's")
    return {**base, "slope": slope, "verdict": verdict, "h": hs[tail].tolist(), "remainder": r[tail].tolist()}


class Tester:
    """Runs the directional tests of one check: steps, stencils, tolerances and the safeguards of every test
    (module docstring), counting evaluations by stage in the ledger.

    It keeps what its tests found on the way: the directions whose stencil crossed a kink and were settled
    (``settled``, with how) or settled only coarsely (``coarse``, with how many times the first tolerance),
    and whether the evaluation ``budget`` stopped a search (``over_budget``).  The random directions come from
    one seeded stream, in the order they are asked for.
    """

    def __init__(self, subject: Any, options: Any, evaluator: Any, base: Baseline, ledger: Ledger,
                 budget: int | None = None, rounding: Callable[[], NDArray | float] | None = None,
                 rounding_norms: Callable[[], list[tuple[int, int, float]]] | None = None) -> None:
        self.subject, self.options, self.evaluator, self.ledger = subject, options, evaluator, ledger
        self.a = base.a
        #: The change a cost of this size can round away (:func:`~layerkit.check.refine.across_scales`).
        self.lost = machine_eps(base.rounding_dtype(subject.x0.dtype)) * max(abs(float(base.cost)), 1.0)
        finite = np.abs(np.asarray(base.a, dtype=np.float64))
        #: The largest finite analytic entry: the scale of the analytic gradient's rounding (each direction's
        #: floor, :func:`~layerkit.check.tolerance.directional_tolerance`).
        self.largest = float(np.max(finite[np.isfinite(finite)], initial=0.0))
        #: Computes, per entry, the bound on the backprop gradient's own rounding where it is known (a
        #: network's: :meth:`~layerkit.check.engine.Evaluators.analytic_rounding`; 0 elsewhere), when the
        #: first tolerance needs it (:meth:`tolerance`): a cancelling loss gradient (softmax's ``P - Y`` on a
        #: well-fit example) rounds to ``eps`` of its terms, not of itself.
        self._rounding_of = rounding
        self._rounding: NDArray | None = None
        #: The same bound's norm per block, ``(start, stop, ||r||)``: for a direction over whole blocks,
        #: ``sum_b ||u_b|| ||r_b||`` bounds ``sum_j |u_j| r_j`` for the cost of the magnitudes alone.
        self._norms_of = rounding_norms
        self._norms: list[tuple[int, int, float]] | None = None
        self.strategy = options.strategy
        self.x = subject.x0
        self.eps = machine_eps(self.x.dtype)
        self.rng = np.random.default_rng(options.seed)
        #: The stream of :func:`~layerkit.check.pinpoint.pinpoint`'s directions, apart from the check's: a
        #: search that ends without a pin leaves the directions of what follows as they would have been.
        self.search_rng = np.random.default_rng([options.seed, 1])
        self.budget, self.over_budget = budget, False
        self.settled: list[tuple[Direction, str]] = []
        self.coarse: list[tuple[Direction, float]] = []
        #: Failing directions measured again clear of a kink the cost does not declare, and still failing
        #: there (their mismatch is established), and the farthest such kink's distance.
        self.established = 0
        self.kink_distance = 0.0
        #: A cost rough at every scale (:func:`~layerkit.check.kinks.rough_cost`): no test for kinks it does
        #: not declare.
        self.rough = False
        #: Whether a test for a kink the cost does not declare found one (localization then tests too).
        self.kink_seen = False
        self.sides = kinked_sides(subject)
        #: The tests whose safeguards :meth:`tests` deferred, until :meth:`settle` gives them.
        self.deferred: list[DirectionalTest] = []
        #: The kinked units' sides at the point (0: on a kink), computed when first needed.
        self._at: NDArray | None = None
        self.rounding_dtype = base.rounding_dtype(self.x.dtype)
        # layerkit's own rules are exact identities: at sqrt(eps) steps their truncation is negligible and
        # their rounding bound needs no measurement; an exact evaluator with other rules was calibrated
        # (:func:`calibrated`), and a noise above the rounding bound of exact propagation means a rule that
        # cancels: the tests then take normal steps
        self.known_rules = bool(subject.known_rules)
        self.tiny_steps = bool(evaluator.exact) and (
            self.known_rules or evaluator.noise_floor <= 64 * self.eps * max(abs(base.cost), 1e-300))

    def reach(self, d: Direction) -> float:
        """``||u|| max |a|``: what the analytic gradient's rounding reaches along ``d``."""
        return float(np.linalg.norm(d.u)) * self.largest

    def tolerance(self, numerical: float, d: Direction, analytical: float, noise: float, truncation: float,
                  relative: float = 0.0) -> float:
        """:func:`~layerkit.check.tolerance.directional_tolerance` along ``d``, plus the backprop gradient's
        rounding along it where known, ``sum_j |u_j| r_j`` (each entry's bound, as the full check adds it; the
        entries' errors come from the same examples' roundings, so they add in the worst case).  Every
        direction gets the term, the passing ones too: a pass's tolerance is the error it cannot see, and the
        detectable error the report gives each entry comes from it.  A direction over whole blocks (the
        random directions, a block's own) takes the bound ``sum_b ||u_b|| ||r_b||`` (within about 1.25 of the
        sum for a random direction), which costs the magnitudes alone; a part of a block (localization) the
        entries' own bounds, formed once (about a gradient evaluation)."""
        tol = directional_tolerance(numerical, analytical, noise, truncation, self.rounding_dtype, relative,
                                    reach=self.reach(d))
        if self._rounding is None and self._norms_of is not None:
            if self._norms is None:
                self._norms = self._norms_of()
            spans = [(lo, hi, n) for lo, hi, n in self._norms if lo < d.hi and d.lo < hi]
            if all(d.lo <= lo and hi <= d.hi for lo, hi, _ in spans):  # whole blocks only
                u = np.asarray(d.u, dtype=np.float64)
                return tol + sum(float(np.linalg.norm(u[lo - d.lo:hi - d.lo])) * n for lo, hi, n in spans)
        if self._rounding_of is None:
            return tol
        if self._rounding is None:
            self._rounding = np.asarray(self._rounding_of(), dtype=np.float64)
        if self._rounding.ndim:
            tol += float(np.abs(d.u) @ self._rounding[d.lo:d.hi])
        return tol

    # -- directions ------------------------------------------------------------------------------------
    def direction(self, lo: int, hi: int) -> Direction:
        u = self.rng.standard_normal(hi - lo)
        return Direction(lo, hi, u / np.linalg.norm(u))

    def along_gradient(self, lo: int, hi: int) -> Direction:
        """The unit direction of the analytic gradient on ``[lo, hi)`` (a random one where it is zero): the
        direction along which ``u . g = ||g||`` is largest, so a block-wide error (a factor, a sign, a missing
        term) of a block whose gradient is small against the cost's noise shows there first."""
        g = np.asarray(self.a[lo:hi], dtype=np.float64)
        norm = float(np.linalg.norm(g))
        if not (norm > 0 and math.isfinite(norm)):
            return self.direction(lo, hi)
        return Direction(lo, hi, g / norm)

    def gradient_part(self, lo: int, hi: int) -> Direction:
        """The analytic gradient's direction on a seeded random half of ``[lo, hi)``'s entries (a random
        direction where that part of the gradient is zero): several of them resolve a block-wide factor or
        penalty of a block whose random directions drown in the cost's noise, each with a ``u . g`` of about
        ``||g|| / sqrt(2)``."""
        g = np.asarray(self.a[lo:hi], dtype=np.float64) * (self.rng.random(hi - lo) < 0.5)
        norm = float(np.linalg.norm(g))
        if not (norm > 0 and math.isfinite(norm)):
            return self.direction(lo, hi)
        return Direction(lo, hi, g / norm)

    def on_entries(self, entries: NDArray, rng: np.random.Generator | None = None) -> Direction:
        """A seeded random unit direction supported on the flat ``entries`` only (drawn from ``rng``, by
        default the check's stream)."""
        entries = np.sort(np.asarray(entries, dtype=np.int64))
        lo, hi = int(entries[0]), int(entries[-1]) + 1
        u = np.zeros(hi - lo)
        w = (self.rng if rng is None else rng).standard_normal(entries.size)
        u[entries - lo] = w / np.linalg.norm(w)
        return Direction(lo, hi, u)

    def length(self, d: Direction) -> float:
        """The length scale the step along ``d`` is relative to: that of the *smallest* parameter it moves,
        ``min_j max(1, |x_j|)`` over ``u_j != 0``, so that no entry is moved beyond the scale its own terms
        curve on (a direction over a bias of size 1 and weights of size 1e6 would otherwise step by 1e3 on
        the bias, and the truncation model, built on one scale, would not see it)."""
        moved = np.abs(self.x[d.lo:d.hi])[np.asarray(d.u) != 0]
        return max(1.0, float(np.min(moved, initial=np.inf))) if moved.size else 1.0

    def step(self, d: Direction) -> float:
        if not self.options.auto_step:
            return float(self.strategy.step)
        if self.tiny_steps:  # roundoff ~ eps sum|terms| does not grow as h shrinks: take h small
            return math.sqrt(self.eps) * self.length(d)
        excess = max(1.0, float(self.evaluator.noise_excess))
        return float(self.strategy.base_step(self.x.dtype, excess) * self.length(d))

    def line(self, dirs: list[Direction], dtype: Any = None, excess: float = 1.0) -> LineProbe:
        """The directions as the axes of a probe (for the stencil's plan: float64 steps, as directions are not
        on a parameter's grid; else in the parameters' dtype), with the noise ``excess`` its ladders follow."""
        return LineProbe(self.evaluator, dirs, np.array([self.length(d) for d in dirs]),
                         self.x.dtype if dtype is None else dtype, excess)

    # -- tests -----------------------------------------------------------------------------------------
    @property
    def used(self) -> int:
        """Evaluations spent so far (the analytic ones included)."""
        return self.ledger.spent

    def affordable(self, n_tests: int) -> bool:
        """Whether ``n_tests`` more directional tests fit in the budget (about ``2 + 1`` evaluations each:
        the stencil and a share of second looks); records when they do not."""
        if self.budget is None:
            return True
        if self.used + n_tests * (max(1, self.options.traits.points) + 1) <= self.budget:
            return True
        self.over_budget = True
        return False

    def tests(self, dirs: list[Direction], stage: str, screen: bool | None = None,
              defer: bool = False) -> list[DirectionalTest]:
        """The directional tests along ``dirs``, with their second looks and kink settling.  ``screen`` (by
        default, during localization) takes the safeguards of tests that only narrow down entries of a check
        that failed already (see :meth:`second_look` and :meth:`kinks`); ``defer`` leaves the tests that fail
        at their first estimate for :meth:`settle`."""
        screen = stage == "localize" if screen is None else screen
        out = self.measurements(dirs, stage)
        if defer:
            failing = [k for k, t in enumerate(out) if not t.passed]
            self.deferred += [out[k] for k in failing]
            done = self.safeguards([t for t in out if t.passed], stage, screen)
            it = iter(done)
            out = [next(it) if t.passed else t for t in out]
        else:
            out = self.safeguards(out, stage, screen)
        if self.options.progress is not None:
            self.options.progress(stage, self.used)
        return out

    def safeguards(self, tests: list[DirectionalTest], stage: str, screen: bool) -> list[DirectionalTest]:
        """``tests`` after their second looks, kink settling and measurement again (in that order)."""
        return self.measured_again(self.kinks(self.second_look(tests, stage, screen), stage, screen), stage)

    def settle(self, tests: list[DirectionalTest], stage: str) -> list[DirectionalTest]:
        """``tests`` with the safeguards that :meth:`tests` deferred given to the deferred ones."""
        todo = [k for k, t in enumerate(tests) if any(t is d for d in self.deferred)]
        if not todo:
            return tests
        self.deferred = [d for d in self.deferred if not any(d is tests[k] for k in todo)]
        out = list(tests)
        for k, t in zip(todo, self.safeguards([tests[k] for k in todo], stage, stage == "localize")):
            out[k] = t
        return out

    def measurements(self, dirs: list[Direction], stage: str) -> list[DirectionalTest]:
        """The first estimates along ``dirs`` with their tolerances, no safeguard taken (the measurements a
        search narrows down on, which name nothing themselves)."""
        hs = np.array([self.step(d) for d in dirs])
        steps, coef = self.strategy.plan(self.line(dirs, hs.dtype), hs)
        d, noise = self.evaluator.delta(dirs, steps)
        n = np.einsum("sn,sn->n", coef, d)
        noise_term = np.einsum("sn,sn->n", np.abs(coef), noise)
        used = steps.size
        opposite = steps.shape[0] >= 2 and np.allclose(steps[0], -steps[1])  # the stencil's first two: +-h
        if self.evaluator.exact and not self.known_rules:  # the truncation from a second step
            steps2, coef2 = self.strategy.plan(self.line(dirs, hs.dtype), hs / 2)
            d2, _ = self.evaluator.delta(dirs, steps2)
            trunc = np.abs(n - np.einsum("sn,sn->n", coef2, d2)) / (1 - 2.0 ** -self.options.traits.order)
            used += steps2.size
        else:
            pair = (d[0], d[1]) if opposite else None
            length = np.array([self.length(di) for di in dirs])
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                trunc = truncation_model(hs, length, self.options.traits.order, n, pair)
        central = opposite and steps.shape[0] == 2 and bool(np.all(steps[0] > 0))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            reach = ((np.abs(d[0] + d[1]) + noise[0] + noise[1]) / (2 * steps[0]) if central
                     else np.full(len(dirs), np.nan))
        out = []
        for k, di in enumerate(dirs):
            a = float(self.a[di.lo:di.hi] @ di.u)
            tol = self.tolerance(float(n[k]), di, a, float(noise_term[k]), float(trunc[k]))
            out.append(DirectionalTest(di, float(n[k]), a, float(tol), float(hs[k]),
                                       float(error_bound(noise_term[k], trunc[k])), kink_reach=float(reach[k]),
                                       measured={float(t): (float(v), float(e)) for t, v, e in
                                                 zip(steps[:d.shape[0], k].astype(np.float64), d[:, k], noise[:, k])}))
        self.ledger.count(stage, used)
        return out

    def second_look(self, tests: list[DirectionalTest], stage: str, screen: bool) -> list[DirectionalTest]:
        """Failing directions measured again (:mod:`layerkit.check.second_look`), when the step was automatic:
        every failing direction, and of a ``screen`` (localization) only those that fail by less than
        :data:`SECOND_LOOK` times their tolerance (a model that misjudged the truncation; a wrong gradient
        fails by far more).  A replaced estimate gets the directional tolerance of its own error."""
        if not self.options.auto_step:
            return tests
        always = not screen
        again = [k for k, t in enumerate(tests) if not t.passed and (always or t.error < SECOND_LOOK * t.tolerance)]
        if not again:
            return tests
        line = self.line([tests[k].direction for k in again])
        relook = look_again(line, [tests[k].numerical for k in again], [tests[k].step for k in again],
                            [tests[k].tolerance for k in again])
        self.ledger.count(stage, 2 * len(again))
        tests = list(tests)
        for i, k in enumerate(again):  # the quarter step's changes, for a later test along the same line
            seen = dict(tests[k].measured)
            for steps, d, noise in line.measured:
                seen.update(zip(steps[:, i].tolist(), zip(d[:, i].tolist(), noise[:, i].tolist())))
            tests[k] = evolve(tests[k], measured=seen)
        est = relook.estimate
        if est is None:  # every one confirmed: the step is not the cause
            return tests
        assert est.noise is not None and est.truncation is not None  # refine measures both
        self.ledger.count(stage, 16 * relook.rest.size)
        out = list(tests)
        for i, k in enumerate(again[r] for r in relook.rest):
            t = tests[k]
            n = float(est.values[i])
            if not discredits(np.array(n), np.array(t.numerical), np.array(t.tolerance), nan=False):
                continue  # it confirms the first estimate: the failure stands
            tol = self.tolerance(n, t.direction, t.analytical, float(est.noise[i]), float(est.truncation[i]))
            out[k] = DirectionalTest(t.direction, n, t.analytical, tol, float(est.step[i]),
                                     float(error_bound(est.noise[i], est.truncation[i])),
                                     max(t.first_reach, t.tolerance + t.error))
        return out

    def measured_again(self, tests: list[DirectionalTest], stage: str) -> list[DirectionalTest]:
        """Passing directions whose error bound still exceeds :data:`WEAK_PASS` of their derivative, no kink
        crossed explaining it (a truncation *model* on a short length scale: entries near 0), measured at a
        quarter and a sixteenth of the step: the central differences there, their change (a measured
        truncation, taken whole) and their rounding give a bound that replaces the model's when it is
        tighter.  A pass must rest on what was measured.  4 evaluations a direction."""
        if not self.options.auto_step or self.sides is not None or self.rough:
            return tests
        out = list(tests)
        for k, t in enumerate(tests):
            if not (t.passed and t.bound > WEAK_PASS * abs(t.analytical)):
                continue
            h = t.step
            ts = np.array([h / 4, -h / 4, h / 16, -h / 16])
            vals, noise = direction_delta(self.evaluator, t.direction)(ts)
            self.ledger.count(stage, 4)
            d1, d2 = (vals[0] - vals[1]) / (h / 2), (vals[2] - vals[3]) / (h / 8)
            rounding = (abs(noise[2]) + abs(noise[3])) / (h / 8)
            bound = float(SAFETY * (abs(d1 - d2) + rounding))
            if not (np.isfinite(d2) and bound < t.bound):
                continue
            tol = self.tolerance(float(d2), t.direction, t.analytical, float(rounding), float(abs(d1 - d2)))
            out[k] = DirectionalTest(t.direction, float(d2), t.analytical, tol, h / 16, bound,
                                     max(t.first_reach, t.tolerance + t.error))
        return out

    def kinks(self, tests: list[DirectionalTest], stage: str, screen: bool) -> list[DirectionalTest]:
        """Failing directions of a subject with kinked layers whose stencil crossed a kink, measured again
        without crossing one (:mod:`layerkit.check.kinks`), at most :data:`~layerkit.check.kinks.MAX_LINES`
        settled per check; on a cost that declares no kinks, also the passing directions whose error bound
        exceeds :data:`WEAK_PASS` of their derivative.  A ``screen`` (localization) takes passes as they are
        and tests a cost that declares no kinks only where the first stages found one, or at a single entry
        whose mismatch a kink its own stencil crossed could explain (:meth:`_kink_could_explain`)."""
        if self.sides is None and self.subject.known_analytic:
            return tests
        out = list(tests)
        for k, t in enumerate(tests):
            # a pass whose error bound is a large part of the derivative itself: the stencil's one-sided slopes
            # disagree, a kink crossed (which the truncation model reads as curvature) until shown otherwise
            weak = t.passed and self.sides is None and not self.rough and t.bound > WEAK_PASS * abs(t.analytical)
            # a pass along a direction that moves a unit sitting exactly on a declared kink: a central
            # difference there is the mean of the two one-sided slopes, which agreeing with proves nothing
            # (localization, which only names entries of a check that failed already, takes passes as they are)
            straddle = t.passed and self.sides is not None and not screen and self._moves_on_kink(t, stage)
            if (t.passed and not weak and not straddle) or len(self.settled) >= MAX_LINES:
                continue
            d = t.direction
            rounding = self.tolerance(t.analytical, d, t.analytical, 0.0, 0.0)
            if self.sides is not None:
                done = settle(line_sides(self.sides, self.x, d.lo, d.hi, d.u), direction_delta(self.evaluator, d),
                              2 * t.step, t.analytical, rounding)
            elif self.rough or (screen and not self.kink_seen and not weak and not self._kink_could_explain(t)):
                continue  # localization tests a kink only where the first stages found one, or at an entry
            else:
                done = undeclared(direction_delta(self.evaluator, d), t.step, t.analytical, rounding, t.measured)
                self.kink_seen = self.kink_seen or done.how != "smooth"
                if done.how == "failing":  # smooth at a smaller step, and wrong there: that estimate stands
                    out[k] = DirectionalTest(d, done.value, t.analytical, done.tolerance, done.step, done.tolerance,
                                             max(t.first_reach, t.tolerance + t.error))
                    self.established += 1
                elif done.how == "near-kink":
                    self.kink_distance = max(self.kink_distance, 32 * done.distance)
            self.ledger.count(stage, done.evals)
            if straddle and done.how == "failing":
                if np.isfinite(done.value) and np.isfinite(done.tolerance):  # neither slope: it fails on one
                    out[k] = DirectionalTest(d, done.value, t.analytical, done.tolerance, done.step, done.tolerance,
                                             max(t.first_reach, t.tolerance + t.error))
                else:  # a side no step resolves: undecided
                    out[k] = DirectionalTest(d, t.numerical, t.analytical, t.tolerance + t.error, t.step,
                                             t.bound, max(t.first_reach, t.tolerance + t.error))
                    self.coarse.append((d, float("inf")))
            if done.how in SETTLED or done.how == "between":
                out[k] = DirectionalTest(d, done.value, t.analytical, done.tolerance, done.step, done.tolerance,
                                         max(t.first_reach, t.tolerance + t.error))
                if coarse(done, t.tolerance):
                    self.coarse.append((d, float("nan") if done.how == "between" else done.tolerance / t.tolerance))
                else:
                    self.settled.append((d, done.how))
        return out

    @staticmethod
    def _kink_could_explain(t: DirectionalTest) -> bool:
        """Whether a failing single entry's mismatch is one a kink its stencil crossed could make (within
        twice its :attr:`~DirectionalTest.kink_reach`): a kink the whole-vector stencils never crossed can sit
        within an entry's own step, and would accuse the entry.  A wrong gradient on a smooth cost fails by
        far more than its one-sided slopes differ (their jump is ``|J''| h``)."""
        return t.direction.hi - t.direction.lo == 1 and t.error <= 2 * t.kink_reach + t.tolerance

    def _moves_on_kink(self, t: DirectionalTest, stage: str) -> bool:
        """Whether ``t``'s stencil moves a unit that sits exactly on a kink at the point, or one within
        ``1 / NEAR_KINK`` of the step from a kink (two forward passes each; the point's own sides come from its
        recorded activations).  A kink at a distance ``d`` along the direction shifts a central difference from
        the mean of the slopes by ``K d / (2 h)`` only (``K``: the slopes' jump): far inside the step, agreeing
        with the mean proves as little as on the kink."""
        assert self.sides is not None
        if self._at is None:
            self._at = np.asarray(self.sides(self.subject.x0))
        at = self._at
        on_kink = at == 0
        d = t.direction
        line = line_sides(self.sides, self.x, d.lo, d.hi, d.u)
        if on_kink.any():
            self.ledger.count(stage, 2)
            if moves_off(line, t.step, at, on_kink):
                return True
        self.ledger.count(stage, 2)
        return moves_off(line, t.step / NEAR_KINK, at)

    def taylor(self, d: Direction, mismatch: float | None = None) -> dict[str, Any]:
        """Fit the slope of the Taylor remainder along ``d`` (see :func:`taylor_remainder`)."""
        out = taylor_remainder(self.evaluator, self.x, self.a, d, mismatch)
        self.ledger.count("taylor", len(out["all_h"]))
        return out


def detectable(first: list[DirectionalTest], size: int) -> NDArray:
    """Per entry, the smallest error of that entry alone that one of the whole-vector directions detects:
    ``min_k (tau_k + |n_k - a_k|) / |u_kj|`` (``inf`` where every direction misses the entry), with the first
    estimate's reach where a second look replaced it (an error has to fail the first to get the second)."""
    out = np.full(size, np.inf)
    for t in first:
        with np.errstate(divide="ignore"):
            out = np.minimum(out, max(t.tolerance + t.error, t.first_reach) / np.abs(t.direction.u))
    return out


#: A directional check's callback: ``progress(stage, evaluations)``.
Progress = Callable[[str, int], None]


@frozen(eq=False)
class Measured:
    """What the directional tests found: the whole-vector tests, each block's own (only when those failed),
    the localized entries, the blocks whose mismatch was too spread to localize, the Taylor fit along the
    most telling direction, and the failing whole-vector directions measured across scales."""

    first: list[DirectionalTest]
    block_tests: dict[str, list[DirectionalTest]]
    leaves: list[DirectionalTest]
    spread: list[str]
    taylor: dict[str, Any] | None = None
    scales: tuple[Any, ...] | None = None

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.first) and all(t.passed for ts in self.block_tests.values() for t in ts)


#: A block that the whole-vector directions resolve only to this fraction of its own share of them
#: (:func:`block_reach`) gets a test of its own, along its gradient: a block-wide error of a few percent of a
#: block whose gradient is small against the cost's noise would pass the whole-vector directions unseen.
BLOCK_REACH = 1e-2


def block_reach(first: list[DirectionalTest], a: NDArray, lo: int, hi: int) -> float:
    """The smallest relative error of the block ``[lo, hi)``'s share of the whole-vector directions that one of
    them detects: ``min_k r_k / |g_b . u_kb|``, with ``r_k = tau_k + |n_k - a_k|`` for a passing direction (an
    error must exceed both to fail it; the first estimate's where a second look replaced it) and ``tau_k`` for
    a failing one; ``inf`` for a block whose analytic gradient is zero (its share says nothing: a block never
    written shows only along its own direction) or that no direction moves."""
    g = np.asarray(a[lo:hi], dtype=np.float64)
    if not np.any(g):
        return math.inf  # nothing of its own in u . g: only a test of its own tells a block never written
    out = math.inf
    for t in first:
        d = t.direction
        s, e = max(d.lo, lo), min(d.hi, hi)
        if s >= e:
            continue
        share = abs(float(g[s - lo:e - lo] @ d.u[s - d.lo:e - d.lo]))
        reach = max(t.tolerance + t.error, t.first_reach) if t.passed else t.tolerance
        out = min(out, reach / share) if share > 0 else out
    return out


def measure(tester: Tester, n_directions: int) -> Measured:
    """The directional check's measurements (module docstring): whole-vector directions and, for each block
    they resolve only coarsely (:data:`BLOCK_REACH`), a test along its own gradient; then, when any of them
    fails, the blocks, localization inside the failing ones and the Taylor verdict."""
    P = tester.x.size
    first = tester.tests([tester.direction(0, P) for _ in range(n_directions)], "directions", defer=True)
    # one wrong entry that explains every failing direction: pinned, and the failures rest on its own test
    pinned = pinpoint(tester, first) if any(not t.passed for t in first) else None
    if pinned is None:
        first = tester.settle(first, "directions")
    blocks = tester.subject.layout.blocks
    weak = [b for b in blocks if b.size and len(blocks) > 1 and block_reach(first, tester.a, b.start, b.stop) > BLOCK_REACH]
    own = dict(zip([b.name for b in weak], tester.tests([tester.along_gradient(b.start, b.stop) for b in weak],
                                                        "blocks"))) if weak else {}
    if all(t.passed for t in first) and all(t.passed for t in own.values()):
        return Measured(first, {name: [t] for name, t in own.items()}, [], [])
    if pinned is not None and all(t.passed for t in own.values()):
        return _pinned(tester, first, own, pinned)
    first = tester.settle(first, "directions")  # what the pin left deferred, when it was not enough
    wrong = [t for t in first if not t.passed]
    scales = None if tester.evaluator.exact or not wrong else _across_scales(
        tester, wrong, [f"direction {first.index(t) + 1}" for t in wrong])[0]
    block_tests, leaves, spread = _blocks(tester, own)
    ratio = lambda t: t.error / max(t.tolerance, 1e-300)  # noqa: E731
    # the Taylor verdict along the direction where the mismatch stands out most: a localized entry, else the
    # worst block-restricted direction, else the worst whole-vector one
    candidates = leaves or [t for tests in block_tests.values() for t in tests if not t.passed] or first
    worst = max(candidates, key=ratio)
    taylor = tester.taylor(worst.direction, worst.numerical - worst.analytical)
    return Measured(first, block_tests, leaves, spread, taylor, scales)


def _pinned(tester: Tester, first: list[DirectionalTest], own: dict[str, DirectionalTest],
            leaves: list[DirectionalTest]) -> Measured:
    """The measurements when :func:`~layerkit.check.pinpoint.pinpoint` found the wrong entries: the blocks
    judged by their own tests (the weak blocks') and the entries pinned in them, and the verdicts of steps along
    the entries themselves, where the mismatch stands out most.  On the subject's own cost, one wide ladder
    of steps serves both: the central differences across scales and, from its plus side, the Taylor fit."""
    layout = tester.subject.layout
    block_tests = {name: [t] for name, t in own.items()}
    ratio = lambda t: t.error / max(t.tolerance, 1e-300)  # noqa: E731
    k = max(range(len(leaves)), key=lambda i: ratio(leaves[i]))
    worst = leaves[k]
    if tester.evaluator.exact:
        return Measured(first, block_tests, leaves, [], tester.taylor(worst.direction, worst.numerical - worst.analytical))
    scales, (steps, d, noise) = _across_scales(tester, leaves, [layout.label(t.direction.lo) for t in leaves])
    taylor = taylor_fit(steps[:WIDE, k], d[:WIDE, k], noise[:WIDE, k], worst.analytical, tester.eps,
                        worst.numerical - worst.analytical)
    return Measured(first, block_tests, leaves, [], taylor, scales)


def _across_scales(tester: Tester, tests: list[DirectionalTest], labels: list[str]) -> tuple[tuple[Any, ...], Ladder]:
    """The failing ``tests`` (named ``labels``) measured across a wide range of steps on the subject's own
    cost: ``(Scales, labels, numerical, analytical)`` for the verdict of
    :func:`~layerkit.check.verdicts.scales_verdict`, and the ladder's evaluations (for a Taylor fit)."""
    line = tester.line([t.direction for t in tests], excess=float(tester.evaluator.noise_excess))
    analytical = np.array([t.analytical for t in tests])
    numerical = np.array([t.numerical for t in tests])
    ladder = wide_ladder(line)
    tester.ledger.count("scales", 2 * WIDE * len(tests))
    return (across_scales(line, analytical, numerical, ladder, lost=tester.lost), labels, numerical, analytical), ladder


def _blocks(tester: Tester, own: dict[str, DirectionalTest]
            ) -> tuple[dict[str, list[DirectionalTest]], list[DirectionalTest], list[str]]:
    """One test restricted to each block (``own``: those along a weak block's gradient, already measured);
    inside each failing block, localization (a block of one entry is its own leaf); a block whose search
    stopped gets three more directions restricted to it."""
    sized = [b for b in tester.subject.layout.blocks if b.size]
    rest = [b for b in sized if b.name not in own]
    measured = dict(zip([b.name for b in rest], tester.tests([tester.direction(b.start, b.stop) for b in rest],
                                                             "blocks"))) if rest else {}
    per_block = [own[b.name] if b.name in own else measured[b.name] for b in sized]
    block_tests = {b.name: [t] for b, t in zip(sized, per_block)}
    leaves: list[DirectionalTest] = []
    spread: list[str] = []
    for b in [b for b, t in zip(sized, per_block) if not t.passed]:
        if b.size == 1:
            leaves += block_tests[b.name]
            continue
        found, stopped = locate(tester, b)
        leaves += found
        if stopped or not found:  # spread, or nothing the random parts of the block resolve
            spread.append(b.name)
            more = [tester.gradient_part(b.start, b.stop) if b.name in own else tester.direction(b.start, b.stop)
                    for _ in range(3)]
            block_tests[b.name] += tester.tests(more, "blocks")
    return block_tests, leaves, spread


def report(measured: Measured, tester: Tester, options: Any, base: Baseline, evaluators: Any,
           ledger: Ledger) -> Report:
    """The report of a directional check: localized entries measured, every other entry's tolerance its
    :func:`detectable` error, blocks judged by their own directions, the summary numbers those of the
    whole-vector directions; then the kink findings and the verdicts, and the ledger written in."""
    s = tester.subject
    x, layout, first = s.x0, s.layout, measured.first
    numerical = np.full(x.size, np.nan)
    tolerance = detectable(first, x.size)
    seen = np.zeros(x.size, dtype=bool)
    for t in measured.leaves:
        j, u = t.direction.lo, float(t.direction.u[0])
        numerical[j], tolerance[j], seen[j] = t.numerical / u, t.tolerance / abs(u), True
    evidence = DirectionalEvidence(
        n_directions=len(first), tests=tuple(t.record(x) for t in first),
        block_tests={name: tuple(t.record(x, keep=True) for t in tests) for name, tests in measured.block_tests.items()},
        localized=tuple(layout.label(t.direction.lo) for t in measured.leaves), spread_blocks=tuple(measured.spread),
        evaluations=dict(ledger.evals), taylor=measured.taylor, scales=measured.scales)
    setting = Setting(options.strategy.name, float(np.median([t.step for t in first])),
                      "auto" if options.auto_step else "fixed", x.dtype, layout, x, base.f0, s.kind, s.lambda_, s.m,
                      "directional", evaluators.evaluator, evaluators.report_noise())
    comparison = Comparison(numerical, base.a, 0.0, tolerance, measured=seen, blocks=_summaries(measured, layout, seen),
                            passed=measured.passed, directional=evidence)
    out = Report.build(setting, comparison, n_evals=ledger.spent, seconds=time.perf_counter() - base.started,
                       top=options.top)
    out = _kink_findings(out, tester)
    if tester.over_budget:
        out = evolve(out, notes=out.notes + (
            f"localization stopped at the evaluation budget ({tester.budget}): the entries named are those found "
            "by then; the failing blocks stand",))
    nf = np.array([t.numerical for t in first])
    af = np.array([t.analytical for t in first])
    err = np.abs(nf - af)
    out = evolve(out, relative_difference=relative_difference(nf, af), max_abs_error=float(err.max(initial=0.0)),
                 max_rel_error=float(np.max(err / np.maximum(np.maximum(np.abs(nf), np.abs(af)), 1e-300),
                                             initial=0.0)))
    _verdicts(out, tester, base, evaluators, ledger)
    return ledger.finish(out)


def _summaries(measured: Measured, layout: Any, seen: NDArray) -> tuple[BlockSummary, ...]:
    """Each block judged by the directions restricted to it and the entries localized in it (a block
    passes when there were none); its numbers are those of its directions, else of its entries."""
    out = []
    for b in layout.blocks:
        tests = measured.block_tests.get(b.name)
        mine = [t for t in measured.leaves if b.start <= t.direction.lo < b.stop]
        ok = (True if tests is None else all(t.passed for t in tests)) and not mine
        tests = tests or mine or None
        nb = np.array([t.numerical for t in tests]) if tests else np.zeros(0)
        ab = np.array([t.analytical for t in tests]) if tests else np.zeros(0)
        n_bad = int(np.sum(seen[b.slice])) if not ok else 0
        out.append(BlockSummary(b.name, b.shape, relative_difference(nb, ab) if tests else 0.0,
                                float(np.max(np.abs(nb - ab), initial=0.0)), n_bad, ok))
    return tuple(out)


def _kink_findings(out: Report, tester: Tester) -> Report:
    """``nonsmooth`` for the directions settled without crossing a kink (first), and an inconclusive
    ``precision-limited`` for those settled only coarsely (last)."""
    layout = tester.subject.layout
    if tester.settled:
        n = len(tester.settled)
        spans = sorted({(d.lo, d.hi) for d, _ in tester.settled})
        names = ", ".join(layout.label(lo) if hi - lo == 1 else f"a direction over {layout.label(lo)}.."
                          f"{layout.label(hi - 1)}" for lo, hi in spans[:4]) + (" ..." if len(spans) > 4 else "")
        smaller = sum(how == "own-piece" for _, how in tester.settled)
        near = sum(how == "near-kink" for _, how in tester.settled)
        blocks = tuple(dict.fromkeys(layout.block_of(lo).name for lo, _ in spans))
        tally = Tally(smaller, n - smaller - near, near, tester.kink_distance, tester.sides is not None)
        out = evolve(out, findings=(nonsmooth_finding("direction", names, tally, blocks, {"directions": n}),)
                     + out.findings)
    if tester.coarse:
        ratios = [r for _, r in tester.coarse if np.isfinite(r)]
        worst = max(ratios) if ratios else None
        blocks = tuple(dict.fromkeys(layout.block_of(d.lo).name for d, _ in tester.coarse))
        out = evolve(out, passed=False, findings=out.findings + (
            coarse_finding("direction", len(tester.coarse), [], worst, blocks, {}),))
    return out


def _verdicts(out: Report, tester: Tester, base: Baseline, evaluators: Any, ledger: Ledger) -> None:
    """An unresolved pass (no direction resolves its own derivative, or a zero gradient on a blurred cost)
    and a failure the wide range of steps contradicts are inconclusive (:mod:`layerkit.check.verdicts`)."""
    s = tester.subject
    d = out.directional
    assert d is not None
    cause = resolution_cause(evaluators.noise, False, s.x0.dtype)
    everything = tuple(b.name for b in s.layout.blocks)
    if out.passed:
        a = max((abs(t.analytical) for t in d.tests), default=0.0)
        floor_value = floor(base.a, tester.rounding_dtype)
        if a <= floor_value:
            n = max((abs(t.numerical) for t in d.tests if math.isfinite(t.numerical)), default=0.0)
            tiny = below_floor(max(a, float(np.max(np.abs(base.a), initial=0.0))), n, floor_value, s.x0.dtype)
            if tiny is not None:
                ledger.fail(unresolved(everything, tiny[0], tiny[1], TINY_CAUSE))
                return
            zero = unresolved_zero(max((t.bound for t in d.tests), default=0.0), "direction", evaluators.noise,
                                   s.x0, base.cost)
            if zero is not None:
                ledger.fail(unresolved(everything, zero[0], zero[1], cause))
            return
        noisy = evaluators.noise is not None and evaluators.noise.measured \
            and evaluators.noise.excess > EXCESS_THRESHOLD
        found = unresolved_directions(d.tests) or unresolved_blocks(d.block_tests, s.layout, base.a, noisy)
        if found is None and not tester.options.auto_step:
            found = coarse_fixed_directions(d.tests, float(tester.options.strategy.step))
        if found is not None:
            ledger.fail(unresolved(everything, found[0], found[1], cause))
    elif d.scales is not None and not tester.established:
        why = scales_verdict(*d.scales)
        if why:
            ledger.fail(undecided(tuple(b.name for b in s.layout.blocks if b.size), why, s.x0.dtype))
