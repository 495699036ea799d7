"""The doctor: say where and why an analytic gradient disagrees with the numerical one.

:func:`diagnose` reads a :class:`~layerkit.check.report.Report` (and, when something failed, runs a few cheap
follow-up evaluations of the target) and adds :class:`~layerkit.check.report.Finding` values with these stable
codes.  ``r = analytical - numerical`` is the residual, ``x`` the parameter values.

=========================== ============================================================================
code                        meaning
=========================== ============================================================================
``non-finite``              the target produced NaN or inf (entries listed)
``nondeterministic-cost``   re-evaluating the cost at the same point gave different values
``precision-limited``       the mismatch is at the level the dtype's roundoff (and the step) predict
``nonsmooth``               one-sided differences of an entry disagree at every step (a kink, e.g. ReLU at 0)
``stateful-gradient``       the gradient at the same point differed between two calls (found by the check)
``zero-gradient``           analytical is exactly zero where numerical is not (a block never written)
``sign-flip``               analytical = -numerical on a block or overall
``scale-mismatch``          analytical = c * numerical on a block or overall (c named: m, 1/m, 2, 1/2); or
                            the data term alone off by c while the penalty is right
``layout-mismatch``         analytical matches numerical after re-unrolling a block in Fortran order
                            (equivalently: the block transposed)
``regularization-mismatch`` on the affected entries r = k x: a penalty in the cost or the gradient but not
                            both, or with a different factor; k is related to lambda/m and lambda/(2m);
                            or the penalty on the wrong columns (+lambda/m on some, -lambda/m on others)
``constant-offset``         on a row, a column or a block r is one constant (named: lambda/m, 1/m, lambda)
``data-term-missing``       the analytic gradient is the penalty lambda/m theta alone
``dropped-example``         r on a 2-D block is rank one: one example's contribution missing or doubled
``batch-statistics-missing`` (layer functions) a batch normalization's input gradient without the terms of
                            the batch mean and variance: per feature r = c0 + c1 (x - mean(x)) while the
                            numerical gradient sums to 0 over the batch; the terms' factors are measured
                            from gamma's and beta's numerical gradients when given (missing, wrong sign,
                            N/(N-1))
``pooling-spread``          (layer functions) max pooling's gradient spread evenly over each window (or copied
                            to every entry) instead of routed to its maximum; the window inferred
``kernel-flipped``          (layer functions) a convolution's input gradient is the cost's gradient with the
                            kernel rotated by 180 degrees (measured along a few directions at the flipped
                            kernel: 7 evaluations of the forward)
``localized``               the mismatch is confined to a proper part of a block: a few entries, rows or
                            columns (listed)
``layer-mismatch``          (networks) a layer fails its own ``check_layer``: its backward is wrong
=========================== ============================================================================

It also always gives two verdicts: whether the step size could be the cause (the mismatch compared with
the numerical error the tolerance was built from), and which blocks are right.  A cost measurably noisier
than its own rounding gets a ``precision-limited`` finding even when the check passed, naming the usual
cause (float32 inside a float64 cost, or cancellation) and its cure.

The doctor fits patterns to the report (:mod:`layerkit.diagnosis.patterns`, and for the blocks that can
be a layer's inputs :mod:`layerkit.diagnosis.layer_patterns`; a directional report's spread blocks along
their own directions, :mod:`layerkit.diagnosis.along`) and runs experiments
(:mod:`layerkit.diagnosis.followups`) only through the :class:`~layerkit.diagnosis.experiments.Experiments`
runner the check hands it, within its budget of evaluations: one-sided differences, the Taylor remainder
along the worst entry, the derivatives at the point with a convolution's kernel flipped, and for networks
the gradient at lambda = 0 and a directional check of every layer.
They run only when the check failed; a request beyond the budget is skipped with a note.  Its explanations
of precision (a mismatch at the level of the rounding, a noisy cost) are made where every verdict finding is
(:mod:`layerkit.check.verdicts`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from attrs import evolve

from ..check.kinks import rough_cost
from ..check.report import Finding, Report
from ..check.tolerance import SAFETY
from ..check.verdicts import noisy_cost, rounding_level
from ..nn.layout import Order, ParameterLayout
from . import followups
from .along import directional_block
from .case import Case
from .layer_patterns import kernel_flipped
from .patterns import BLOCK_PATTERNS, merged


def diagnose(report: Report, subject: Any, strategy: Any, experiments: Any = None) -> Report:
    """Return ``report`` with findings, the step verdict and notes added (see the module docstring).

    ``experiments`` (an :class:`~layerkit.diagnosis.experiments.Experiments`) is what the doctor may run;
    without it only the patterns in the report are fitted."""
    case = Case(report, subject, experiments)
    findings = list(report.findings)
    noise = report.noise
    if noise is not None and noise.measured and noise.deterministic and noise.excess >= 100:
        findings.append(noisy_cost(noise, report.cost))
    if report.passed:
        return _done(case, findings, step_verdict(case))
    explained = np.zeros(case.n.size, dtype=bool)
    non_finite = _non_finite(case)
    if non_finite is not None:
        findings.append(non_finite)
        explained |= (~np.isfinite(case.n) | ~np.isfinite(case.a)) & case.known
    if "nondeterministic-cost" in report.codes():  # found by the check itself; nothing else can be concluded
        return _done(case, findings, "the cost is not deterministic: no step can give a reliable numerical gradient")
    if not report.inconclusive:  # an undecided mismatch is not the gradient's to answer for: nothing is blamed
        findings = _causes(case, findings, explained)
    return _done(case, findings, step_verdict(case))


def _done(case: Case, findings: list[Finding], verdict: str) -> Report:
    return case.report.with_findings(findings, step_verdict=verdict, notes=list(case.report.notes) + case.notes)


def _non_finite(case: Case) -> Finding | None:
    idx = np.flatnonzero((~np.isfinite(case.n) | ~np.isfinite(case.a)) & case.known)
    if not idx.size:
        return None
    which = []
    if (~np.isfinite(case.a)).any():
        which.append("the analytical gradient")
    if (~np.isfinite(case.n) & case.known).any():
        which.append("the cost at perturbed points")
    return Finding("non-finite", tuple(case.blocks_of(idx)),
                   f"{' and '.join(which)} produced NaN or inf at {case.labels(idx)}",
                   {"entries": [case.report.layout.label(int(j)) for j in idx[:20]], "count": int(idx.size)})


def _causes(case: Case, findings: list[Finding], explained: np.ndarray) -> list[Finding]:
    """What the failing entries not explained yet show: a mismatch at the level of the rounding, else kinks,
    the block patterns, one overall pattern, and for a network its layers' own checks."""
    bad = np.flatnonzero(case.bad & ~explained)
    if bad.size:
        err = np.abs(case.n - case.a)
        model = case.tol if case.report.model_tolerance is None else case.report.model_tolerance
        ratio = float(np.max(err[bad] / np.maximum(model[bad], np.finfo(float).tiny)))
        if ratio <= 4:
            return findings + [rounding_level(case.blocks_of(bad), ratio, case.report.dtype)]
        # a full check has tested its failing entries for kinks itself (and a rough cost has none to find)
        kinked = followups.kinks(case, bad) if case.directional and not rough_cost(case.report.noise) else None
        if kinked is not None:
            findings.append(kinked[0])
            explained[kinked[1]] = True
    own = _block_patterns(case, explained)
    findings += _read_in_the_other_order(case, own) or own
    findings = merged(findings, case)
    if case.report.subject == "function" and not any(f.code not in NOT_CAUSES for f in findings):
        hint = _hints(case)
        if hint:
            case.notes.append(hint)
    if case.experiments is not None and case.report.subject == "network":
        if case.lam:
            case.attempt("the re-check at lambda = 0", lambda: followups.at_lambda_zero(case))
        findings += followups.layers(case)
    return findings


