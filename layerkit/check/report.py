"""The result of a gradient check: :class:`Report`, with :class:`BlockSummary`, :class:`Entry` and
:class:`Finding` values.  All frozen; arrays are compared by identity (``eq=False``).

``str(report)`` renders a compact table (verdict, one line per block, the worst entries, the findings);
``report.to_dict()`` returns JSON-safe data (the schema is documented in :meth:`Report.to_dict`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from attrs import evolve, field, frozen
from numpy.typing import NDArray

from ..nn.layout import ParameterLayout
from .noise import Noise


def json_number(x: Any) -> Any:
    """JSON-safe number: floats stay floats, NaN/inf become strings."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else str(x)


def relative_difference(n: NDArray, a: NDArray) -> float:
    """``||n - a|| / ||n + a||`` (2-norms), 0 when both are zero; the classic course criterion.

    Computed on the vectors divided by their largest magnitude, so that entries near the top of the float
    range do not overflow the squares; NaN when an entry is not finite."""
    n, a = np.asarray(n, dtype=np.float64), np.asarray(a, dtype=np.float64)
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(a))):
        return math.nan
    scale = max(float(np.max(np.abs(n), initial=0.0)), float(np.max(np.abs(a), initial=0.0)))
    if scale == 0:
        return 0.0
    den = float(np.linalg.norm(n / scale + a / scale))
    num = float(np.linalg.norm(n / scale - a / scale))
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


#: Findings that fail a check whatever else it found: the target is not a function of its parameters.
DEFINITE = frozenset({"nondeterministic-cost", "stateful-gradient"})


@frozen
class Finding:
    """One diagnosis of a mismatch, with a stable ``code`` (see :mod:`layerkit.diagnosis.doctor`).

    ``bearing`` says how a verdict finding bears on the verdict (:mod:`layerkit.check.verdicts`):
    ``"unresolved"`` (nothing failed, but the check could not resolve the gradient: INCONCLUSIVE when no
    entry is beyond its tolerance), ``"undecided"`` (INCONCLUSIVE even where entries fail: the mismatch is
    within what the check knows it cannot measure), or ``""`` (an explanation).  ``to_dict`` writes it into
    the evidence as the keys ``unresolved`` and ``covers_mismatch``.
    """

    code: str
    blocks: tuple[str, ...]
    message: str
    evidence: dict[str, Any] = field(factory=dict)
    bearing: str = field(default="", kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        evidence = dict(self.evidence)
        if self.bearing:
            evidence["unresolved"] = True
        if self.bearing == "undecided":
            evidence["covers_mismatch"] = True
        return {"code": self.code, "blocks": list(self.blocks), "message": self.message,
                "evidence": _jsonable(evidence)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (str, type(None))):
        return obj
    if isinstance(obj, (int, float, np.number, bool, np.bool_)):
        return json_number(obj)
    return str(obj)


@frozen
class DirectionRecord:
    """One directional derivative of a directional check: ``numerical`` (finite differences of the cost along
    a unit direction ``u``), ``analytical`` (``u . g``), its tolerance, ``u . x`` (for penalty fits) and
    ``bound``, the part of the tolerance that is the finite difference's own error bound (noise and
    truncation): a direction resolves the gradient only where ``|analytical| > bound``; ``u`` the direction of
    a block's own test."""

    numerical: float
    analytical: float
    tolerance: float
    u_dot_x: float = 0.0
    bound: float = 0.0
    #: The unit direction itself, for a direction restricted to one block (its entries in the block's flat
    #: order; None for a whole-vector direction): the doctor's structured fits read it.  Not serialized.
    u: NDArray | None = field(default=None, eq=False, repr=False)

    @property
    def passed(self) -> bool:
        err = abs(self.numerical - self.analytical)
        return bool(math.isfinite(err) and err <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {"numerical": json_number(self.numerical), "analytical": json_number(self.analytical),
                "tolerance": json_number(self.tolerance), "passed": self.passed, "u_dot_x": json_number(self.u_dot_x),
                "bound": json_number(self.bound)}


@frozen(eq=False)
class DirectionalEvidence:
    """What a directional check measured (see :mod:`layerkit.check.directional`).

    Attributes
    ----------
    n_directions : int
        Random directions of the first, whole-vector test.
    tests : tuple of DirectionRecord
        Those directions.
    block_tests : dict block name -> tuple of DirectionRecord
        Directions restricted to each block (only when the first test failed).
    localized : tuple of str
        Labels of the entries found wrong by bisection.
    spread_blocks : tuple of str
        Blocks whose mismatch was too spread out to bisect.
    evaluations : dict stage -> int
        Cost evaluations per stage (``analytic``, ``directions``, ``blocks``, ``localize``, ``taylor``, ...).
    taylor : dict or None
        The Taylor-remainder fit along the most telling direction (slope, verdict, ...).
    scales : tuple or None
        For a failing check on the subject's own cost: ``(Scales, labels, numerical, analytical)`` of its
        failing whole-vector directions measured across a wide range of steps
        (:func:`~layerkit.check.refine.across_scales`).
    """

    n_directions: int
    tests: tuple[DirectionRecord, ...] = ()
    block_tests: dict[str, tuple[DirectionRecord, ...]] = field(factory=dict)
    localized: tuple[str, ...] = ()
    spread_blocks: tuple[str, ...] = ()
    evaluations: dict[str, int] = field(factory=dict)
    taylor: dict[str, Any] | None = None
    scales: tuple[Any, ...] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"n_directions": self.n_directions, "directional": [t.to_dict() for t in self.tests],
                "block_directions": {k: [t.to_dict() for t in v] for k, v in self.block_tests.items()},
                "localized": list(self.localized), "spread_blocks": list(self.spread_blocks),
                "evaluations": dict(self.evaluations), "taylor": _jsonable(self.taylor)}


@frozen
class Entry:
    """One compared entry: where it is and how far apart the two gradients are."""

    block: str
    index: tuple[int, ...]
    flat_index: int
    numerical: float
    analytical: float
    error: float
    tolerance: float

    @property
    def label(self) -> str:
        return f"{self.block}[{', '.join(map(str, self.index))}]"

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, "index": list(self.index), "flat_index": self.flat_index,
                "numerical": json_number(self.numerical), "analytical": json_number(self.analytical),
                "error": json_number(self.error), "tolerance": json_number(self.tolerance)}


