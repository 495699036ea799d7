"""The steps of a check, composed: the mode, then the full or the directional recipe.

:func:`layerkit.api.run_check` reads as the whole algorithm::

    ledger = Ledger()                                        # notes, findings, evaluations by purpose
    base = baseline(subject, ledger)                         # the analytic gradient twice, timed
    evaluators = Evaluators(subject, options, base, ledger)  # the engine or the cost, built and verified once
    mode, budget = choose_mode(subject, options, base, ledger)
    report = full_check(...) or directional_check(...)       # estimate, safeguards, verdicts, report
    report = diagnose(report, ...)                           # the doctor, with a budget of experiments

Each step takes its inputs and returns its results; what it has to say on the side goes into the ledger.
The full and the directional check share every safeguard (second look, kink settling, truncation model,
tolerance, verdicts) and differ only in what they estimate.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ComplexEvaluationError
from . import directional, full
from .applicability import confirm_analytic
from .baseline import Baseline
from .engine import Evaluators, engine_applies
from .kinks import rough_cost
from .ledger import Ledger
from .options import CheckOptions
from .report import Report
from .subjects import Subject

#: ``mode="auto"`` runs a full check when it takes at most this many seconds at the measured time per
#: evaluation, else the directional check within this many seconds' worth of evaluations.
AUTO_SECONDS = 10.0
#: The smallest evaluation budget of the directional check in auto mode.
AUTO_MIN_BUDGET = 150


def choose_mode(subject: Subject, options: CheckOptions, base: Baseline, ledger: Ledger) -> tuple[str, int | None]:
    """The mode, and the directional check's evaluation budget in auto mode.

    ``mode="auto"``: a full check when it costs at most :data:`AUTO_SECONDS` at the measured time per
    evaluation, or at most ``options.budget`` evaluations when the caller fixed them (always for a network
    the engine checks: a few gradient evaluations), else the directional check with localization within
    that many evaluations (at least :data:`AUTO_MIN_BUDGET` of the time budget's), with a note."""
    traits = options.traits
    if options.mode != "auto":
        return options.mode, None
    if engine_applies(subject, options) or traits.complex_step or not traits.stencil:
        return "full", None
    n_full = subject.x0.size * (traits.points or 2) + 32
    if options.budget is not None:  # a budget in evaluations: the same choice on every machine
        if n_full <= options.budget:
            return "full", None
        budget, cost = options.budget, f"more than the budget of {options.budget}"
    else:
        per_eval = base.seconds_per_eval
        if n_full * per_eval <= AUTO_SECONDS:
            return "full", None
        budget = max(AUTO_MIN_BUDGET, int(AUTO_SECONDS / max(per_eval, 1e-9)))
        cost = f"{n_full * per_eval:.0f} s at {1e3 * per_eval:.3g} ms each"
    ledger.note(f"auto mode: a full check would take about {n_full} evaluations ({cost}), so the directional "
                f"check ran instead: random directions, then localization by rows and columns, within {budget} "
                "evaluations; mode='full' checks every entry")
    return "directional", budget


def confirm_complex(subject: Subject, options: CheckOptions, evaluators: Evaluators, ledger: Ledger) -> NDArray | float:
    """Compare the complex step with real differences along random directions before trusting it
    (:mod:`layerkit.check.applicability`); returns the per-entry resolution of that comparison, below which
    the complex step claims nothing.  Not needed for a network of layerkit's own smooth layers; refused for a
    subject with kinks.  Raises :class:`~layerkit.errors.ComplexEvaluationError` when not applicable."""
    if subject.known_analytic:
        return 0.0
    kinked = subject.kinked
    if kinked:
        raise ComplexEvaluationError(
            f"the complex step is not applicable: the cost is not analytic (layer {kinked[0][0]} has kinks at "
            f"{', '.join(f'{v:g}' for v in kinked[0][1])}, where it is not differentiable); use method='central' "
            "or 'richardson' instead")
    noise = evaluators.measured_noise()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        try:
            evals, resolution = confirm_analytic(subject.value, subject.x0, noise.level, noise.excess, options.seed)
        except np.exceptions.ComplexWarning as exc:
            raise ComplexEvaluationError(
                f"the target cannot be evaluated at complex parameters: it discards the imaginary part ({exc}); "
                "use method='central' or 'richardson' instead") from None
    ledger.count("analyticity", evals)
    return resolution


def full_check(subject: Subject, options: CheckOptions, base: Baseline, evaluators: Evaluators, ledger: Ledger,
               budget: int | None = None) -> Report:
    """Every entry (:mod:`layerkit.check.full`): the evaluator, the estimate, the second look, kink settling,
    the report and its verdicts."""
    resolution = confirm_complex(subject, options, evaluators, ledger) if options.traits.complex_step else 0.0
    probe = evaluators.coordinate_probe(options.traits.complex_step)
    entries = full.estimate(probe, options, base, evaluators, resolution)
    if evaluators.evaluator == "engine":
        unresolved = np.flatnonzero(~np.isfinite(entries.values) & np.isfinite(base.a))
        if unresolved.size:  # the engine has no finite answer there: the cost itself is differenced instead
            probe = evaluators.hand_over(probe, [subject.layout.label(int(j)) for j in unresolved])
            entries = full.estimate(probe, options, base, evaluators, resolution)
    entries = full.second_look(entries, probe, options, base, evaluators, ledger)
    entries = full.settle_kinks(entries, probe, subject, base, evaluators, ledger)
    for note in probe.notes:
        ledger.note(note)
    return full.report(entries, probe, options, base, evaluators, ledger)


def directional_check(subject: Subject, options: CheckOptions, base: Baseline, evaluators: Evaluators,
                      ledger: Ledger, budget: int | None = None) -> Report:
    """Random directions, then localization (:mod:`layerkit.check.directional`), within ``budget``
    evaluations when given."""
    measured, tester = _measure(evaluators.directions(), subject, options, base, evaluators, ledger, budget)
    return directional.report(measured, tester, options, base, evaluators, ledger)


def _measure(evaluator: Any, subject: Subject, options: CheckOptions, base: Baseline, evaluators: Evaluators,
             ledger: Ledger, budget: int | None) -> tuple[directional.Measured, directional.Tester]:
    tester = directional.Tester(subject, options, evaluators.calibrated(evaluator), base, ledger, budget,
                                rounding=lambda: evaluators.analytic_rounding(None),
                                rounding_norms=evaluators.analytic_rounding_norms)
    tester.rough = rough_cost(evaluators.noise)
    return directional.measure(tester, options.n_directions), tester