def _hints(case: Case) -> str:
    """What a function's check could be told to look further, when no pattern named a cause ('' when
    nothing)."""
    if not any(len(b.shape) == 2 for b in case.report.layout.blocks):
        return ""  # not laid out as a network's matrices: the course patterns do not apply
    wanted = []
    if case.report.lambda_ is None:
        wanted.append("lambda_ (the regularization: penalty patterns are then named as lambda/m)")
    if case.report.m is None:
        wanted.append("m (the number of examples: factors such as 1/m, and dropped examples)")
    if not wanted:
        return ""
    return "no pattern explains the mismatch; the doctor could look further with " + "; ".join(wanted)


#: Findings that locate or qualify a mismatch without naming its cause.
NOT_CAUSES = frozenset({"localized", "nonsmooth", "precision-limited", "rounding-level", "layer-mismatch"})


def _read_in_the_other_order(case: Case, own: list[Finding]) -> list[Finding] | None:
    """A function's mismatch that no pattern explains in the order its blocks were given, but one does with
    every block read in the other order (C for F): the port unrolls its parameters that other way, and the
    patterns found in it, after a ``layout-mismatch`` finding that says so (None when that is not the case)."""
    layout = case.report.layout
    if (case.report.subject != "function" or any(f.code not in NOT_CAUSES for f in own)
            or any(len(b.shape) != 2 or min(b.shape) < 2 for b in layout.blocks)):
        return None
    other: Order = "F" if layout.blocks[0].order == "C" else "C"
    flipped = ParameterLayout.from_shapes({b.name: b.shape for b in layout.blocks}, order=other)
    twin = Case(evolve(case.report, layout=flipped), case.subject)
    found = _block_patterns(twin, np.zeros(case.n.size, dtype=bool))
    if not any(f.code not in NOT_CAUSES for f in found):
        return None
    given, read = ("C", "Fortran") if other == "F" else ("Fortran", "C")
    note = Finding("layout-mismatch", tuple(b.name for b in layout.blocks),
                   f"no pattern explains the mismatch with the blocks read in {given} order, but "
                   f"{', '.join(sorted({f.code for f in found if f.code not in NOT_CAUSES}))} does in {read} order: "
                   f"the code unrolls its parameters in {read} order" + (
                       " (MATLAB/Octave's [Theta1(:); Theta2(:)]); give order='F'" if other == "F" else
                       "; give order='C'") + f", and the findings below name entries in {read} order",
                   {"order": other})
    return [note] + found