@frozen
class BlockSummary:
    """Per-block comparison: relative difference ``||n - a|| / ||n + a||``, largest absolute error,
    number of entries beyond tolerance, and whether the block passed."""

    name: str
    shape: tuple[int, ...]
    relative_difference: float
    max_abs_error: float
    n_failed: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "relative_difference": json_number(self.relative_difference),
                "max_abs_error": json_number(self.max_abs_error), "n_failed": self.n_failed, "passed": self.passed}


@frozen(eq=False)
class Setting:
    """What a check compared and how: the method, its base step and rule, the dtype, the layout and the point
    with its cost, the kind of subject and its hints, the mode, the evaluator and the noise (see
    :class:`Report` for each)."""

    method: str
    step: float
    step_rule: str
    dtype: Any
    layout: ParameterLayout
    x: NDArray
    cost: Any
    subject: str = "function"
    lambda_: float | None = None
    m: int | None = None
    mode: str = "full"
    evaluator: str = "cost"
    noise: Noise | None = None


@frozen(eq=False)
class Comparison:
    """The two gradients a report compares, shape (P,) each, and the tolerance ``rtol max(|n|, |a|) + atol``
    of every entry; ``measured`` (the entries measured, when not all), ``blocks`` and ``passed`` (set by a
    directional check, which judges blocks by their directions), and the estimate's evidence (see
    :class:`Report`)."""

    numerical: NDArray
    analytical: NDArray
    rtol: float
    atol: NDArray
    measured: NDArray | None = None
    blocks: tuple[BlockSummary, ...] | None = None
    passed: bool | None = None
    error_estimate: NDArray | None = None
    refined: NDArray | None = None
    first_reach: NDArray | None = None
    model_tolerance: NDArray | None = None
    directional: DirectionalEvidence | None = None


@frozen(eq=False)
class Compared:
    """What :func:`compare` found: every entry's tolerance, the block summaries, the worst entries, the
    largest errors and the entry-based verdict."""

    tolerance: NDArray
    blocks: tuple[BlockSummary, ...]
    worst: tuple[Entry, ...]
    max_abs_error: float
    max_rel_error: float
    passed: bool


