"""Step-size sweeps: the error of each method against the step, to answer "is my step the problem?".

For a smooth cost, the error of a difference rule of order ``p`` against the step ``h`` is V-shaped on
log-log axes: roundoff ``eps |J| / h`` falls on the left, truncation ``h^p`` rises on the right, and the
bottom of the V is at the automatic step.  A wrong analytic gradient shows up as a mismatch far above the
bottom of every V: no step can close it.

Errors are measured against the best available reference: the complex step when the target accepts
complex parameters and is analytic (confirmed along a random direction, see
:mod:`layerkit.check.applicability`; error ~ eps), else Richardson extrapolation at its automatic step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from ..check.applicability import confirm_analytic
from ..check.methods import ComplexStep, Richardson, resolve
from ..check.noise import measure_noise, step_excess
from ..check.probes import CoordinateProbe
from ..check.report import json_number
from ..check.subjects import Subject, problem_subject
from ..errors import ComplexEvaluationError, InputError

DEFAULT_STEPS = tuple(10.0 ** -k for k in range(1, 13))


def _rel(a: NDArray, b: NDArray) -> float:
    den = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / den if den else float(np.linalg.norm(a - b))


@frozen(eq=False)
class SweepResult:
    """Errors of each method at each step.

    Attributes
    ----------
    steps : tuple of float
        The absolute steps ``h`` swept (largest first).
    errors : dict method -> NDArray (len(steps),)
        ``||n(h) - ref|| / ||ref||`` over all entries.
    block_errors : dict method -> dict block -> NDArray
        The same per block.
    auto_steps, auto_errors : dict method -> float
        Each method's automatic base step and the error there.
    best_steps : dict method -> float
        The swept step with the smallest error.
    analytic_error : float
        ``||a - ref|| / ||ref||``: how far the analytic gradient is from the reference.
    reference : str
        ``"complex-step"`` or ``"richardson"``.
    """

    steps: tuple[float, ...]
    errors: dict[str, NDArray]
    block_errors: dict[str, dict[str, NDArray]]
    auto_steps: dict[str, float]
    auto_errors: dict[str, float]
    best_steps: dict[str, float]
    analytic_error: float
    reference: str
    dtype: str = field(default="float64")

    @property
    def best_error(self) -> float:
        """The smallest error any method reached at any swept step."""
        return min(float(np.nanmin(e)) for e in self.errors.values())

    @property
    def step_is_the_problem(self) -> bool:
        """True when some step brings a method as close to the reference as the analytic gradient is."""
        return self.analytic_error <= 10 * self.best_error

    def verdict(self) -> str:
        best = self.best_error
        if self.step_is_the_problem:
            return (f"the analytic gradient agrees with the reference to {self.analytic_error:.1e}, as closely as "
                    f"the best step can measure ({best:.1e}): any disagreement seen is the step's, not the code's")
        return (f"the analytic gradient is {self.analytic_error:.1e} away from the reference, "
                f"{self.analytic_error / max(best, 1e-300):.0e} times the best step's error ({best:.1e}): "
                "no step size explains the mismatch; the analytic gradient is wrong")

    def table(self) -> str:
        methods = list(self.errors)
        head = "      h    " + "".join(f"{m:>16}" for m in methods)
        lines = [head]
        for i, h in enumerate(self.steps):
            cells = []
            for m in methods:
                mark = "<" if self.best_steps[m] == h else " "
                err = self.errors[m][i]
                cells.append(f"{err:>14.2e} {mark}" if np.isfinite(err) else f"{'(no change)':>14} {mark}")
            lines.append(f"  {h:8.0e} " + "".join(cells))
        lines.append("  auto     " + "".join(f"{self.auto_errors[m]:>14.2e} *" for m in methods))
        lines.append("  (auto steps: " + ", ".join(f"{m} {self.auto_steps[m]:.1e}" for m in methods)
                     + "; < marks the best swept step, * the automatic one; '(no change)': x + h rounds to x)")
        lines.append(f"  analytic gradient vs {self.reference}: {self.analytic_error:.2e}")
        lines.append(f"  {self.verdict()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "reference": self.reference, "dtype": self.dtype,
                "errors": {m: [json_number(v) for v in e] for m, e in self.errors.items()},
                "block_errors": {m: {b: [json_number(v) for v in e] for b, e in be.items()}
                                 for m, be in self.block_errors.items()},
                "auto_steps": dict(self.auto_steps), "auto_errors": dict(self.auto_errors),
                "best_steps": dict(self.best_steps), "analytic_error": self.analytic_error,
                "step_is_the_problem": self.step_is_the_problem, "verdict": self.verdict()}


def sweep_steps(problem: Any, methods: Sequence[Any] = ("forward", "central", "richardson"),
                steps: Sequence[float] = DEFAULT_STEPS) -> SweepResult:
    """Sweep absolute steps ``steps`` for each of ``methods`` on a problem (a :class:`~layerkit.Problem` or a
    subject; see the module docstring).  A network is evaluated in place and left as it was."""
    if not steps or any(not (isinstance(h, (int, float)) and 0 < h < np.inf) for h in steps):
        raise InputError("steps", "a non-empty sequence of positive floats", repr(steps))
    subject = problem_subject(problem)
    with subject.session():
        return _sweep(subject, methods, steps)


def _sweep(subject: Subject, methods: Sequence[Any], steps: Sequence[float]) -> SweepResult:
    f0, analytical = subject.evaluate()
    noise = measure_noise(subject.value, subject.x0, float(np.real(f0)))
    # Whole-cost re-evaluation, as a hand-written loop does it, so that roundoff shows (the network engine
    # differences costs exactly and would hide the left arm of the V).
    probe = CoordinateProbe(subject.value, subject.x0, f0, axis_scale=subject.axis_scale(),
                            noise_level=noise.level, noise_excess=step_excess(noise))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            confirm_analytic(subject.value, subject.x0, noise.level, noise.excess)
            ref = ComplexStep().estimate(CoordinateProbe(subject.value, subject.x0, f0)).values
        reference = "complex-step"
    except (ComplexEvaluationError, np.exceptions.ComplexWarning, TypeError, ValueError):
        ref = Richardson().estimate(probe).values
        reference = "richardson"
    strategies = [resolve(m) for m in methods]
    errors, block_errors, auto_steps, auto_errors, best = {}, {}, {}, {}, {}
    nan = np.full(subject.x0.size, np.nan)
    for s in strategies:
        est = []
        for h in steps:
            try:
                est.append(attrs.evolve(s, step=float(h)).estimate(probe).values)
            except InputError:  # below the dtype's resolution at some parameter: no estimate at this step
                est.append(nan)
        errors[s.name] = np.array([_rel(e, ref) for e in est])
        block_errors[s.name] = {b.name: np.array([_rel(e[b.slice], ref[b.slice]) for e in est])
                                for b in subject.layout.blocks}
        auto = attrs.evolve(s, step="auto")
        auto_steps[s.name] = float(auto.base_step(subject.x0.dtype, step_excess(noise)))
        auto_errors[s.name] = _rel(auto.estimate(probe).values, ref)
        best[s.name] = float(steps[int(np.nanargmin(errors[s.name]))])
    return SweepResult(tuple(float(h) for h in steps), errors, block_errors, auto_steps, auto_errors, best,
                       _rel(analytical, ref), reference, str(subject.x0.dtype))


def plot_sweep(result: SweepResult, path: str) -> None:
    """Draw the V-shaped error curves on log-log axes into ``path`` (PNG); needs matplotlib.

    Raises ImportError with install instructions when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'layerkit[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    h = np.asarray(result.steps)
    for m, err in result.errors.items():
        line, = ax.loglog(h, np.maximum(err, 1e-17), marker="o", label=m)
        ax.loglog([result.auto_steps[m]], [max(result.auto_errors[m], 1e-17)], marker="*", markersize=14,
                  color=line.get_color(), linestyle="none")
    ax.axhline(max(result.analytic_error, 1e-17), color="black", linestyle="--",
               label=f"analytic gradient ({result.analytic_error:.1e})")
    ax.set_xlabel("step h")
    ax.set_ylabel(f"relative error vs {result.reference}")
    ax.set_title("error against step size (stars: automatic steps)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
