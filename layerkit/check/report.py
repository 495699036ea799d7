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


def _num(x: Any) -> Any:
    """JSON-safe number: floats stay floats, NaN/inf become strings."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else str(x)


def relative_difference(n: NDArray, a: NDArray) -> float:
    """``||n - a|| / ||n + a||`` (2-norms), 0 when both are zero; the classic course criterion."""
    den = float(np.linalg.norm(n + a))
    num = float(np.linalg.norm(n - a))
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


@frozen
class Finding:
    """One diagnosis of a mismatch, with a stable ``code`` (see :mod:`layerkit.diagnosis.doctor`)."""

    code: str
    blocks: tuple[str, ...]
    message: str
    evidence: dict[str, Any] = field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "blocks": list(self.blocks), "message": self.message,
                "evidence": _jsonable(self.evidence)}


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
        return _num(obj)
    return str(obj)


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
                "numerical": _num(self.numerical), "analytical": _num(self.analytical),
                "error": _num(self.error), "tolerance": _num(self.tolerance)}


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
        return {"name": self.name, "shape": list(self.shape), "relative_difference": _num(self.relative_difference),
                "max_abs_error": _num(self.max_abs_error), "n_failed": self.n_failed, "passed": self.passed}


@frozen(eq=False)
class Report:
    """Outcome of one gradient check.

    Attributes
    ----------
    method : str
        Strategy name, e.g. ``"central"``.
    step : float
        The base step: the relative step ``h0`` of ``"auto"`` (per-entry steps are ``h0 max(1, |x_j|) / s_j``),
        or the absolute step the user gave.
    step_rule : str
        ``"auto"`` or ``"fixed"``.
    dtype : str
        dtype of the target's parameters (``"float64"`` or ``"float32"``).
    passed : bool
        Every entry within ``rtol * max(|n|, |a|) + atol``.
    relative_difference, max_abs_error, max_rel_error : float
        Over all entries; ``max_rel_error = max |n - a| / max(|n|, |a|)``.
    numerical, analytical : NDArray, shape (P,)
    tolerance : NDArray, shape (P,)
        Per-entry pass threshold.
    error_estimate : NDArray or None
        Per-entry error estimate of the numerical gradient (Richardson), if any.
    rtol : float
    blocks : tuple of BlockSummary
    worst : tuple of Entry
        The ``top`` entries with the largest error relative to tolerance, worst first.
    n_evals : int
        Cost evaluations used (for structured Network checks: perturbations evaluated).
    seconds : float
    findings : tuple of Finding
        Diagnoses added by the doctor (empty when nothing is wrong).
    step_verdict : str
        The doctor's answer to "could the step size be the cause?" (empty without the doctor).
    notes : tuple of str
        Further plain-language lines from the doctor (follow-up experiments, the Taylor verdict).
    measured : NDArray of bool or None
        For directional checks: the entries whose numerical derivative was measured (the localized ones);
        ``numerical`` is NaN elsewhere.  None for full checks (every entry measured).
    layout : ParameterLayout
    x : NDArray
        The point the gradient was checked at (a copy).
    cost : float
        ``J(x)``.
    context : dict
        What the doctor may use: ``lambda_``, ``m``, ``target`` kind, and notes.
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
    context: dict[str, Any] = field(factory=dict)
    step_verdict: str = ""
    notes: tuple[str, ...] = ()
    measured: NDArray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, *, method: str, step: float, step_rule: str, dtype: Any, numerical: NDArray,
              analytical: NDArray, rtol: float, atol: NDArray, layout: ParameterLayout, x: NDArray, cost: float,
              n_evals: int, seconds: float, error_estimate: NDArray | None = None, top: int = 5,
              context: dict[str, Any] | None = None) -> Report:
        n = np.asarray(numerical, dtype=np.float64)
        a = np.asarray(analytical, dtype=np.float64)
        err = np.abs(n - a)
        tol = rtol * np.maximum(np.abs(n), np.abs(a)) + np.asarray(atol, dtype=np.float64)
        bad = ~np.isfinite(n) | ~np.isfinite(a)
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (err <= tol) & ~bad
            rel = np.where(err == 0, 0.0, err / np.maximum(np.maximum(np.abs(n), np.abs(a)), np.finfo(float).tiny))
        blocks = []
        for b in layout.blocks:
            s = b.slice
            blocks.append(BlockSummary(b.name, b.shape, relative_difference(n[s], a[s]),
                                       float(np.max(err[s], initial=0.0)), int(np.sum(~ok[s])), bool(ok[s].all())))
        with np.errstate(invalid="ignore", divide="ignore"):
            badness = np.where(bad, np.inf, err / np.maximum(tol, np.finfo(float).tiny))
        order = np.argsort(-badness, kind="stable")[: max(int(top), 0)]
        worst = tuple(Entry(*layout.locate(int(j)), int(j), float(n[j]), float(a[j]), float(err[j]), float(tol[j]))
                      for j in order)
        return cls(method=method, step=float(step), step_rule=step_rule, dtype=str(np.dtype(dtype)),
                   passed=bool(ok.all()), relative_difference=relative_difference(n, a),
                   max_abs_error=float(np.max(err, initial=0.0)), max_rel_error=float(np.max(rel, initial=0.0)),
                   numerical=n, analytical=a, tolerance=tol, error_estimate=error_estimate, rtol=float(rtol),
                   blocks=tuple(blocks), worst=worst, n_evals=int(n_evals), seconds=float(seconds),
                   layout=layout, x=np.array(x, copy=True), cost=float(np.real(cost)),
                   context=dict(context or {}))

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
    def mismatch(self) -> NDArray:
        """Boolean mask of the entries beyond tolerance (or non-finite), shape (P,)."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(self.numerical - self.analytical) <= self.tolerance)
        return bad if self.measured is None else bad & self.measured

    @property
    def mode(self) -> str:
        """``"full"`` or ``"directional"``."""
        return str(self.context.get("mode", "full"))

    def codes(self) -> list[str]:
        """Codes of the findings, in order."""
        return [f.code for f in self.findings]

    @property
    def blocks_verdict(self) -> str:
        """Which blocks are right and which are wrong, in one line."""
        ok = [f"{b.name} (rel diff {b.relative_difference:.1e})" for b in self.blocks if b.passed]
        bad = [b.name for b in self.blocks if not b.passed]
        if not bad:
            return "correct: every block" + (f" ({', '.join(ok)})" if len(ok) <= 6 else "")
        right = ", ".join(ok) if ok else "none"
        return f"correct: {right}; wrong: {', '.join(bad)}"

    @property
    def verdict(self) -> str:
        state = "PASSED" if self.passed else "FAILED"
        failed = self.failed_blocks
        where = "" if self.passed else f"; mismatch in {', '.join(failed) if failed else 'no block'}"
        lam = self.context.get("lambda_")
        lam_s = f", lambda={lam:g}" if isinstance(lam, (int, float)) else ""
        how = f"{self.method}, directional" if self.mode == "directional" else self.method
        return (f"{state}  {how} ({self.dtype}{lam_s}, step {self.step_rule} {self.step:.2g}): "
                f"relative difference {self.relative_difference:.3g}, max abs error {self.max_abs_error:.3g}"
                f"{where}")

    # ------------------------------------------------------------------ output
    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        """JSON-safe summary.

        Keys: ``method``, ``step``, ``step_rule``, ``dtype``, ``passed``, ``relative_difference``,
        ``max_abs_error``, ``max_rel_error``, ``rtol``, ``cost``, ``n_params``, ``n_evals``, ``seconds``,
        ``blocks`` (list of ``{name, shape, relative_difference, max_abs_error, n_failed, passed}``),
        ``worst`` (list of ``{block, index, flat_index, numerical, analytical, error, tolerance}``),
        ``findings`` (list of ``{code, blocks, message, evidence}``), ``context``, ``step_verdict``,
        ``correct_blocks``, ``wrong_blocks`` (lists of block names), ``notes`` (list of strings); with
        ``include_arrays=True`` also ``numerical`` and ``analytical`` (lists of P numbers).
        Non-finite numbers are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
        """
        d: dict[str, Any] = {
            "method": self.method, "step": _num(self.step), "step_rule": self.step_rule, "dtype": self.dtype,
            "passed": self.passed, "relative_difference": _num(self.relative_difference),
            "max_abs_error": _num(self.max_abs_error), "max_rel_error": _num(self.max_rel_error),
            "rtol": _num(self.rtol), "cost": _num(self.cost), "n_params": int(self.numerical.size),
            "n_evals": self.n_evals, "seconds": _num(self.seconds),
            "blocks": [b.to_dict() for b in self.blocks], "worst": [e.to_dict() for e in self.worst],
            "findings": [f.to_dict() for f in self.findings], "context": _jsonable(self.context),
            "step_verdict": self.step_verdict, "correct_blocks": self.passed_blocks,
            "wrong_blocks": self.failed_blocks, "notes": list(self.notes), "mode": self.mode,
        }
        if include_arrays:
            d["numerical"] = [_num(v) for v in self.numerical]
            if self.measured is not None:
                d["measured"] = [bool(v) for v in self.measured]
            d["analytical"] = [_num(v) for v in self.analytical]
        return d

    def render(self, top: int | None = None) -> str:
        """The readable table: verdict, per-block lines, worst entries and findings."""
        lines = [self.verdict]
        width = max([len(b.name) for b in self.blocks] + [5])
        for b in self.blocks:
            mark = "ok  " if b.passed else "FAIL"
            shape = "x".join(map(str, b.shape)) or "scalar"
            extra = "" if b.passed else f"  ({b.n_failed} of {int(np.prod(b.shape))} entries off)"
            lines.append(f"  {mark} {b.name:<{width}} {shape:>9}  rel diff {b.relative_difference:9.2e}"
                         f"  max abs err {b.max_abs_error:9.2e}{extra}")
        worst = self.worst[: (len(self.worst) if top is None else top)]
        if worst:
            lines.append("  worst entries:")
            lw = max(len(e.label) for e in worst)
            for e in worst:
                lines.append(f"    {e.label:<{lw}}  numerical {e.numerical: .10e}  analytical {e.analytical: .10e}"
                             f"  error {e.error:.2e} (tol {e.tolerance:.1e})")
        for f in self.findings:
            where = f" [{', '.join(f.blocks)}]" if f.blocks else ""
            lines.append(f"  {f.code}{where}: {f.message}")
        if self.step_verdict or self.findings:
            lines.append(f"  {self.blocks_verdict}")
        if self.step_verdict:
            lines.append(f"  step: {self.step_verdict}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.mode == "directional":
            c = self.context
            loc = c.get("localized", [])
            lines.insert(1, f"  directional: {c.get('n_directions')} random directions"
                         + (f"; localized {len(loc)} entr{'y' if len(loc) == 1 else 'ies'}" if loc else "")
                         + (f"; spread over {', '.join(c['spread_blocks'])}" if c.get("spread_blocks") else "")
                         + f" (evaluations: {', '.join(f'{k} {v}' for k, v in c.get('evaluations', {}).items())})")
        lines.append(f"  {self.n_evals} evaluations in {self.seconds * 1e3:.1f} ms")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (f"Report(method={self.method!r}, passed={self.passed}, "
                f"relative_difference={self.relative_difference:.3g}, findings={self.codes()})")