def compare(n: NDArray, a: NDArray, rtol: float, atol: NDArray, known: NDArray, layout: ParameterLayout,
            top: int) -> Compared:
    """Entry by entry: ``|n - a| <= rtol max(|n|, |a|) + atol`` on the ``known`` entries (float64 arrays of
    shape (P,)), everything there finite; per block, its relative difference, largest error and failures."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(n - a)
        # fmax: an entry that was not measured (NaN numerical) keeps the tolerance of its analytic value
        tol = rtol * np.fmax(np.abs(n), np.abs(a)) + np.asarray(atol, dtype=np.float64)
    bad = (~np.isfinite(n) | ~np.isfinite(a) | ~np.isfinite(tol)) & known
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = ((err <= tol) & ~bad) | ~known
        rel = np.where(err == 0, 0.0, err / np.maximum(np.maximum(np.abs(n), np.abs(a)), np.finfo(float).tiny))
    summaries = []
    for b in layout.blocks:
        s = b.slice
        k = known[s]
        eb = err[s][k]
        summaries.append(BlockSummary(b.name, b.shape, relative_difference(n[s][k], a[s][k]),
                                      float(np.max(eb, initial=0.0)) if np.isfinite(eb).all() else math.nan,
                                      int(np.sum(~ok[s])), bool(ok[s].all())))
    with np.errstate(invalid="ignore", divide="ignore"):
        badness = np.where(bad, np.inf, err / np.maximum(tol, np.finfo(float).tiny))
    badness = np.where(known, np.nan_to_num(badness, nan=np.inf), -np.inf)
    order = np.argsort(-badness, kind="stable")[: max(int(top), 0)]
    worst = tuple(Entry(*layout.locate(int(j)), int(j), float(n[j]), float(a[j]), float(err[j]), float(tol[j]))
                  for j in order if known[j])
    kn = known & np.isfinite(err)
    return Compared(tol, tuple(summaries), worst, float(np.max(err[kn], initial=0.0)) if not bad.any() else math.nan,
                    float(np.max(rel[kn], initial=0.0)), bool(ok.all()))


@frozen(eq=False)
class Report:
    """Outcome of one gradient check.

    Attributes
    ----------
    method : str
        Strategy name, e.g. ``"central"``.
    step : float
        The base step: the relative step ``h0`` of ``"auto"`` (per-entry steps are ``h0 max(1, |x_j|) / s_j``,
        on the network engine at most that: shortened to where its changes are read off two Taylor tables,
        :func:`~layerkit.check.methods.table_steps`, or to stay off a kink), or the absolute step the user gave.
    step_rule : str
        ``"auto"`` or ``"fixed"``.
    dtype : str
        dtype of the target's parameters (``"float64"`` or ``"float32"``).
    passed : bool
        Every measured entry within ``rtol * max(|n|, |a|) + atol``, everything finite, and the gradient the
        same on a second evaluation.
    relative_difference, max_abs_error, max_rel_error : float
        Over all (measured) entries; ``max_rel_error = max |n - a| / max(|n|, |a|)``.
    numerical, analytical : NDArray, shape (P,)
    tolerance : NDArray, shape (P,)
        Per-entry pass threshold.  In directional mode, for entries not measured one by one: the smallest
        error of that entry alone that one of the random directions would have detected.
    error_estimate : NDArray or None
        Per-entry error estimate of the numerical gradient (Richardson), if any.
    rtol : float
    blocks : tuple of BlockSummary
    worst : tuple of Entry
        The ``top`` entries with the largest error relative to tolerance, worst first.
    n_evals : int
        Cost evaluations used (for engine checks: perturbations evaluated).
    seconds : float
    findings : tuple of Finding
        Diagnoses added by the doctor.
    step_verdict : str
        The doctor's answer to "could the step size be the cause?" (empty without the doctor).
    notes : tuple of str
        Further plain-language lines: follow-up experiments, the engine's verification, entries measured
        again.
    measured : NDArray of bool or None
        For directional checks: the entries whose numerical derivative was measured (the localized ones);
        ``numerical`` is NaN elsewhere.  None for full checks (every entry measured).
    layout : ParameterLayout
    x : NDArray
        The point the gradient was checked at (a copy).
    cost : float
        ``J(x)``.
    subject : str
        ``"function"``, ``"network"`` or ``"layer"``.
    lambda_, m : float or None, int or None
        The regularization and number of examples, when known.
    mode : str
        ``"full"`` or ``"directional"``.
    evaluator : str
        What computed the cost changes: ``"cost"`` (the subject's own cost, re-evaluated) or ``"engine"``
        (the network engine, verified against the network's own cost first).
    noise : Noise or None
        The noise of the cost that steps and tolerances were derived from.
    directional : DirectionalEvidence or None
        What a directional check measured.
    refined : NDArray of bool or None
        Entries that failed at the first step and were measured again (:mod:`layerkit.check.refine`).
    model_tolerance : NDArray or None
        The tolerance the error model gives each entry (equal to ``tolerance`` unless ``rtol`` or ``atol``
        were given): what the numerical estimate itself can resolve.
    first_reach : NDArray or None
        For entries a second look replaced: the first estimate's tolerance plus its distance from the
        analytic value (0 elsewhere); see :attr:`detectable`.
    """

    method: str
    step: float
    step_rule: str
    dtype: str
    passed: bool
    relative_difference: float
    max_abs_error: float
    max_rel_error: float
    numerical: NDArray
    analytical: NDArray
    tolerance: NDArray
    error_estimate: NDArray | None
    rtol: float
    blocks: tuple[BlockSummary, ...]
    worst: tuple[Entry, ...]
    n_evals: int
    seconds: float
    layout: ParameterLayout
    x: NDArray
    cost: float
    findings: tuple[Finding, ...] = ()
    step_verdict: str = ""
    notes: tuple[str, ...] = ()
    measured: NDArray | None = None
    subject: str = "function"
    lambda_: float | None = None
    #: Evaluations of the network itself among ``n_evals``, when its engine computed the rest (the engine's
    #: exact cost changes, each a small part of one evaluation); None when every evaluation is the target's.
    target_evals: int | None = None
    m: int | None = None
    mode: str = "full"
    evaluator: str = "cost"
    noise: Noise | None = None
    directional: DirectionalEvidence | None = None
    refined: NDArray | None = None
    model_tolerance: NDArray | None = None
    first_reach: NDArray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, setting: Setting, comparison: Comparison, *, n_evals: int, seconds: float, top: int = 5) -> Report:
        """Compare the numerical gradient with the analytical one entry by entry (only the ``measured`` ones,
        when given) and summarize per block (:func:`compare`); the comparison's ``blocks`` and ``passed``,
        when given, override the entry-based summary (directional checks judge blocks by their directions).
        ``top`` worst entries are kept."""
        c = comparison
        n = np.asarray(c.numerical, dtype=np.float64)
        a = np.asarray(c.analytical, dtype=np.float64)
        known = np.ones(n.shape, dtype=bool) if c.measured is None else np.asarray(c.measured, dtype=bool)
        verdict = compare(n, a, c.rtol, c.atol, known, setting.layout, top)
        return cls(method=setting.method, step=float(setting.step), step_rule=setting.step_rule,
                   dtype=str(np.dtype(setting.dtype)), passed=verdict.passed if c.passed is None else bool(c.passed),
                   relative_difference=relative_difference(n[known], a[known]),
                   max_abs_error=verdict.max_abs_error, max_rel_error=verdict.max_rel_error,
                   numerical=n, analytical=a, tolerance=verdict.tolerance, error_estimate=c.error_estimate,
                   rtol=float(c.rtol), blocks=verdict.blocks if c.blocks is None else c.blocks, worst=verdict.worst,
                   n_evals=int(n_evals), seconds=float(seconds), layout=setting.layout,
                   x=np.array(setting.x, copy=True), cost=float(np.real(setting.cost)),
                   measured=None if c.measured is None else known, subject=setting.subject, lambda_=setting.lambda_,
                   m=setting.m, mode=setting.mode, evaluator=setting.evaluator, noise=setting.noise,
                   directional=c.directional, refined=c.refined, model_tolerance=c.model_tolerance,
                   first_reach=c.first_reach)

    def with_findings(self, findings: list[Finding] | tuple[Finding, ...], step_verdict: str | None = None,
                      notes: list[str] | tuple[str, ...] | None = None) -> Report:
        """A copy with ``findings`` (and optionally ``step_verdict`` and ``notes``) set."""
        return evolve(self, findings=tuple(findings),
                      step_verdict=self.step_verdict if step_verdict is None else step_verdict,
                      notes=self.notes if notes is None else tuple(notes))

    # ------------------------------------------------------------------ queries
    @property
    def failed_blocks(self) -> list[str]:
        return [b.name for b in self.blocks if not b.passed]

    @property
    def passed_blocks(self) -> list[str]:
        return [b.name for b in self.blocks if b.passed]

    @property
    def detectable(self) -> NDArray:
        """Per entry, shape (P,): the size of an error of that entry alone that this check detects.

        An error ``e`` of entry ``j`` moves ``a_j`` away from the estimate ``n_j`` by at least
        ``e - |n_j - a_j|``, so it fails when ``e > tolerance_j + |n_j - a_j|`` (at most twice the tolerance
        on a passing entry).  Where a second look replaced the first estimate, an error must first fail that
        estimate to get the second look: the first estimate's own reach (``first_reach``) counts too.  In
        directional mode the tolerance of an entry not measured alone already is this reach."""
        if self.mode == "directional":
            return self.tolerance
        with np.errstate(invalid="ignore"):
            reach = self.tolerance + np.nan_to_num(np.abs(self.numerical - self.analytical), nan=np.inf)
        return reach if self.first_reach is None else np.fmax(reach, self.first_reach)

    @property
    def mismatch(self) -> NDArray:
        """Boolean mask of the entries beyond tolerance (or non-finite), shape (P,)."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(self.numerical - self.analytical) <= self.tolerance)
        return bad if self.measured is None else bad & self.measured

    @property
    def context(self) -> dict[str, Any]:
        """A plain-dict view of the typed fields (what ``to_dict()["context"]`` holds): ``target``,
        ``lambda_``, ``m``, ``mode``, ``evaluator``, ``noise`` and, for directional checks, ``n_directions``,
        ``directional``, ``block_directions``, ``localized``, ``spread_blocks``, ``evaluations`` and
        ``taylor``."""
        c: dict[str, Any] = {"target": self.subject, "mode": self.mode, "evaluator": self.evaluator}
        if self.lambda_ is not None:
            c["lambda_"] = self.lambda_
        if self.m is not None:
            c["m"] = self.m
        if self.noise is not None:
            c["noise"] = self.noise.to_dict()
        if self.directional is not None:
            c.update(self.directional.to_dict())
        return c

    def codes(self) -> list[str]:
        """Codes of the findings, in order."""
        return [f.code for f in self.findings]

    @property
    def blocks_verdict(self) -> str:
        """Which blocks are right and which are wrong, in one line."""
        if any(f.code in DEFINITE for f in self.findings):
            return "correct: none decided (the target is not a function of its parameters: see above)"
        alone = None if self.directional is None else self.directional.block_tests
        ok = [f"{b.name} (rel diff {b.relative_difference:.1e})" if alone is None or b.name in alone else
              f"{b.name} (through the directions)" for b in self.blocks if b.passed]
        bad = [b.name for b in self.blocks if not b.passed]
        if not bad and not self.passed and not self.inconclusive and self._directions_alone:
            return ("correct: none decided (the whole-vector directions fail, while no block fails along its "
                    "own directions: the mismatch is spread over several blocks, or close to the tolerance)")
        if not bad:
            return "correct: every block" + (f" ({', '.join(ok)})" if len(ok) <= 6 else "")
        right = ", ".join(ok) if ok else "none"
        return f"correct: {right}; {'undecided' if self.inconclusive else 'wrong'}: {', '.join(bad)}"

    @property
    def _directions_alone(self) -> bool:
        """A directional report whose whole-vector directions failed while no block failed along its own."""
        d = self.directional
        return d is not None and not self.failed_blocks and any(not t.passed for t in d.tests)

    @property
    def inconclusive(self) -> bool:
        """Not passed, and a ``precision-limited`` finding says the check could not decide: no entry beyond its
        tolerance while some could not be resolved, or a mismatch within what the error model is known to
        misjudge for this cost (the finding says which and why)."""
        if any(f.code in DEFINITE for f in self.findings):
            return False  # the target itself is at fault, whatever the estimates could resolve
        return not self.passed and any(
            f.bearing == "undecided" or (f.bearing == "unresolved" and not self.mismatch.any())
            for f in self.findings)

    @property
    def verdict(self) -> str:
        state = "PASSED" if self.passed else "INCONCLUSIVE" if self.inconclusive else "FAILED"
        failed = self.failed_blocks
        definite = [f for f in self.findings if f.code in DEFINITE]
        where = "" if self.passed else f"; {definite[0].code}" if definite and not failed else \
            f"; mismatch in {', '.join(failed) if failed else 'the whole-vector directions only' if self._directions_alone else 'no block'}"
        lam = self.lambda_
        lam_s = f", lambda={lam:g}" if isinstance(lam, (int, float)) else ""
        how = f"{self.method}, directional" if self.mode == "directional" else self.method
        along = " along the directions" if self.mode == "directional" else ""
        return (f"{state}  {how} ({self.dtype}{lam_s}, step {self.step_rule} {self.step:.2g}): "
                f"relative difference {self.relative_difference:.3g}, max abs error {self.max_abs_error:.3g}"
                f"{along}{where}")

    # ------------------------------------------------------------------ output
    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        """JSON-safe summary.

        Keys: ``method``, ``step``, ``step_rule``, ``dtype``, ``passed``, ``inconclusive``, ``mode``
        (``"full"`` or ``"directional"``), ``relative_difference``,
        ``max_abs_error``, ``max_rel_error``, ``rtol``, ``cost``, ``n_params``, ``n_evals``, ``seconds``,
        ``blocks`` (list of ``{name, shape, relative_difference, max_abs_error, n_failed, passed}``),
        ``worst`` (list of ``{block, index, flat_index, numerical, analytical, error, tolerance}``),
        ``findings`` (list of ``{code, blocks, message, evidence}``), ``context``, ``step_verdict``,
        ``correct_blocks``, ``wrong_blocks`` (lists of block names), ``notes`` (list of strings); with
        ``include_arrays=True`` also ``numerical`` and ``analytical`` (lists of P numbers).
        Non-finite numbers are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
        """
        d: dict[str, Any] = {
            "method": self.method, "step": json_number(self.step), "step_rule": self.step_rule, "dtype": self.dtype,
            "passed": self.passed, "inconclusive": self.inconclusive,
            "relative_difference": json_number(self.relative_difference),
            "max_abs_error": json_number(self.max_abs_error), "max_rel_error": json_number(self.max_rel_error),
            "rtol": json_number(self.rtol), "cost": json_number(self.cost), "n_params": int(self.numerical.size),
            "n_evals": self.n_evals, "target_evals": self.target_evals, "seconds": json_number(self.seconds),
            "blocks": [b.to_dict() for b in self.blocks], "worst": [e.to_dict() for e in self.worst],
            "findings": [f.to_dict() for f in self.findings], "context": _jsonable(self.context),
            "step_verdict": self.step_verdict, "correct_blocks": self.passed_blocks,
            "wrong_blocks": self.failed_blocks, "notes": list(self.notes), "mode": self.mode,
        }
        if include_arrays:
            d["numerical"] = [json_number(v) for v in self.numerical]
            if self.measured is not None:
                d["measured"] = [bool(v) for v in self.measured]
            d["analytical"] = [json_number(v) for v in self.analytical]
        return d

    def render(self, top: int | None = None) -> str:
        """The readable table: verdict, per-block lines, worst entries and findings (see
        :func:`layerkit.check.render.render`)."""
        from .render import render

        return render(self, top)

    def plot(self, ax: Any = None) -> Any:
        """One heatmap per block of ``|analytical - numerical| / tolerance`` (log scale, failing entries
        outlined), titled with each block's verdict and captioned with the first finding; returns the
        matplotlib Figure (see :func:`layerkit.check.plot.plot_report`; needs ``layerkit[plot]``)."""
        from .plot import plot_report

        return plot_report(self, ax)

    def _repr_html_(self) -> str:
        """The report in a notebook: verdict, blocks, worst entries, findings and the heatmap (when matplotlib
        is installed)."""
        from .plot import report_html

        return report_html(self)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (f"Report(method={self.method!r}, passed={self.passed}, "
                f"relative_difference={self.relative_difference:.3g}, findings={self.codes()})")
