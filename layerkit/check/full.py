"""The full check: every entry's numerical derivative against the analytic gradient.

Its steps, after the pipeline's baseline and choice of evaluator (:mod:`layerkit.check.pipeline`):

1. :func:`estimate` -- the strategy's estimate of every entry, and every tolerance from the estimate's own
   error (:mod:`layerkit.check.tolerance`), plus the analytic gradient's rounding where the evaluator does
   not count it, and never tighter than the complex step's confirmation could resolve;
2. :func:`second_look` -- the failing entries measured again (:mod:`layerkit.check.second_look`), within a
   budget of about twice the first pass when the cost is re-evaluated;
3. :func:`settle_kinks` -- failing entries whose stencil crossed a kink, and passing ones whose stencil
   straddles a kink the point sits on (:func:`_straddling`), measured without crossing one
   (:mod:`layerkit.check.kinks`);
4. :func:`report` -- the comparison, and the verdicts of :mod:`layerkit.check.verdicts` when the cost was
   re-evaluated (an unresolved gradient, a mismatch the error model cannot establish).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from attrs import define, evolve, field
from numpy.typing import NDArray

from ..numerics import machine_eps
from .baseline import Baseline
from .engine import Evaluators
from .kinks import (
    MAX_LINES,
    SETTLED,
    Tally,
    at_kink_finding,
    coarse,
    coarse_finding,
    coordinate_delta,
    kinked_sides,
    line_sides,
    moves_off,
    nonsmooth_finding,
    rough_cost,
    settle,
    straddle_finding,
    undeclared,
)
from .ledger import Ledger
from .methods import slope_jump
from .options import CheckOptions
from .refine import ESTABLISHED, WIDE, across_scales, wide_ladder
from .report import Comparison, Report, Setting
from .second_look import discredits, look_again
from .subjects import Subject
from .tolerance import SAFETY, floor, tolerances
from .verdicts import (
    TINY_CAUSE,
    below_floor,
    coarse_fixed_step,
    misjudged,
    resolution_cause,
    scales_verdict,
    undecided,
    unresolved,
    unresolved_entries,
    unresolved_zero,
)

#: Failing entries whose estimates are compared across a wide range of steps (20 evaluations each).
MAX_SCALES = 8


@define
class Entries:
    """The estimate of every entry and its tolerance (``rtol max(|n|, |a|) + atol``), as the safeguards
    refine it: ``model_rtol`` and ``model`` are the error model's own parts (what the estimate resolves,
    without the caller's overrides), ``steps`` the step of each entry, ``error`` Richardson's estimate."""

    values: NDArray
    steps: NDArray
    rtol: float
    atol: NDArray
    model_rtol: float
    model: NDArray
    error: NDArray | None
    #: Whether the first estimate's error is mostly truncation (the cure of an unresolved check differs).
    truncation_bound: bool = False
    #: Entries measured again (second look or kink settling), and the first estimate's reach at those.
    refined: NDArray | None = None
    first_reach: NDArray | None = None
    #: Of the second look: entries a quarter step confirmed, measured over the ladder, and agreeing there.
    looked: dict[str, int] = field(factory=lambda: {"confirmed": 0, "measured": 0, "agree": 0})
    #: Entries whose mismatch a kink test established at a step where the cost is smooth (no other
    #: evidence about the cost's differences makes them undecided).
    established: list[int] = field(factory=list)
    #: The first estimate's jumps of the one-sided slopes and their rounding (:attr:`Estimate.jumps`).
    jumps: tuple[NDArray, NDArray] | None = None

    def tolerance(self, a: NDArray) -> NDArray:
        with np.errstate(invalid="ignore"):
            return self.rtol * np.maximum(np.abs(self.values), np.abs(a)) + self.atol

    def reach(self) -> NDArray:
        if self.first_reach is None:
            self.first_reach = np.zeros(self.values.size)
        return self.first_reach

    def mark(self, entries: NDArray) -> None:
        if self.refined is None:
            self.refined = np.zeros(self.values.size, dtype=bool)
        self.refined[entries] = True


def estimate(probe: Any, options: CheckOptions, base: Baseline, evaluators: Evaluators,
             resolution: NDArray | float) -> Entries:
    """Step 1 (module docstring); ``resolution`` is what the complex step's confirmation resolved (0 for
    other methods)."""
    strategy, a = options.strategy, base.a
    dtype = base.rounding_dtype(evaluators.subject.x0.dtype)
    est = strategy.estimate(probe)
    if est.noise is None and options.traits.own_tolerances:  # a user strategy with its own model
        scale = float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0))
        rtol, atol = strategy.tolerances(evaluators.subject.x0.dtype, base.cost, scale, est.step)
    else:
        rtol, atol = tolerances(est, a, dtype)
        atol = np.maximum(atol + evaluators.analytic_rounding(probe), resolution)
        # the complex step is no more precise than the real differences that confirmed the cost analytic
        if est.measured and est.model is not None and getattr(evaluators.subject, "kinked", None):
            atol = _kink_share_removed(est, a, dtype, rtol, atol, evaluators.analytic_rounding(probe), resolution)
    model = np.broadcast_to(atol, a.shape).astype(np.float64)
    in_force = np.broadcast_to(atol if options.atol is None else options.atol, a.shape).astype(np.float64)
    entries = Entries(np.asarray(est.values, dtype=np.float64).copy(), np.asarray(est.step, dtype=np.float64),
                      rtol if options.rtol is None else options.rtol, in_force, rtol, model,
                      None if est.error is None else np.asarray(est.error, dtype=np.float64).copy())
    entries.jumps = est.jumps
    if est.noise is not None and est.truncation is not None:
        with np.errstate(invalid="ignore"):
            entries.truncation_bound = bool(np.nansum(est.truncation) > np.nansum(est.noise))
    return entries


def _kink_share_removed(est: Any, a: NDArray, dtype: Any, rtol: float, atol: NDArray, rounding: Any,
                        resolution: NDArray | float) -> NDArray:
    """A cost with kinks, on an exact evaluator: the measured truncation (the change of the estimate from
    ``h`` to ``h / 2``) also holds the share of any kink between the two stencils, an error that a smaller
    step removes rather than a term ``h^p`` the estimate carries.  An entry that passes only by that
    allowance, and would fail with the truncation model's, gets the model's tolerance: it fails now, and the
    second look and the kink settling measure it again without crossing a kink (a tolerance too tight costs
    evaluations; one inflated by a kink would pass a wrong gradient)."""
    _, model_atol = tolerances(evolve(est, truncation=est.model, measured=False), a, dtype)
    model_atol = np.maximum(model_atol + rounding, resolution)
    with np.errstate(invalid="ignore"):
        err = np.abs(np.asarray(est.values, dtype=np.float64) - a)
        big = rtol * np.maximum(np.abs(np.asarray(est.values, dtype=np.float64)), np.abs(a))
        by_kink = (err <= big + atol) & (err > big + model_atol)
    return np.where(by_kink, model_atol, atol)


def second_look(entries: Entries, probe: Any, options: CheckOptions, base: Baseline, evaluators: Evaluators,
                ledger: Ledger) -> Entries:
    """Step 2: the failing entries measured again (:mod:`layerkit.check.second_look`), when the step was the
    automatic one (a step the user fixed is the step the report is about) and the method has real
    differences.  A re-evaluated cost gets a budget of about twice the first pass (16 evaluations per
    entry), spent on the entries that fail by least; when at least half of those turn out to agree with the
    analytic gradient, the first step's estimates are not to be trusted anywhere and every other failing
    entry is measured again too (a too tight tolerance costs evaluations, not a false alarm)."""
    if options.traits.complex_step or not options.auto_step:
        return entries
    a = base.a
    with np.errstate(invalid="ignore"):
        err = np.abs(entries.values - a)
        tol = entries.tolerance(a)
        badness = np.where(np.isfinite(err), err / np.maximum(tol, np.finfo(float).tiny), np.inf)
    # a non-finite analytic entry fails whatever the estimate: nothing to measure again
    failing = np.flatnonzero(~(badness <= 1) & np.isfinite(a))
    if not failing.size:
        return entries
    budget = failing.size if probe.cheap else max(16, int(2 * probe.n_evals) // 16)
    order = failing[np.argsort(badness[failing], kind="stable")]
    entries.refined = np.zeros(entries.values.size, dtype=bool)
    entries.first_reach = np.zeros(entries.values.size)
    seen = entries.looked
    for k, chosen in enumerate((order[:budget], order[budget:])):
        if not chosen.size:
            continue
        if k == 1 and not 2 * seen["agree"] >= seen["measured"] + seen["confirmed"]:
            break  # the sample confirmed the first step: the rest of the failures stand
        _look_again(entries, chosen, probe, options, base, evaluators)
    looked = seen["confirmed"] + seen["measured"]
    if seen["confirmed"] == looked:
        ledger.note(f"{looked} failing entr{'y was' if looked == 1 else 'ies were'} measured again at a quarter "
                    "of the step: the same values (the step is not the cause)")
        entries.refined = None
        return entries
    ledger.note(
        f"{looked} entr{'y' if looked == 1 else 'ies'} failed at the first step and "
        f"{'was' if looked == 1 else 'were'} measured again: {seen['agree']} agree with the analytic "
        "gradient over a ladder of steps (the first step's estimate was off at those)"
        + (f", {seen['confirmed']} gave the same value at a quarter of the step" if seen["confirmed"] else "")
        + ("" if failing.size == looked else
           f"; {failing.size - looked} more failing entries were not measured again (budget)"))
    return entries


def _look_again(entries: Entries, chosen: NDArray, probe: Any, options: CheckOptions, base: Baseline,
                evaluators: Evaluators) -> None:
    """The second look at the failing entries ``chosen``: their estimates, tolerances and reach replaced
    where the new estimate discredits the first, and the counts of :attr:`Entries.looked` updated."""
    a = base.a
    with np.errstate(invalid="ignore"):
        first = entries.rtol * np.maximum(np.abs(entries.values[chosen]), np.abs(a[chosen])) + entries.atol[chosen]
    steps = entries.steps[chosen]
    relook = look_again(probe.subset(chosen), entries.values[chosen], steps, first, confirm=bool(np.all(steps > 0)))
    entries.looked["confirmed"] += int(np.sum(relook.confirmed))
    est = relook.estimate
    if est is None:
        return
    chosen, first = chosen[relook.rest], first[relook.rest]
    m_rtol, m_atol = tolerances(est, a[chosen], base.rounding_dtype(evaluators.subject.x0.dtype), scale=a)
    rounding = evaluators.analytic_rounding(probe)
    if not np.isscalar(rounding):
        m_atol = m_atol + np.asarray(rounding)[chosen]
    r_rtol = m_rtol if options.rtol is None else options.rtol
    r_atol = m_atol if options.atol is None else np.full(chosen.size, options.atol)
    big = np.maximum(np.abs(est.values), np.abs(a[chosen]))
    with np.errstate(invalid="ignore"):
        ok = np.abs(est.values - a[chosen]) <= r_rtol * big + r_atol
    replaced = discredits(est.values, entries.values[chosen], first)
    take = chosen[replaced]
    entries.mark(take)
    with np.errstate(invalid="ignore"):
        entries.reach()[take] = (first + np.abs(entries.values[chosen] - a[chosen]))[replaced]
    entries.values[take] = est.values[replaced]
    entries.atol[take] = (r_atol + (r_rtol - entries.rtol) * big)[replaced]
    entries.model[take] = (m_atol + (m_rtol - entries.model_rtol) * big)[replaced]
    if entries.error is not None and est.truncation is not None:
        entries.error[take] = est.truncation[replaced]
    entries.looked["measured"] += int(chosen.size)
    entries.looked["agree"] += int(np.sum(ok & replaced))


def settle_kinks(entries: Entries, probe: Any, subject: Subject, base: Baseline, evaluators: Evaluators,
                 ledger: Ledger) -> Entries:
    """Step 3: failing entries of a subject with kinked layers whose stencil crosses a kink, and passing ones
    that agree only with the mean of the slopes of a kink the point sits on (:func:`_straddling`), are
    measured again without crossing one (:mod:`layerkit.check.kinks`), within :data:`MAX_LINES` lines,
    failing ones first; those that then agree pass, with a ``nonsmooth`` finding; those settled only coarsely,
    or passing ones left unmeasured, make the check inconclusive; a passing one that matches neither slope
    fails on the one-sided estimate."""
    sides = kinked_sides(subject)
    a = base.a
    steps = np.abs(entries.steps).reshape(-1)
    if (sides is None and subject.known_analytic) or steps.size != entries.values.size:
        return entries
    tol = entries.tolerance(a)
    with np.errstate(invalid="ignore"):
        failing = np.flatnonzero(~(np.abs(entries.values - a) <= tol) & np.isfinite(a))
    with subject.session():
        straddling = _straddling(entries, probe, subject, a, tol, ledger) if sides is not None else failing[:0]
    if not failing.size and not straddling.size:
        return entries
    rounding = evaluators.analytic_rounding(probe)
    extra = (np.zeros(entries.values.size) if np.isscalar(rounding) else np.asarray(rounding)) \
        + entries.model_rtol * np.abs(a)
    settled: dict[int, Any] = {}
    at_kink: list[int] = []
    unsettled: list[int] = []
    with subject.session():
        if sides is not None:
            lines = failing[:MAX_LINES]
            examined = straddling[:max(0, MAX_LINES - lines.size)]
            unsettled += [int(j) for j in straddling[examined.size:]]
            for j in np.concatenate([lines, examined]):
                j = int(j)
                before = probe.n_evals
                out = settle(line_sides(sides, subject.x0, j, j + 1, np.ones(1)), coordinate_delta(probe, j),
                             2 * float(steps[j]), float(a[j]), float(extra[j]))
                ledger.count("kinks", out.evals - (probe.n_evals - before))  # the probe counts its own
                if out.how in SETTLED or out.how == "between":
                    settled[j] = out
                elif j in examined and out.how == "failing":
                    if np.isfinite(out.value) and np.isfinite(out.tolerance):
                        # a pass only as the mean of two slopes, and neither slope agrees: it fails on the
                        # one-sided estimate that resolved best
                        entries.values[j], entries.atol[j], entries.model[j] = out.value, out.tolerance, out.tolerance
                        entries.mark(np.array([j]))
                        entries.established.append(j)  # measured on the point's side, where the cost is smooth
                    else:
                        unsettled.append(j)
        elif failing.size and not rough_cost(evaluators.noise):
            settled, at_kink = _undeclared(entries, failing, probe, steps, a, tol, extra)
    if settled:
        _record_kinks(entries, settled, tol, subject, base, ledger)
    if unsettled:
        layout = subject.layout
        ledger.fail(straddle_finding(len(unsettled), [layout.label(j) for j in unsettled],
                                     tuple(dict.fromkeys(layout.block_of(j).name for j in unsettled)),
                                     {"entries": unsettled}))
    if at_kink:
        layout = subject.layout
        ledger.inform(at_kink_finding("entry", ", ".join(layout.label(j) for j in at_kink[:5]), len(at_kink),
                                      tuple(dict.fromkeys(layout.block_of(j).name for j in at_kink)),
                                      {"entries": at_kink}))
    return entries


def _straddling(entries: Entries, probe: Any, subject: Subject, a: NDArray, tol: NDArray,
                ledger: Ledger) -> NDArray:
    """Passing entries whose stencil straddles a kink on the point or near it, with a jump that matters.

    A unit exactly on a kink at ``x0`` (an input at ReLU's 0: a zero bias on a zero patch, say) makes the
    cost's one-sided slopes along the entries that move it differ by a jump ``K`` that does not shrink with
    the step; a central difference there is their mean, whatever the step (so is the second look's ladder of
    central differences), and an analytic value that agrees with the mean is neither slope once
    ``|K| > 2 tol`` (a right one, one of the slopes, is ``|K| / 2`` from the mean and fails first).  The jump
    of the one-sided slopes at ``h`` is ``s(h) = K + h J''``, so ``K = 2 s(h / 2) - s(h)``
    (:attr:`~layerkit.check.methods.Estimate.jumps`).  A kink at a distance ``d`` from the point along the
    entry is the same case while ``d`` is far below every step measured: the jump is then ``K (1 - d / h)``
    at ``h``, and its part that does not shrink ``K (1 - 3 d / h)`` (a right derivative 1e-9 from ReLU's kink,
    measured at 6e-6, matches the mean of the slopes on every rung of the second look's ladder).

    On an estimate that measured at ``h`` and ``h / 2`` (the engine's), ``K`` is at hand for every entry.
    For the entries the second look measured again, those whose stencil moves a kinked unit to another side
    are found from the kinked layers' sides (two forward passes per entry); for a first estimate at ``h``
    alone (a re-evaluated cost), those that move a unit sitting exactly on a kink (a block at a time first:
    a block whose entries all moved at once move none leaves none; then two forward passes per entry of the
    other blocks).  Their jumps at ``h / 2`` are then measured (two evaluations each).  Left alone: a first
    estimate of a re-evaluated cost whose step crosses a kink far inside it, off the point (finding it would
    cost two forward passes per passing entry)."""
    none = np.zeros(0, dtype=np.int64)
    if entries.values.size != a.size or (entries.jumps is None and entries.refined is None):
        return none
    with np.errstate(invalid="ignore"):
        ok = (np.abs(entries.values - a) <= tol) & np.isfinite(a)
    refined = np.zeros(a.size, dtype=bool) if entries.refined is None else entries.refined
    J = None if entries.jumps is None else entries.jumps[0]
    at_hand = np.flatnonzero(ok & ~refined) if J is not None and J.shape[0] > 1 else none
    hits, K = _kink_part(entries, probe, at_hand, tol)
    # a first estimate without jumps is one-sided (a forward difference: one of the slopes itself); with
    # jumps at h alone, every passing entry is a candidate
    again = np.flatnonzero(ok & refined)
    first = np.flatnonzero(ok & ~refined) if J is not None and J.shape[0] == 1 else none
    if not hits.size and not again.size and not first.size:
        return none
    at = np.asarray(subject.kink_sides(subject.x0))
    steps = np.abs(entries.steps).reshape(-1)
    # measured again: the ladder's steps may have crossed a kink anywhere within them; a first estimate at
    # one step is tested only when some unit sits on a kink (a block at a time first)
    moved = _crossing(subject, again, steps, at, ledger)
    if first.size and np.any(at == 0):
        moved = np.concatenate([moved, _moving_on_kink(subject, first, steps, at, ledger)])
    # measured at no less than a central difference's step: a forward difference's rounds too much in float32
    x0 = np.abs(np.asarray(subject.x0, dtype=np.float64))
    wide = np.maximum(steps, machine_eps(subject.x0.dtype) ** (1 / 3) * np.maximum(1.0, x0))
    more, K2 = _kink_part(entries, probe, moved, tol, measure=refined | (wide > steps), steps=wide)
    hits, K = np.concatenate([hits, more]), np.concatenate([K, K2])
    order = np.argsort(-(K / np.maximum(tol[hits], np.finfo(float).tiny)), kind="stable")
    return hits[order]


def _crossing(subject: Subject, candidates: NDArray, steps: NDArray, at: NDArray, ledger: Ledger,
              units: NDArray | None = None) -> NDArray:
    """The ``candidates`` whose step ``+-steps[j]`` moves some kinked unit (of ``units``, a mask; all by
    default) to another side than its side at ``x0`` (``at``; 0 on a kink): up to two forward passes per
    candidate (the ends of its stencil)."""
    x0 = subject.x0
    mine = at if units is None else at[units]
    out = []
    for j in candidates:
        line = line_sides(subject.kink_sides, x0, int(j), int(j) + 1, np.ones(1))
        for sign in (1.0, -1.0):
            ends = line(sign * float(steps[j]))
            if ends is not None:
                ledger.count("kinks", 1)
                if np.any((ends if units is None else ends[units]) != mine):
                    out.append(int(j))
                    break
    return np.asarray(out, dtype=np.int64)


def _moving_on_kink(subject: Subject, candidates: NDArray, steps: NDArray, at: NDArray, ledger: Ledger) -> NDArray:
    """The ``candidates`` whose step ``+-steps[j]`` moves a unit off the kink it sits on (``at == 0``), found a
    block at a time (every candidate of the block moved at once, with random signs: none of them moves a unit
    that the sum leaves on its kink, but for an exact cancellation), then an entry at a time
    (:func:`_crossing` over those units)."""
    x0, layout = subject.x0, subject.layout
    on = at == 0
    rng = np.random.default_rng(0)
    out: list[NDArray] = []

    def moves(theta: NDArray) -> bool:
        ledger.count("kinks", 1)
        return bool(np.any(np.asarray(subject.kink_sides(theta))[on] != 0))

    for block in layout.blocks:
        mine = candidates[(candidates >= block.start) & (candidates < block.stop)]
        if not mine.size:
            continue
        signs = rng.choice([-1.0, 1.0], mine.size)
        theta = np.array(x0, copy=True)
        theta[mine] = (theta[mine] + signs * steps[mine]).astype(theta.dtype)
        if not moves(theta) and not moves(2 * x0 - theta):
            continue
        out.append(_crossing(subject, mine, steps, at, ledger, on))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _kink_part(entries: Entries, probe: Any, chosen: NDArray, tol: NDArray, measure: NDArray | None = None,
               steps: NDArray | None = None) -> tuple[NDArray, NDArray]:
    """Of the entries ``chosen``, those whose one-sided slopes jump by a part ``K`` above ``2 tol`` that does
    not shrink with the step (:func:`_straddling`), and that part less its rounding: from the estimate's
    jumps at ``h`` and ``h / 2``; with ``measure`` (per entry: whether the estimate's jumps at ``h`` do not
    serve), the jumps at ``steps / 2`` are measured now (two evaluations per entry), and at ``steps`` too
    where ``measure`` says so or the estimate gave none."""
    if not chosen.size:
        return chosen, np.zeros(0)
    jumps = entries.jumps
    if measure is None:
        assert jumps is not None
        s1, r1 = jumps[0][0][chosen], SAFETY * jumps[1][0][chosen]
        s2, r2 = jumps[0][1][chosen], SAFETY * jumps[1][1][chosen]
    else:
        assert steps is not None
        sub = probe.subset(chosen)
        h = steps[chosen]
        s2, r2 = _jumps_at(sub, sub.snap(h / 2))
        again = np.arange(chosen.size) if jumps is None else np.flatnonzero(measure[chosen])
        s1 = np.zeros(chosen.size) if jumps is None else jumps[0][0][chosen]
        r1 = np.zeros(chosen.size) if jumps is None else SAFETY * jumps[1][0][chosen]
        if again.size:
            sa = probe.subset(chosen[again])
            s1[again], r1[again] = _jumps_at(sa, sa.snap(h[again]))
    with np.errstate(invalid="ignore"):
        K = np.abs(2 * s2 - s1) - (2 * r2 + r1)
        hit = K > 2 * tol[chosen]
    return chosen[hit], K[hit]


def _jumps_at(sub: Any, h: NDArray) -> tuple[NDArray, NDArray]:
    """``D+ - D-`` at steps ``h`` on the probe ``sub``, and its rounding bound (times the safety factor)."""
    st = np.stack([h, sub.snap(-h)])
    jump, rounding = slope_jump(st, sub.delta(st), sub.noise(st))
    return jump, SAFETY * rounding


#: Failing lines in a row found smooth (their failure stands) after which no more are tested for a kink the
#: cost does not declare: the check fails on them whatever the others show.
CONFIRMED_FAILURES = 4


def _undeclared(entries: Entries, failing: NDArray, probe: Any, steps: NDArray, a: NDArray, tol: NDArray,
                extra: NDArray) -> tuple[dict[int, Any], list[int]]:
    """Failing entries of a cost that declares no kinks, worst first, tested for one near the point
    (:func:`~layerkit.check.kinks.undeclared`).  Returns those settled, and those found sitting on a kink.
    An entry measured again at a step clear of a kink that still fails keeps failing on that estimate."""
    settled: dict[int, Any] = {}
    at_kink: list[int] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        order = failing[np.argsort(-(np.abs(entries.values - a) / tol)[failing], kind="stable")]
    run = 0
    for j in order[:MAX_LINES]:
        j = int(j)
        out = undeclared(coordinate_delta(probe, j), float(steps[j]), float(a[j]), float(extra[j]))  # counted there
        if out.how in SETTLED:
            settled[j], run = out, 0
            continue
        if out.how == "failing":  # smooth at a smaller step, and wrong there: that estimate stands
            entries.values[j], entries.atol[j], entries.model[j] = out.value, out.tolerance, out.tolerance
            entries.mark(np.array([j]))
            entries.established.append(j)
        elif out.how == "failing-at-kink":
            at_kink.append(j)
        run += 1
        if run >= CONFIRMED_FAILURES:
            break
    return settled, at_kink


def _record_kinks(entries: Entries, settled: dict[int, Any], tol: NDArray, subject: Subject, base: Baseline,
                  ledger: Ledger) -> None:
    layout = subject.layout
    entries.mark(np.fromiter(settled, dtype=np.int64))
    reach = entries.reach()
    rough = []
    for j, out in settled.items():
        reach[j] = tol[j] + abs(entries.values[j] - base.a[j])
        if coarse(out, tol[j]):
            rough.append(j)
        entries.values[j], entries.atol[j], entries.model[j] = out.value, out.tolerance, out.tolerance
    if rough:
        ratios = [settled[j].tolerance / tol[j] for j in rough if settled[j].how != "between"]
        worst = max(ratios) if ratios and np.isfinite(max(ratios)) else None
        ledger.fail(coarse_finding("entry", len(rough), [layout.label(j) for j in rough], worst,
                                   tuple(dict.fromkeys(layout.block_of(j).name for j in rough)), {"entries": rough}))
    smooth = [j for j in settled if j not in rough]
    if smooth:
        names = ", ".join(layout.label(j) for j in smooth[:5]) + (" ..." if len(smooth) > 5 else "")
        own = [j for j in smooth if settled[j].how == "own-piece"]
        sided = [j for j in smooth if settled[j].how == "on-kink"]
        near = [j for j in smooth if settled[j].how == "near-kink"]
        distance = max((32 * settled[j].distance for j in near), default=0.0)
        evidence: dict[str, Any] = {"entries": smooth, "own_piece": own, "on_kink": sided}
        if near:
            evidence.update(near_kink=near, distance=distance)
        tally = Tally(len(own), len(sided), len(near), distance, kinked_sides(subject) is not None)
        ledger.inform(nonsmooth_finding("entry", names, tally,
                                        tuple(dict.fromkeys(layout.block_of(j).name for j in smooth)), evidence))


def report(entries: Entries, probe: Any, options: CheckOptions, base: Baseline, evaluators: Evaluators,
           ledger: Ledger) -> Report:
    """Step 4 (module docstring): the report of a full check, its verdicts and the ledger written in."""
    s, strategy = evaluators.subject, options.strategy
    dtype = base.rounding_dtype(s.x0.dtype)
    h0 = strategy.base_step(s.x0.dtype, probe.noise_excess) if options.auto_step else float(strategy.step)
    setting = Setting(strategy.name, h0, "auto" if options.auto_step else "fixed", s.x0.dtype, s.layout, s.x0,
                      base.f0, s.kind, s.lambda_, s.m, "full", evaluators.evaluator, evaluators.noise)
    comparison = Comparison(
        entries.values, base.a, entries.rtol, entries.atol, error_estimate=entries.error, refined=entries.refined,
        first_reach=entries.first_reach if entries.refined is not None else None,
        model_tolerance=entries.model_rtol * np.maximum(np.abs(entries.values), np.abs(base.a)) + entries.model)
    out = Report.build(setting, comparison, n_evals=probe.n_evals + ledger.spent,
                       seconds=time.perf_counter() - base.started, top=options.top)
    _unresolved(out, entries.model - floor(base.a, dtype), entries, evaluators, ledger)
    _undecided(out, probe, entries, base, ledger, s)
    out = evolve(out, n_evals=probe.n_evals + ledger.spent, seconds=time.perf_counter() - base.started)
    return ledger.finish(out)


def _unresolved(rep: Report, bound: NDArray, entries: Entries, evaluators: Evaluators, ledger: Ledger) -> None:
    """A check that found no mismatch is inconclusive when the estimate's error bound is as large as the
    gradient itself (:func:`~layerkit.check.verdicts.unresolved_entries`); a zero gradient is judged by
    :func:`~layerkit.check.verdicts.unresolved_zero`."""
    s, a = evaluators.subject, rep.analytical
    if rep.mismatch.any():
        return
    cause = resolution_cause(evaluators.noise, entries.truncation_bound, s.x0.dtype, evaluators.options.auto_step)
    floor_value = floor(evaluators.base.a, evaluators.base.rounding_dtype(s.x0.dtype))
    if float(np.max(np.abs(a), initial=0.0)) <= floor_value:
        n = np.abs(np.asarray(entries.values, dtype=np.float64))
        tiny = below_floor(float(np.max(np.abs(a), initial=0.0)), float(np.max(n[np.isfinite(n)], initial=0.0)),
                           floor_value, s.x0.dtype)
        if tiny is not None:
            ledger.fail(unresolved(tuple(b.name for b in s.layout.blocks), tiny[0], tiny[1], TINY_CAUSE))
            return
        zero = unresolved_zero(float(np.max(bound, initial=0.0)), "entry", evaluators.noise, s.x0,
                               evaluators.base.cost)
        if zero is not None:
            ledger.fail(unresolved(tuple(b.name for b in s.layout.blocks), zero[0], zero[1], cause))
        return
    fixed = None if evaluators.options.auto_step else coarse_fixed_step(
        s.layout, evaluators.base.a, bound, float(evaluators.options.strategy.step))
    if fixed is not None:
        ledger.fail(unresolved(tuple(fixed[1]["blocks"]), fixed[0], fixed[1], cause))
        return
    weak = unresolved_entries(s.layout, evaluators.base.a, bound, entries.values)
    if weak is None:
        return
    kind, what, evidence = weak
    if kind == "note":
        ledger.note(what)
    else:
        ledger.fail(unresolved(tuple(evidence["blocks"]), what, evidence, cause))


def _undecided(rep: Report, probe: Any, entries: Entries, base: Baseline, ledger: Ledger,
               subject: Subject | None = None) -> None:
    """A mismatch is inconclusive, not a failure, when the check has evidence that finite differences of this
    cost do not measure its derivative (:func:`~layerkit.check.verdicts.misjudged`,
    :func:`~layerkit.check.verdicts.scales_verdict` over up to :data:`MAX_SCALES` failing entries, the worst
    first).  A non-finite analytic entry fails whatever the estimates say."""
    mismatch, a = rep.mismatch, base.a
    if not mismatch.any() or (mismatch & ~np.isfinite(a)).any() or mismatch[entries.established].any():
        return
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.abs(rep.numerical - a) / rep.tolerance
    ratio = np.where(np.isfinite(ratio), ratio, np.inf)
    blocks = tuple(b.name for b in rep.layout.blocks if mismatch[b.slice].any())
    why = misjudged(ratio, mismatch, entries.looked)
    if not why:
        bad = np.flatnonzero(mismatch)
        chosen = bad[np.argsort(-ratio[bad], kind="stable")][:MAX_SCALES]
        # the worst entry first: when the scales establish its mismatch, the verdict over all of them is the
        # same ('' whenever one entry is established), and the other entries' ladders are not needed
        lost = machine_eps(base.rounding_dtype(rep.x.dtype)) * max(abs(base.cost), 1.0)
        scales = _across(probe, chosen[:1], a, rep.numerical, entries, subject, ledger, lost)
        if not scales.established.any() and chosen.size > 1:
            scales = _across(probe, chosen, a, rep.numerical, entries, subject, ledger, lost)
        why = scales_verdict(scales, [rep.layout.label(int(j)) for j in chosen], rep.numerical[chosen], a[chosen])
    if why:
        ledger.fail(undecided(blocks, why, rep.x.dtype))


def _across(probe: Any, chosen: NDArray, a: NDArray, numerical: NDArray, entries: Entries, subject: Subject | None,
            ledger: Ledger, lost: float = 0.0) -> Any:
    """:func:`~layerkit.check.refine.across_scales` over the entries ``chosen``; for a subject that declares
    kinks, without the rungs whose stencil crosses one that the entry's own stencil does not cross (a secant
    across a kink would contradict a mismatch the point's own piece establishes)."""
    sub = probe.subset(chosen)
    sides = None if subject is None else kinked_sides(subject)
    if sides is None or subject is None:
        return across_scales(sub, a[chosen], numerical[chosen], lost=lost)
    real, d, sigma = wide_ladder(sub)
    ladder = (np.array(real, copy=True), np.array(d, copy=True), np.array(sigma, copy=True))  # columns replaced below
    rungs = np.abs(ladder[0][:WIDE].astype(np.float64))  # (WIDE, n), largest first
    at = np.asarray(sides(subject.x0))
    smooth_from = np.zeros(chosen.size, dtype=np.int64)
    steps = np.abs(entries.steps).reshape(-1)
    for k, j in enumerate(chosen):
        line = line_sides(sides, subject.x0, int(j), int(j) + 1, np.ones(1))

        def crosses(t: float) -> bool:
            ledger.count("kinks", 2)
            return moves_off(line, t, at)

        if crosses(float(steps[j])):
            continue  # its own stencil crosses one: the kink safeguards had their say
        lo, hi = 0, WIDE  # the first rung that crosses none; the crossings are nested (a wider stencil crosses
        while lo < hi:  # every kink a narrower one does)
            mid = (lo + hi) // 2
            if crosses(float(rungs[mid, k])):
                lo = mid + 1
            else:
                hi = mid
        smooth_from[k] = lo
    low = np.flatnonzero(smooth_from > WIDE - ESTABLISHED)
    if low.size:  # too few rungs on the point's own pieces: a ladder from the entry's own step down instead
        steps2, d2, sigma2 = wide_ladder(probe.subset(chosen[low]), top=np.asarray(entries.steps)[chosen[low]])
        ladder[0][:, low], ladder[1][:, low], ladder[2][:, low] = steps2, d2, sigma2
        smooth_from[low] = 0
    return across_scales(sub, a[chosen], numerical[chosen], ladder, smooth_from, lost)