def _block_patterns(case: Case, explained: np.ndarray) -> list[Finding]:
    """Each block's failing entries not explained yet, against the patterns in order; a spread block of a
    directional report against its own directions, then the test of a flipped kernel (which measures its
    own)."""
    spread = set(case.report.directional.spread_blocks) if case.report.directional is not None else set()
    out = []
    for block in case.report.layout.blocks:
        s = block.slice
        bad = np.flatnonzero(case.bad[s] & ~explained[s])
        if case.directional and block.name in spread:
            found = directional_block(case, block) or kernel_flipped(case, block, bad)
            if found is not None:
                out.append(found)
            continue
        if not bad.size:
            continue
        for pattern in BLOCK_PATTERNS:
            found = pattern(case, block, bad)
            if found is not None:
                out.append(found)
                explained[block.start + bad] = True
                break
    return out


def directional_verdict(case: Case) -> str:
    """The step verdict of a directional report: the worst directional mismatch against its tolerance, and
    the Taylor fit's verdict."""
    d = case.report.directional
    tests = [] if d is None else list(d.tests)
    if d is not None and all(abs(t.numerical - t.analytical) <= t.tolerance for t in tests):
        # the failure (if any) is a block's own, along its gradient: its tests are the telling ones
        tests += [t for ts in d.block_tests.values() for t in ts]
    ratios = [abs(t.numerical - t.analytical) / max(t.tolerance, 1e-300) for t in tests]
    taylor = None if d is None else d.taylor
    if case.report.passed:
        return (f"no mismatch: every directional derivative is within {max(ratios, default=0):.2g} of its "
                "error-model tolerance")
    worst = max(ratios, default=0.0)
    text = f"the worst directional mismatch is {worst:.1e} times its error-model tolerance"
    if taylor is not None:
        text += "; " + taylor["verdict"]
    elif worst >= 100:
        text += ": the step size is not the cause"
    return text


def step_verdict(case: Case) -> str:
    """Could the step size be the cause?  The worst mismatch against the numerical error its tolerance was
    built from (``SAFETY`` times it), and the Taylor remainder along that entry."""
    if case.directional:
        return directional_verdict(case)
    r = case.report
    err = np.abs(case.n - case.a)
    bad = np.flatnonzero(case.bad & np.isfinite(err))
    with np.errstate(invalid="ignore"):
        ratio_all = err / np.maximum(case.tol, np.finfo(float).tiny)
    if not bad.size and case.bad.any():
        return ("the mismatch is a non-finite value (see the non-finite finding): no step size is the cause, "
                "and none can be judged until it is finite")
    if not bad.size:
        if r.error_estimate is not None and np.isfinite(r.error_estimate).all():
            return (f"no mismatch: largest error {float(np.max(err, initial=0)):.1e}, Richardson's numerical "
                    f"error estimate {float(np.max(r.error_estimate, initial=0)):.1e}")
        return f"no mismatch: every entry is within {float(np.nanmax(ratio_all, initial=0.0)):.2g} of its " \
               "error-model tolerance"
    if r.inconclusive:
        noise = r.noise
        return ("inconclusive: " + (f"the cost is {noise.excess:.0f} times noisier than its own rounding, and "
                                    if noise is not None and noise.excess > 1 else "")
                + "finite differences cannot tell a wrong gradient from their own error here (see the "
                "precision-limited finding)")
    j = int(bad[np.argmax(ratio_all[bad])])
    mm = float(err[j])
    numerr = float(case.tol[j]) / SAFETY  # the tolerance is SAFETY times the estimate's error
    ratio = mm / max(numerr, np.finfo(float).tiny)
    again = " (measured again over a ladder of steps)" if r.refined is not None and r.refined[j] else ""
    if ratio >= 100:
        text = (f"the mismatch ({mm:.2e}) is 10^{int(math.log10(ratio))} times larger than the numerical "
                f"error ({numerr:.1e}{again}): the step size is not the cause; the analytic gradient is wrong")
    elif ratio >= 5:
        text = (f"the mismatch ({mm:.2e}) is only {ratio:.0f} times the numerical error ({numerr:.1e}{again}): "
                "probably a real error, but re-check with method='richardson' or another step")
    else:
        text = (f"the mismatch ({mm:.2e}) is comparable to the numerical error ({numerr:.1e}{again}): the step "
                "size or the precision could be the cause")
    taylor = followups.taylor_along(case, j)
    return text + ("; " + taylor["verdict"] if taylor else "")
