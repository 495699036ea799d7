"""The public entry points, :func:`check_function`, :func:`check_network`, :func:`check_layer`, and the one
orchestrator behind them, :func:`run_check`.

A check, in order:

1. evaluates the analytic gradient at ``x0`` twice, through fresh and through reused buffers: a difference
   is a ``stateful-gradient`` finding and fails the check; two different costs mean a nondeterministic cost;
2. chooses what computes the cost changes (the *evaluator*): the subject's own cost, whose noise it measures
   first (:mod:`layerkit.check.noise`), or, for a network, the engine (:mod:`layerkit.fast.probe`), whose
   predictions it first compares with the network's own cost along a random direction in every block; on
   disagreement the engine is not used and the report's notes say why;
3. for the complex step, confirms that the cost is analytic along a random direction (else the method is
   not applicable, :class:`~layerkit.errors.ComplexEvaluationError`); its tolerances are then never
   tighter than that confirmation could resolve (a non-analytic part below it would go unseen);
4. estimates the numerical gradient and builds every tolerance from the estimate's own error
   (:mod:`layerkit.check.tolerance`);
5. measures the failing entries again over a ladder of steps (:mod:`layerkit.check.refine`), within a budget;
6. builds the :class:`~layerkit.check.report.Report` and lets the doctor (:mod:`layerkit.diagnosis.doctor`)
   explain a failure, handing it a budgeted runner for the experiments it may do (:class:`Experiments`).

Everything runs inside the subject's session: the caller's network, layer or vector is as it was afterwards,
whatever happens (see :mod:`layerkit.check.subjects`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from ._validate import describe, positive_int
from .check.applicability import confirm_analytic
from .check.directional import DEFAULT_DIRECTIONS, FunctionDirections, run_directional
from .check.kinks import COARSER, MAX_LINES, SETTLED, coordinate_delta, finding_text, kinked_sides, line_sides, settle
from .check.methods import ComplexStep, Step, get_method
from .check.noise import EXCESS_THRESHOLD, Noise, measure_noise, step_excess
from .check.probes import CoordinateProbe
from .check.refine import Scales, across_scales, confirms, refine
from .check.report import Finding, Report
from .check.subjects import LayerSubject, NetworkSubject, Subject, function_subject
from .check.tolerance import SAFETY, floor, tolerances
from .diagnosis.doctor import diagnose as run_doctor
from .errors import ComplexEvaluationError, InputError
from .fast.directions import EngineRefused, NetworkDirections
from .fast.probe import NetworkProbe, NetworkState, rounding_scales, supports_engine
from .nn.layers import Layer
from .nn.layout import Order
from .nn.losses import L2
from .nn.network import Network
from .numerics import AGREEMENT, NOISE_C, machine_eps

#: Engines a network check may ask for.
ENGINES = ("auto", "generic", "structured")
#: The doctor's follow-ups may spend twice the check's evaluations, and at least this many: enough for the
#: kink test on 24 entries (96), the Taylor fit (13) and a directional check of a few layers.
DOCTOR_BUDGET = 256
#: ``mode="auto"`` runs a full check when it takes at most this many seconds at the measured time per
#: evaluation, else the directional check within this many seconds' worth of evaluations.
AUTO_SECONDS = 10.0
#: The smallest evaluation budget of the directional check in auto mode.
AUTO_MIN_BUDGET = 150
#: A mismatch of at most this many times its tolerance is inconclusive when the second look showed that the
#: error model misjudges this cost (see ``_Check.undecided``).
MARGINAL = 4.0
#: Failing entries whose estimates are compared across a wide range of steps (20 evaluations each).
MAX_SCALES = 8


def resolve_method(method: Any, step: Step | None = None) -> Any:
    """A strategy from a registered name or a strategy object, with ``step`` applied when given."""
    m = get_method(method) if isinstance(method, str) else method
    if not (hasattr(m, "estimate") and hasattr(m, "name") and hasattr(m, "step")):
        raise InputError("method", "a registered method name or a strategy with name, step and estimate",
                         describe(method))
    if step is not None:
        m = attrs.evolve(m, step=step)
    return m


def _tolerance_override(value: Any, argument: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0) or value == float("inf"):
        raise InputError(argument, "a finite number >= 0", describe(value))
    return float(value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError("seed", "a non-negative integer", describe(value))
    return int(value)


def _executor(value: Any) -> Executor | None:
    if value is not None and not callable(getattr(value, "submit", None)):
        raise InputError("executor", "a concurrent.futures.Executor (an object with submit)", describe(value))
    return value


def _same_gradient(a: NDArray, b: NDArray) -> bool:
    """Equal up to the rounding a repeated evaluation may show (multithreaded sums): ``8 eps max |a|``."""
    if a.shape != b.shape:
        return False
    with np.errstate(invalid="ignore"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0))
    finite = np.isfinite(a) == np.isfinite(b)
    return bool(finite.all() and np.all(diff[np.isfinite(diff)] <= 8 * machine_eps(a.dtype) * scale))


class Experiments:
    """What the doctor may run, within a budget of cost evaluations (it never imports the orchestrator).

    Attributes
    ----------
    budget : int
        Evaluations the follow-ups may spend; ``spent`` counts them.  A request beyond it raises
        :class:`BudgetExceeded`, which the doctor turns into a note.
    """

    def __init__(self, check: _Check, budget: int) -> None:
        self._check = check
        self.budget = int(budget)
        self.spent = 0

    def _charge(self, n: int) -> None:
        if self.spent + n > self.budget:
            raise BudgetExceeded(f"the follow-up needs {n} evaluations and {max(0, self.budget - self.spent)} are left")
        self.spent += n

    @property
    def subject(self) -> Subject:
        return self._check.subject

    def probe(self, axes: NDArray) -> Any:
        """The check's evaluator restricted to the coordinates ``axes`` (charged per evaluation it makes);
        after a directional check, the subject's own cost."""
        check = self._check
        if check.probe is None:
            check.probe = check.cost_probe()
        return _Charged(check.probe.subset(axes), self)

    def directions(self) -> Any:
        """The check's direction evaluator (for Taylor-remainder fits), charged per evaluation."""
        return _ChargedDirections(self._check.direction_probe(), self)

    def gradient(self, lambda_: float) -> NDArray | None:
        """The analytic gradient at ``x0`` with another ``lambda`` (networks only; None otherwise)."""
        subject = self._check.subject
        if not isinstance(subject, NetworkSubject):
            return None
        self._charge(1)
        other = NetworkSubject(subject.network, subject.objective.X, subject.objective.Y, lambda_)
        return other.evaluate()[1]

    def penalty_gradient(self) -> NDArray | None:
        """``(lambda/m) theta`` on the penalized entries of a network (None for other subjects)."""
        subject = self._check.subject
        if not isinstance(subject, NetworkSubject) or not subject.lambda_:
            return None
        g = np.zeros(subject.x0.size)
        mask = subject.network.penalized_mask()
        g[mask] = L2.gradient(subject.lambda_, float(subject.m or 1), subject.x0[mask].astype(np.float64))
        return g

    def check_layers(self) -> list[tuple[int, Any, Report]]:
        """Each layer of a network checked on its own (directional mode, a few examples) at ``x0``."""
        subject = self._check.subject
        if not isinstance(subject, NetworkSubject):
            return []
        out = []
        net = subject.network
        a = subject.objective.X[: min(subject.m or 1, 4)]
        for k, layer in enumerate(net.layers):
            self._charge(8)
            rep = run_check(LayerSubject(layer, a), self._check.strategy_for_layers(), diagnose=False,
                            mode="directional", seed=k)
            self.spent += rep.n_evals
            out.append((k, layer, rep))
            with np.errstate(all="ignore"):
                a = layer.forward(a)
        return out


class BudgetExceeded(Exception):
    """A follow-up experiment would exceed the doctor's evaluation budget."""


class _Charged:
    """A probe whose evaluations are charged to an :class:`Experiments` budget."""

    def __init__(self, probe: Any, experiments: Experiments) -> None:
        self._probe, self._exp = probe, experiments

    def __getattr__(self, name: str) -> Any:
        return getattr(self._probe, name)

    def delta(self, steps: NDArray) -> NDArray:
        self._exp._charge(int(np.size(steps)))
        return self._probe.delta(steps)


class _ChargedDirections(_Charged):
    def delta(self, dirs: Any, steps: NDArray) -> Any:  # type: ignore[override]
        self._exp._charge(int(np.size(steps)))
        return self._probe.delta(dirs, steps)


class _Check:
    """One run of the pipeline of the module docstring."""

    def __init__(self, subject: Subject, strategy: Any, *, engine: str, executor: Executor | None, seed: int,
                 top: int, rtol: float | None, atol: float | None) -> None:
        self.subject, self.strategy, self.engine = subject, strategy, engine
        self.executor, self.seed, self.top = executor, seed, top
        self.rtol_o, self.atol_o = rtol, atol
        self.t0 = time.perf_counter()
        self.notes: list[str] = []
        self.findings: list[Finding] = []
        #: Findings that explain without failing the check (``nonsmooth``).
        self.info: list[Finding] = []
        self.evals: dict[str, int] = {}  # evaluations of the subject's cost, by purpose
        self.noise: Noise | None = None
        self.probe: Any = None
        self.evaluator = "cost"
        self._directions: Any = None
        self._rounding: NDArray | float | None = None
        self.analytic_resolution: NDArray | float = 0.0  # per entry, from the complex step's confirmation
        self.first_reach: NDArray | None = None
        self.truncation_bound = False  # whether the first estimate's error is mostly truncation
        #: What the second look found: entries a quarter step confirmed, entries measured over the ladder, and
        #: how many of those agree with the analytic gradient.
        self.looked = {"confirmed": 0, "measured": 0, "agree": 0}
        #: The directional check's evaluation budget (auto mode) and a progress callback.
        self.budget: int | None = None
        #: The evaluations auto mode may take, when the caller fixed them (None: AUTO_SECONDS' worth).
        self.max_evals: int | None = None
        self.progress: Callable[[str, int], None] | None = None

    # ------------------------------------------------------------------ shared steps
    def count(self, purpose: str, n: int) -> None:
        self.evals[purpose] = self.evals.get(purpose, 0) + int(n)

    def analytic(self) -> None:
        """The gradient twice: fresh buffers, then reused ones (module docstring, step 1).  A network of
        layerkit's own layers is stateless by construction; it is evaluated once."""
        if getattr(self, "_analyzed", False):  # auto mode timed it already
            return
        self._analyzed = True
        s = self.subject
        self.f0, self.a = s.evaluate(fresh=True)
        if getattr(s, "known_stateless", False):
            self.f1 = float(np.real(self.f0))
            self.count("analytic", 1)
            return
        f1, a1 = s.evaluate(fresh=False)
        self.f1 = float(np.real(f1))
        self.count("analytic", 2)
        f0 = float(np.real(self.f0))
        if abs(self.f1 - f0) > 4 * machine_eps(s.x0.dtype) * abs(f0):
            self.findings.append(Finding(
                "nondeterministic-cost", (),
                f"the cost at the same point came out as {f0:.17g} and then {self.f1:.17g} (spread "
                f"{abs(self.f1 - f0):.2e}): the target is not a deterministic function of its parameters (random "
                "sampling, dropout, a global counter?), so no numerical gradient of it can be trusted",
                {"costs": [f0, self.f1], "spread": abs(self.f1 - f0)}))
        if not _same_gradient(self.a, a1):
            diff = np.abs(self.a.astype(np.float64) - a1.astype(np.float64))
            j = int(np.nanargmax(diff))
            ratio = float(a1[j] / self.a[j]) if self.a[j] != 0 else math.inf
            how = ("it accumulates into its buffers (g += ... where g[...] = ... is meant): the second call "
                   f"returned {ratio:.3g} times the first" if abs(ratio - 2) < 1e-6 else
                   "it depends on the call history (state kept between calls)")
            self.findings.append(Finding(
                "stateful-gradient", (s.layout.block_of(j).name,),
                f"the gradient at the same point differs between two calls (fresh buffers, then the buffers of "
                f"the first call): at {s.layout.label(j)} {float(self.a[j]):.6g} then {float(a1[j]):.6g}; "
                f"{how}.  A gradient must be a function of the parameters alone",
                {"entries": [s.layout.label(int(k)) for k in np.flatnonzero(diff > 0)[:20]],
                 "count": int(np.sum(diff > 0)), "ratio": ratio}))

    @property
    def rounding_dtype(self) -> np.dtype:
        """The dtype the analytic gradient's rounding is judged in: the less precise of the parameters' and the
        gradient's own (a float32 gradient of a float64 cost carries float32 rounding)."""
        x, a = np.dtype(self.subject.x0.dtype), np.dtype(self.a.dtype)
        if x.kind != "f" or a.kind != "f":
            return x
        return a if machine_eps(a) > machine_eps(x) else x

    def measured_noise(self) -> Noise:
        """The subject's cost noise, measured once (:func:`~layerkit.check.noise.measure_noise`)."""
        if self.noise is None or not self.noise.measured:
            scale = np.maximum(1.0, np.abs(self.subject.x0.astype(np.float64)))
            axis = self.subject.axis_scale()
            if axis is not None:
                scale = scale / axis
            self.noise = measure_noise(self.subject.value, self.subject.x0, float(np.real(self.f0)), scale=scale,
                                       seed=self.seed, f_again=self.f1)
            self.count("noise", self.noise.n_evals)
            if not self.noise.deterministic and "nondeterministic-cost" not in [f.code for f in self.findings]:
                self.findings.append(Finding(
                    "nondeterministic-cost", (),
                    f"the cost at the same points came out differently on two passes (noise "
                    f"{self.noise.level:.2e}): the target is not a deterministic function of its parameters "
                    "(random sampling, dropout, a call counter?), so no numerical gradient of it can be trusted",
                    {"noise": self.noise.level, "spread": self.noise.level}))
        return self.noise

    def assumed_noise(self) -> Noise:
        return Noise.assumed(float(np.real(self.f0)), self.subject.x0.dtype, deterministic=self.f1 == self.f0)

    def cost_probe(self, dtype_noise: bool = True) -> CoordinateProbe:
        noise = self.measured_noise()
        probe = CoordinateProbe(self.subject.value, self.subject.x0, self.f0, executor=self.executor,
                                axis_scale=self.subject.axis_scale(), noise_level=noise.level)
        probe.noise_excess = step_excess(noise)
        return probe

    def engine_probe(self) -> NetworkProbe | None:
        """The network engine, verified against the network's own cost (step 2); None when not applicable
        or when it disagrees (with a note)."""
        s = self.subject
        if not isinstance(s, NetworkSubject) or self.engine == "generic" or not hasattr(self.strategy, "plan"):
            return None
        if not supports_engine(s.network):
            if self.engine == "structured":
                raise InputError("engine", "a network whose last layer is a Sigmoid and whose class keeps "
                                 "Network's cost for engine='structured'", repr(s.network))
            return None
        obj = s.objective
        X = obj.inputs(s.network.params.dtype)
        state = NetworkState.at(s.network, X, obj.Y, obj.lambda_, s.activations())
        probe = NetworkProbe(state, s.x0, self.f0, axis_scale=s.axis_scale())
        steps = None
        if not s.known_rules:  # a user's rules are also compared with the real cost at the check's own steps
            try:
                steps = self.strategy.steps(probe)
            except (AttributeError, TypeError):  # a user strategy without per-axis steps
                pass
        if not self.verified(probe.verify(s.value, self.assumed_noise().level, self.seed, steps), probe,
                             "engine"):
            return None
        return probe

    def verified(self, checks: list[Any], probe: Any, what: str) -> bool:
        """Whether every prediction agreed with the real cost within the noise; the noise is measured along
        the direction of a disagreement before concluding that they do not agree (a float32 cost can be flat
        along one unit's weights and smooth elsewhere).  A note says why the engine was not used."""
        self.count("verify", len(checks))
        if all(c.agrees for c in checks):
            return True
        settled = []
        for c in checks:
            if not c.agrees and c.direction is not None:
                noise = measure_noise(self.subject.value, self.subject.x0, float(np.real(self.f0)),
                                      direction=c.direction, f_again=self.f1)
                self.count("verify", noise.n_evals)
                c = attrs.evolve(c, threshold=max(c.threshold, AGREEMENT * 2 * noise.level))
            settled.append(c)
        bad = [c for c in settled if not c.agrees]
        if not bad:
            return True
        worst = max(bad, key=lambda c: c.difference / max(c.threshold, 1e-300))
        self.notes.append(
            f"the fast {what} was not used: its change of the cost {worst.what} in {worst.block} "
            f"({worst.predicted:.10g}) differs from the network's own ({worst.real:.10g}) by "
            f"{worst.difference:.2e}, beyond the noise ({worst.threshold:.1e}); the network's own cost was "
            "re-evaluated instead (a subclass, a tied or shared layer, an instance's own forward, or a layer "
            "rule that does not match its forward)")
        return False

    def direction_probe(self) -> Any:
        if self._directions is None:
            s = self.subject
            probe = None
            if isinstance(s, NetworkSubject) and self.engine != "generic" and NetworkDirections.supports(s.network) \
                    and supports_engine(s.network):
                obj = s.objective
                state = NetworkState.at(s.network, obj.inputs(s.network.params.dtype), obj.Y, obj.lambda_,
                                        s.activations())
                probe = NetworkDirections(state, s.x0, self.f0)
                if not probe.confirmed():
                    self.notes.extend(probe.rules.notes)
                    probe = None
                else:
                    try:
                        checks = probe.verify(s.value, self.assumed_noise().level, self.seed,
                                              small_steps=not s.known_rules)
                    except EngineRefused as exc:
                        self.notes.append(str(exc))
                        probe = None
                    else:
                        if self.verified(checks, probe, "direction engine"):
                            self.evaluator = "engine"
                        else:
                            probe = None
            if probe is None:
                noise = self.measured_noise()
                fallback = FunctionDirections(s.value, s.x0, self.f0, self.executor, noise.level)
                fallback.noise_excess = step_excess(noise)
                self._directions = fallback
                return fallback
            self._directions = probe
        return self._directions

    def _run_directional(self, probe: Any, n_directions: int) -> Report:
        return run_directional(self.subject, self.strategy, probe, self.f0, self.a, n_directions=n_directions,
                               seed=self.seed, top=self.top, t0=self.t0, evaluations=self.evals,
                               noise=self.noise or self.assumed_noise(), evaluator=self.evaluator,
                               rounding_dtype=self.rounding_dtype, budget=self.budget, progress=self.progress)

    def choose_mode(self) -> str:
        """``mode="auto"``: a full check when it costs at most :data:`AUTO_SECONDS` at the measured time per
        evaluation (always, for a network the engine checks: a few gradient evaluations), else the
        directional check with localization, within a budget of :data:`AUTO_SECONDS` worth of evaluations
        (at least :data:`AUTO_MIN_BUDGET`)."""
        s = self.subject
        if isinstance(s, NetworkSubject) and self.engine != "generic" and supports_engine(s.network):
            return "full"
        if isinstance(self.strategy, ComplexStep) or not hasattr(self.strategy, "plan"):
            return "full"
        points = len(getattr(self.strategy, "offsets", (1, -1))) or 2
        n_full = s.x0.size * points + 32
        if self.max_evals is not None:  # a budget in evaluations: the same choice on every machine
            if n_full <= self.max_evals:
                return "full"
            self.budget = self.max_evals
            cost = f"more than the budget of {self.max_evals}"
        else:
            t = time.perf_counter()
            self.analytic()
            per_eval = (time.perf_counter() - t) / max(1, self.evals.get("analytic", 1))
            if n_full * per_eval <= AUTO_SECONDS:
                return "full"
            self.budget = max(AUTO_MIN_BUDGET, int(AUTO_SECONDS / max(per_eval, 1e-9)))
            cost = f"{n_full * per_eval:.0f} s at {1e3 * per_eval:.3g} ms each"
        self.notes.append(
            f"auto mode: a full check would take about {n_full} evaluations ({cost}), so the directional check "
            f"ran instead: random directions, then localization by rows and columns, within {self.budget} "
            "evaluations; mode='full' checks every entry")
        return "directional"

    def strategy_for_layers(self) -> Any:
        """The check's method at its automatic step (a step fixed for the network says nothing of a layer)."""
        return attrs.evolve(self.strategy, step="auto") if hasattr(self.strategy, "plan") else get_method("central")

    # ------------------------------------------------------------------ complex step
    def confirm_analytic(self) -> None:
        """Compare the complex step with real differences along one random direction (step 3); not needed for
        a network of layerkit's own layers, which are analytic."""
        if getattr(self.subject, "known_analytic", False):
            return
        kinked = getattr(self.subject, "kinked", None)
        if kinked:
            raise ComplexEvaluationError(
                f"the complex step is not applicable: the cost is not analytic (layer {kinked[0][0]} has kinks at "
                f"{', '.join(f'{v:g}' for v in kinked[0][1])}, where it is not differentiable); use method='central' "
                "or 'richardson' instead")
        noise = self.measured_noise()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            try:
                evals, self.analytic_resolution = confirm_analytic(self.subject.value, self.subject.x0,
                                                                   noise.level, noise.excess, self.seed)
                self.count("analyticity", evals)
            except np.exceptions.ComplexWarning as exc:
                raise ComplexEvaluationError(
                    f"the target cannot be evaluated at complex parameters: it discards the imaginary part "
                    f"({exc}); use method='central' or 'richardson' instead") from None

    # ------------------------------------------------------------------ the full check
    def full(self) -> Report:
        s, strategy = self.subject, self.strategy
        self.analytic()
        probe: Any
        if isinstance(strategy, ComplexStep) or getattr(strategy, "name", "") == "complex-step":
            self.confirm_analytic()
            probe = self.cost_probe()
        else:
            engine: Any = self.engine_probe()
            if engine is not None:
                self.evaluator = "engine"
                self.noise = self.noise or self.assumed_noise()
                probe = engine
            else:
                probe = self.cost_probe()
        self.probe = probe
        est = strategy.estimate(probe)
        self._steps = np.asarray(est.step, dtype=np.float64)
        if est.noise is None and hasattr(strategy, "tolerances"):  # a user strategy with its own model
            scale = float(np.max(np.abs(self.a[np.isfinite(self.a)]), initial=0.0))
            rtol, atol = strategy.tolerances(s.x0.dtype, float(np.real(self.f0)), scale, est.step)
        else:
            rtol, atol = tolerances(est, self.a, self.rounding_dtype)
            atol = atol + self.analytic_rounding(probe)
            # the complex step is no more precise than the real differences that confirmed the cost analytic
            atol = np.maximum(atol, self.analytic_resolution)
        self.model_rtol = rtol
        model = np.broadcast_to(atol, self.a.shape).astype(np.float64)
        rtol = rtol if self.rtol_o is None else self.rtol_o
        atol = np.broadcast_to(atol if self.atol_o is None else self.atol_o, self.a.shape).astype(np.float64)
        values = np.asarray(est.values, dtype=np.float64).copy()
        error = None if est.error is None else np.asarray(est.error, dtype=np.float64).copy()
        if est.noise is not None and est.truncation is not None:
            with np.errstate(invalid="ignore"):
                self.truncation_bound = bool(np.nansum(est.truncation) > np.nansum(est.noise))
        refined = self.second_look(values, atol, rtol, error, probe, model)
        refined = self.kinks(values, atol, rtol, probe, model, refined)
        if getattr(probe, "notes", None):
            self.notes.extend(probe.notes)
        h0 = strategy.base_step(s.x0.dtype, getattr(probe, "noise_excess", 1.0)) if strategy.step == "auto" \
            else float(strategy.step)
        n_evals = probe.n_evals + sum(self.evals.values())
        report = Report.build(
            method=strategy.name, step=h0, step_rule="auto" if strategy.step == "auto" else "fixed",
            dtype=s.x0.dtype, numerical=values, analytical=self.a, rtol=rtol, atol=atol, layout=s.layout,
            x=s.x0, cost=self.f0, n_evals=n_evals, seconds=time.perf_counter() - self.t0, error_estimate=error,
            top=self.top, subject=s.kind, lambda_=s.lambda_, m=s.m, mode="full", evaluator=self.evaluator,
            noise=self.noise, refined=refined, first_reach=self.first_reach if refined is not None else None,
            model_tolerance=self.model_rtol * np.maximum(np.abs(values), np.abs(self.a)) + model)
        if not getattr(probe, "cheap", False):
            self.unresolved(report, model - floor(self.a, self.rounding_dtype))
            self.undecided(report, probe)
            report = attrs.evolve(report, n_evals=probe.n_evals + sum(self.evals.values()),
                                  seconds=time.perf_counter() - self.t0)
        return self.finish(report)

    def undecided(self, report: Report, probe: Any) -> None:
        """A mismatch is inconclusive, not a failure, when the check has evidence that finite differences of
        this cost do not measure its derivative (a precision-limited finding says which and what to do;
        nothing here can make a check pass):

        * the second look found most of the entries it measured again to agree with the gradient after
          failing at the first step (the error model misjudged this cost), and no entry fails by more than
          ``MARGINAL`` times its tolerance;
        * or, for up to ``MAX_SCALES`` failing entries (the worst first), estimates over a wide range of steps
          (:func:`~layerkit.check.refine.across_scales`) contradict the mismatch: some step resolves it and
          agrees with the gradient, or none resolves it, and no entry has it established.  A staircase of
          rounded values (``log(1 - h)`` at a saturated unit, a float32 cost) does that; a wrong gradient,
          on a cost noisy or not, disagrees with every step that resolves it, and stays FAILED.

        A non-finite analytic entry fails whatever the estimates say."""
        mismatch = report.mismatch
        if not mismatch.any() or (mismatch & ~np.isfinite(self.a)).any():
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.abs(report.numerical - self.a) / report.tolerance
        ratio = np.where(np.isfinite(ratio), ratio, np.inf)
        seen = self.looked
        if np.max(ratio[mismatch]) <= MARGINAL and seen["measured"] \
                and 2 * seen["agree"] >= seen["measured"] + seen["confirmed"]:
            self._undecided(mismatch, f"the mismatch is at most {float(np.max(ratio[mismatch])):.2g} times its "
                            f"tolerance, and {seen['agree']} of the {seen['measured'] + seen['confirmed']} entries "
                            "measured again agreed with the gradient after failing at the first step: the error "
                            "model misjudges this cost")
            return
        if getattr(probe, "cheap", False) or not hasattr(probe, "subset"):
            return
        bad = np.flatnonzero(mismatch)
        chosen = bad[np.argsort(-ratio[bad], kind="stable")][:MAX_SCALES]
        scales = across_scales(probe.subset(chosen), self.a[chosen], report.numerical[chosen])
        why = self._scales_verdict(scales, [self.subject.layout.label(int(j)) for j in chosen],
                                   report.numerical[chosen], self.a[chosen])
        if why:
            self._undecided(mismatch, why)

    def _scales_verdict(self, scales: Scales, labels: list[str], first: NDArray, a: NDArray) -> str:
        """Why a mismatch is not established across scales ('' when it is)."""
        if scales.established.any() or not (scales.agree.any() or (scales.resolving == 0).any()):
            return ""
        if scales.agree.any():
            i = int(np.argmax(scales.agree))
            return (f"estimates at different steps contradict each other: {labels[i]} is {first[i]:.6g} at the "
                    f"check's step but {scales.value[i]:.6g} at a step of {scales.step[i]:.2g}, where it agrees "
                    f"with the analytic {a[i]:.6g}.  The cost's differences depend on the step more than a smooth "
                    "cost's can: a staircase of rounded values (log(1 - h) or 1 - h at a saturated unit, flat "
                    "within each stair; a cost computed in float32)")
        i = int(np.argmin(scales.resolving))
        return (f"no step resolves the mismatch of {labels[i]} ({abs(first[i] - a[i]):.2g}): the cost's "
                "differences are not precise enough anywhere to tell it from their own error")

    def _undecided(self, mismatch: NDArray, why: str) -> None:
        self.findings.append(Finding(
            "precision-limited", tuple(b.name for b in self.subject.layout.blocks if mismatch[b.slice].any()),
            f"inconclusive: {why}.  A mismatch here cannot be told from the finite differences' own error; "
            + ("use float64, or " if self.subject.x0.dtype == np.float32 else "")
            + "compute the cost stably (see the cancellation finding, if any) and check again",
            {"unresolved": True, "covers_mismatch": True}))

    def unresolved(self, report: Report, bound: NDArray) -> None:
        """When the estimate's own error bound (noise and truncation, without the floor) is as large as the
        gradient itself, ``||bound|| >= ||a||``, an error as large as the gradient would pass: a check that
        found no mismatch is then inconclusive (a precision-limited finding, and no PASS).  Blocks resolved
        that poorly in an otherwise resolved check (saturated units, whose gradient is tiny) get a note.
        A zero analytic gradient is judged by :meth:`unresolved_zero`."""
        a = np.abs(self.a.astype(np.float64))
        if report.mismatch.any():
            return
        if float(np.max(a, initial=0.0)) <= floor(self.a, self.rounding_dtype):
            self.unresolved_zero(float(np.max(bound, initial=0.0)), "entry")
            return
        weak = [(b, float(np.linalg.norm(bound[b.slice])) / max(float(np.linalg.norm(a[b.slice])), 1e-300))
                for b in self.subject.layout.blocks]
        weak = [(b, r) for b, r in weak if r >= 1]
        if not weak:
            return
        names = ", ".join(f"{b.name} (error bound {r:.2g} times its gradient's size)" for b, r in weak)
        if np.linalg.norm(bound) < np.linalg.norm(a):
            self.notes.append(f"the numerical derivative resolves {names} only poorly: an error of the size of "
                              "those blocks' gradients would not be seen there")
            return
        self.inconclusive(tuple(b.name for b, _ in weak),
                          f"the numerical derivative cannot resolve the gradient ({names}), so an error as large "
                          "as the gradient itself would pass unnoticed",
                          {"blocks": [b.name for b, _ in weak], "ratios": [r for _, r in weak]})

    def unresolved_directional(self, report: Report) -> None:
        """The directional form of :meth:`unresolved`: a passing directional check is inconclusive when no
        whole-vector direction resolves its own derivative, ``|u . g| <= bound`` for every direction (a
        negated or zeroed gradient would then pass them all)."""
        if not report.passed or report.directional is None:
            return
        tests = report.directional.tests
        a = max((abs(t.analytical) for t in tests), default=0.0)
        if a <= floor(self.a, self.rounding_dtype):
            self.unresolved_zero(max((t.bound for t in tests), default=0.0), "direction")
            return
        if any(abs(t.analytical) > t.bound for t in tests):
            return
        ratio = min(t.bound / max(abs(t.analytical), 1e-300) for t in tests)
        self.inconclusive(tuple(b.name for b in self.subject.layout.blocks),
                          f"the numerical derivative cannot resolve the gradient along any of the "
                          f"{len(tests)} directions (its error bound is at least {ratio:.2g} times u . g), so "
                          "an error as large as the gradient itself would pass unnoticed", {"ratios": [ratio]})

    def unresolved_zero(self, bound: float, what: str) -> None:
        """A zero analytic gradient has no size of its own to compare the error bound with.  The check is
        inconclusive when the cost carries noise beyond :data:`~layerkit.check.noise.EXCESS_THRESHOLD` times
        its rounding (the check knows it is blurred) and the bound exceeds ``sqrt(eps) max(|f0|, 1) / l``
        (``l = max(1, max |x0|)``), what a forward difference resolves on a clean cost of this size: a gradient
        that should not be zero but is smaller than the bound would pass unnoticed.  On a clean cost a zero
        gradient is resolved as well as finite differences can, and passes."""
        noise, x0 = self.noise, self.subject.x0
        if noise is None or not noise.measured or noise.excess <= EXCESS_THRESHOLD:
            return
        reference = math.sqrt(machine_eps(x0.dtype)) * max(abs(float(np.real(self.f0))), 1.0) \
            / max(1.0, float(np.max(np.abs(x0.astype(np.float64)), initial=0.0)))
        if not bound > reference:
            return
        self.inconclusive(tuple(b.name for b in self.subject.layout.blocks),
                          f"the analytic gradient is zero and the numerical derivative cannot resolve a "
                          f"gradient smaller than {bound:.1e} (its error bound per {what}), so a gradient that "
                          "should not be zero would pass unnoticed", {"bound": bound, "reference": reference})

    def inconclusive(self, blocks: tuple[str, ...], what: str, evidence: dict[str, Any]) -> None:
        """Record an unresolved check: a ``precision-limited`` finding that makes it INCONCLUSIVE."""
        noise = self.noise
        if self.truncation_bound:
            cause = ("the truncation of the difference rule at this step; a smaller step, or the automatic one, "
                     "resolves more")
        else:
            cause = (f"the cost's noise ({noise.level:.1e}, {noise.excess:.0f} times its rounding) divided by the "
                     "step" if noise is not None and noise.excess > 4 else "the rounding of the cost divided by the "
                     "step") + ("; use float64, or check the network with its engine (engine='auto')"
                                if self.subject.x0.dtype == np.float32 else
                                "; make the cost less noisy (a stable formula), or use a method of higher order")
        self.findings.append(Finding("precision-limited", blocks, f"inconclusive: {what}.  The cause is {cause}",
                                     {**evidence, "unresolved": True}))

    def analytic_rounding(self, probe: Any) -> NDArray | float:
        """``SAFETY 4 eps R_j``: the rounding of a network's backprop gradient entries (see
        :func:`~layerkit.fast.probe.rounding_scales`), which the engine's noise already counts and a
        re-evaluated cost does not; 0 when unknown (functions, layers, layers without ``magnitude``)."""
        s = self.subject
        if self._rounding is not None:
            return self._rounding
        self._rounding = 0.0
        if isinstance(probe, NetworkProbe) or not isinstance(s, NetworkSubject) or not supports_engine(s.network):
            return self._rounding
        obj = s.objective
        state = NetworkState.at(s.network, obj.inputs(s.network.params.dtype), obj.Y, obj.lambda_, s.activations())
        R = np.nan_to_num(rounding_scales(state), nan=0.0)
        self._rounding = SAFETY * NOISE_C * machine_eps(s.x0.dtype) * R
        return self._rounding

    def second_look(self, values: NDArray, atol: NDArray, rtol: float, error: NDArray | None, probe: Any,
                    model: NDArray) -> NDArray | None:
        """Measure the failing entries again (step 5).  The new estimate replaces the first where the two
        differ by more than the first tolerance (the first was off: a model that misjudged the truncation or
        the noise); where it confirms the first estimate the failure stands, so that re-measuring never
        loosens what the first step established.

        A re-evaluated cost gets a budget of about twice the first pass (16 evaluations per entry), spent on
        the entries that fail by least; when at least half of those turn out to agree with the analytic
        gradient, the first step's estimates are not to be trusted anywhere and every other failing entry is
        measured again too (a too tight tolerance costs evaluations, not a false alarm)."""
        if getattr(self.strategy, "name", "") == "complex-step" or not hasattr(probe, "subset") \
                or self.strategy.step != "auto":  # a step the user fixed is the step the report is about
            return None
        with np.errstate(invalid="ignore"):
            err = np.abs(values - self.a)
            tol = rtol * np.maximum(np.abs(values), np.abs(self.a)) + atol
            badness = np.where(np.isfinite(err), err / np.maximum(tol, np.finfo(float).tiny), np.inf)
        # a non-finite analytic entry fails whatever the estimate: nothing to measure again
        failing = np.flatnonzero(~(badness <= 1) & np.isfinite(self.a))
        if not failing.size:
            return None
        if getattr(probe, "cheap", False):
            budget = failing.size
        else:  # at most about twice the first pass: 16 evaluations per entry
            budget = max(16, int(2 * probe.n_evals) // 16)
        order = failing[np.argsort(badness[failing], kind="stable")]
        mask = np.zeros(values.size, dtype=bool)
        self.first_reach = np.zeros(values.size)
        seen = self.looked
        for k, chosen in enumerate((order[:budget], order[budget:])):
            if not chosen.size:
                continue
            if k == 1 and not 2 * seen["agree"] >= seen["measured"] + seen["confirmed"]:
                break  # the sample confirmed the first step: the rest of the failures stand
            confirmed, measured, agree = self._look_again(chosen, values, atol, rtol, error, probe, model, mask)
            seen["confirmed"] += confirmed
            seen["measured"] += measured
            seen["agree"] += agree
        looked = seen["confirmed"] + seen["measured"]
        if seen["confirmed"] == looked:
            self.notes.append(f"{looked} failing entr{'y was' if looked == 1 else 'ies were'} measured again at "
                              "a quarter of the step: the same values (the step is not the cause)")
            return None
        self.notes.append(
            f"{looked} entr{'y' if looked == 1 else 'ies'} failed at the first step and "
            f"{'was' if looked == 1 else 'were'} measured again: {seen['agree']} agree with the analytic "
            "gradient over a ladder of steps (the first step's estimate was off at those)"
            + (f", {seen['confirmed']} gave the same value at a quarter of the step" if seen["confirmed"] else "")
            + ("" if failing.size == looked else
               f"; {failing.size - looked} more failing entries were not measured again (budget)"))
        return mask

    def _look_again(self, chosen: NDArray, values: NDArray, atol: NDArray, rtol: float, error: NDArray | None,
                    probe: Any, model: NDArray, mask: NDArray) -> tuple[int, int, int]:
        """The second look at the failing entries ``chosen``, updating ``values``, ``atol``, ``model``,
        ``error``, ``mask`` and :attr:`first_reach` in place.  Returns how many a quarter step confirmed, how
        many were measured over the ladder and how many of those agree with the analytic gradient."""
        with np.errstate(invalid="ignore"):
            first = rtol * np.maximum(np.abs(values[chosen]), np.abs(self.a[chosen])) + atol[chosen]
        steps = np.asarray(getattr(self, "_steps", np.zeros(values.size)))[chosen]
        n_confirmed = 0
        if np.all(steps > 0):  # a first estimate confirmed at a quarter of its step stands as it is
            confirmed = confirms(probe.subset(chosen), values[chosen], steps, first)
            n_confirmed = int(np.sum(confirmed))
            chosen, first = chosen[~confirmed], first[~confirmed]
            if not chosen.size:
                return n_confirmed, 0, 0
        est = refine(probe.subset(chosen))
        m_rtol, m_atol = tolerances(est, self.a[chosen], self.rounding_dtype, scale=self.a)
        rounding = self.analytic_rounding(probe)
        if not np.isscalar(rounding):
            m_atol = m_atol + np.asarray(rounding)[chosen]
        r_rtol = m_rtol if self.rtol_o is None else self.rtol_o
        r_atol = m_atol if self.atol_o is None else np.full(chosen.size, self.atol_o)
        big = np.maximum(np.abs(est.values), np.abs(self.a[chosen]))
        with np.errstate(invalid="ignore"):
            ok = np.abs(est.values - self.a[chosen]) <= r_rtol * big + r_atol
            # The new estimate replaces the first only where it discredits it (they differ by more than the
            # first tolerance); where it confirms the first estimate, the first verdict stands.
            discredited = ~(np.abs(est.values - values[chosen]) <= first)
        ok &= discredited
        take = chosen[discredited]
        mask[take] = True
        assert self.first_reach is not None
        with np.errstate(invalid="ignore"):
            self.first_reach[take] = (first + np.abs(values[chosen] - self.a[chosen]))[discredited]
        values[take] = est.values[discredited]
        atol[take] = (r_atol + (r_rtol - rtol) * big)[discredited]
        model[take] = (m_atol + (m_rtol - self.model_rtol) * big)[discredited]
        if error is not None and est.truncation is not None:
            error[take] = est.truncation[discredited]
        return n_confirmed, int(chosen.size), int(np.sum(ok))

    def kinks(self, values: NDArray, atol: NDArray, rtol: float, probe: Any, model: NDArray,
              refined: NDArray | None) -> NDArray | None:
        """Failing entries of a network with kinked layers whose stencil crosses a kink are measured again
        without crossing one (:mod:`layerkit.check.kinks`); those that then agree pass, with a ``nonsmooth``
        finding.  Returns the mask of re-measured entries (``refined``, extended)."""
        s = self.subject
        sides = kinked_sides(s)
        if sides is None or not hasattr(probe, "subset"):
            return refined
        with np.errstate(invalid="ignore"):
            tol = rtol * np.maximum(np.abs(values), np.abs(self.a)) + atol
            failing = np.flatnonzero(~(np.abs(values - self.a) <= tol) & np.isfinite(self.a))
        if not failing.size:
            return refined
        steps = np.abs(np.asarray(getattr(self, "_steps", np.zeros(values.size)), dtype=np.float64)).reshape(-1)
        if steps.size != values.size:
            return refined
        rounding = self.analytic_rounding(probe)
        extra = (np.zeros(values.size) if np.isscalar(rounding) else np.asarray(rounding)) \
            + self.model_rtol * np.abs(self.a)
        settled: dict[int, Any] = {}
        with s.session():
            for j in failing[:MAX_LINES]:
                j = int(j)
                v = np.ones(1)
                out = settle(line_sides(sides, s.x0, j, j + 1, v), coordinate_delta(probe, j),
                             2 * float(steps[j]), float(self.a[j]), float(extra[j]))
                self.count("kinks", out.evals)
                if out.how in SETTLED or out.how == "between":
                    settled[j] = out
        if not settled:
            return refined
        mask = np.zeros(values.size, dtype=bool) if refined is None else refined
        if self.first_reach is None:
            self.first_reach = np.zeros(values.size)
        coarse = []
        for j, out in settled.items():
            self.first_reach[j] = tol[j] + abs(values[j] - self.a[j])
            if out.how == "between" or out.tolerance > COARSER * tol[j]:
                coarse.append(j)
            values[j], atol[j], model[j] = out.value, out.tolerance, out.tolerance
            mask[j] = True
        if coarse:
            worst = max(settled[j].tolerance / tol[j] for j in coarse)
            names = ", ".join(s.layout.label(j) for j in coarse[:5]) + (" ..." if len(coarse) > 5 else "")
            self.findings.append(Finding(
                "precision-limited", tuple(dict.fromkeys(s.layout.block_of(j).name for j in coarse)),
                f"inconclusive: the stencil of {len(coarse)} entr{'y' if len(coarse) == 1 else 'ies'} ({names}) "
                f"crossed a kink; measured without crossing one they agree only within up to {worst:.0f} times "
                "the first tolerance (a step that stays on one piece resolves less there), or their units sit on "
                "kinks that the entry moves in different directions (the analytic value lies between the "
                "one-sided slopes, and the cost cannot tell which piece each unit's derivative belongs to)",
                {"unresolved": True, "covers_mismatch": True, "entries": coarse}))
        entries = [j for j in settled if j not in coarse]
        if not entries:
            return mask
        names = ", ".join(s.layout.label(j) for j in entries[:5]) + (" ..." if len(entries) > 5 else "")
        smaller = [j for j in entries if settled[j].how == "own-piece"]
        sided = [j for j in entries if settled[j].how == "on-kink"]
        blocks = tuple(dict.fromkeys(s.layout.block_of(j).name for j in entries))
        self.info.append(Finding("nonsmooth", blocks, finding_text(len(entries), names, len(smaller), len(sided)),
                                 {"entries": entries, "own_piece": smaller, "on_kink": sided}))
        return mask

    def finish(self, report: Report) -> Report:
        if self.info:
            report = attrs.evolve(report, findings=tuple(self.info) + report.findings)
        if self.findings:
            report = attrs.evolve(report, passed=False, findings=tuple(self.findings) + report.findings)
        if self.notes:
            report = attrs.evolve(report, notes=report.notes + tuple(self.notes))
        return report

    # ------------------------------------------------------------------ the directional check
    def directional(self, n_directions: int) -> Report:
        self.analytic()
        probe = self.direction_probe()
        try:
            report = self._run_directional(probe, n_directions)
        except EngineRefused as exc:  # a user's rule disagreed with its forward mid-check: start over
            self.notes.append(str(exc))
            s = self.subject
            noise = self.measured_noise()
            probe = self._directions = FunctionDirections(s.value, s.x0, self.f0, self.executor, noise.level)
            probe.noise_excess = step_excess(noise)
            self.evaluator = "cost"
            report = self._run_directional(probe, n_directions)
        self.unresolved_directional(report)
        d = report.directional
        if not report.passed and d is not None and d.scales is not None:
            scales, labels, first, a = d.scales
            why = self._scales_verdict(scales, labels, first, a)
            if why:
                self._undecided(np.ones(self.a.size, dtype=bool), why)
        return self.finish(report)


def run_check(subject: Subject, method: Any = "central", *, step: Step | None = None, rtol: float | None = None,
              atol: float | None = None, top: int = 5, diagnose: bool = True, executor: Executor | None = None,
              engine: str = "auto", mode: str = "auto", n_directions: int | None = None, seed: int = 0,
              progress: Callable[[str, int], None] | None = None, budget: int | None = None) -> Report:
    """Check ``subject`` with ``method`` (the pipeline of the module docstring).  ``mode="auto"`` chooses
    between "full" and "directional" (see :meth:`_Check.choose_mode`); ``progress(stage, evaluations)`` is
    called as the directional check goes."""
    strategy = resolve_method(method, step)
    rtol_o, atol_o = _tolerance_override(rtol, "rtol"), _tolerance_override(atol, "atol")
    top = positive_int(top, "top", minimum=0)
    seed = _seed(seed)
    executor = _executor(executor)
    if mode not in ("auto", "full", "directional"):
        raise InputError("mode", "'auto', 'full' or 'directional'", repr(mode))
    if mode == "auto" and (rtol_o is not None or atol_o is not None or not hasattr(strategy, "plan")):
        mode = "full"  # tolerance overrides and the complex step are about every entry
    if engine not in ENGINES:
        raise InputError("engine", "'auto', 'structured' or 'generic'", repr(engine))
    if mode == "directional":
        if rtol_o is not None or atol_o is not None:
            raise InputError("rtol/atol", "no tolerance override in mode='directional' (it uses the error model)",
                             f"rtol={rtol}, atol={atol}")
        if not hasattr(strategy, "plan"):
            raise InputError("method", "a finite-difference method with a stencil (forward, central, "
                             "richardson or a FiniteDifference) for mode='directional'",
                             repr(getattr(strategy, "name", strategy)))
    directions = DEFAULT_DIRECTIONS if n_directions is None else positive_int(n_directions, "n_directions")
    max_evals = None if budget is None else positive_int(budget, "budget")
    # Floating-point warnings are silenced inside a check (the target's included): what overflows or turns
    # into NaN is reported, entry by entry, as a non-finite finding instead.
    with subject.session(), np.errstate(all="ignore"):
        check = _Check(subject, strategy, engine=engine, executor=executor, seed=seed, top=top, rtol=rtol_o,
                       atol=atol_o)
        check.progress, check.max_evals = progress, max_evals
        if mode == "auto":
            mode = check.choose_mode()
        report = check.directional(directions) if mode == "directional" else check.full()
        if diagnose:
            budget = max(DOCTOR_BUDGET, 2 * report.n_evals)
            report = run_doctor(report, subject, strategy, Experiments(check, budget))
    return report


def check_function(fun: Callable[[NDArray], Any], x0: Any, method: Any = "central", *,
                   blocks: Mapping[str, Any] | None = None, step: Step | None = None, rtol: float | None = None,
                   atol: float | None = None, top: int = 5, diagnose: bool = True,
                   executor: Executor | None = None, lambda_: float | None = None,
                   m: int | None = None, mode: str = "auto", n_directions: int | None = None,
                   seed: int = 0, order: Order = "C", progress: Callable[[str, int], None] | None = None,
                   budget: int | None = None) -> Report:
    """Check a hand-written ``fun(theta) -> (cost, grad)`` at ``x0``.

    Parameters
    ----------
    fun : callable
        Returns the cost (a scalar, or an array of one entry: ``(1,)``, ``(1, 1)``) and the gradient: a vector
        of ``x0.size`` entries (a column is accepted) or, with ``blocks``, one array per block, as
        ``(cost, g1, g2, ...)`` or ``(cost, [g1, g2, ...])``.
    x0 : array of shape (P,) or (P, 1)
        float32 or float64; never modified (``fun`` gets a fresh copy at every call, of the same shape).
    method : str or strategy
        ``"forward"``, ``"central"``, ``"richardson"``, ``"complex-step"`` or a strategy object.
    blocks : mapping name -> shape, optional
        How ``x0`` is made of blocks (in order, each unrolled in ``order``); sizes must sum to ``x0.size``.
        Without it the vector is one block named ``"x"``.
    order : "C" or "F"
        How each block is unrolled in ``x0`` and the gradient: ``"C"`` (numpy's ``ravel``, the default) or
        ``"F"`` (MATLAB/Octave's ``[Theta1(:); Theta2(:)]``, as most ports of the classic course do).  The
        report names entries in that layout, and its flat indices are positions in your own vector.
    step : "auto" or float, optional
        Overrides the strategy's step (see :mod:`layerkit.check.methods` for the automatic rule).
    rtol, atol : float, optional
        Override the error-model tolerances: an entry passes when ``|n - a| <= rtol max(|n|,|a|) + atol``.
    top : int
        How many worst entries the report keeps.
    diagnose : bool
        Let the doctor add findings (and run follow-up experiments, within a budget, when the check fails).
    executor : concurrent.futures.Executor, optional
        Spread the cost evaluations over it (``fun`` must be picklable for a process pool).
    lambda_, m : optional
        The regularization strength and number of examples behind ``fun``, when known: the doctor then
        names fitted factors such as ``lambda/m``.
    mode : "auto", "full" or "directional"
        ``"full"`` checks every entry.  ``"directional"`` compares derivatives along ``n_directions`` seeded
        (``seed``) random unit directions and, when they disagree, localizes the wrong entries by group
        testing over rows and columns (:mod:`layerkit.check.directional`).  ``"auto"`` (the default) times the
        first evaluations and runs the full check when it takes at most ``AUTO_SECONDS`` (10 s), the
        directional one within that many seconds' worth of evaluations otherwise (a note says so).
    progress : callable, optional
        ``progress(stage, evaluations)``, called as a directional check goes (the CLI shows it).
    budget : int, optional
        ``mode="auto"`` in evaluations instead of seconds: the full check when it needs at most ``budget``
        evaluations, else the directional one within ``budget`` (the same choice on every machine).
    """
    lam = None if lambda_ is None else _tolerance_override(lambda_, "lambda_")
    mm = None if m is None else positive_int(m, "m")
    subject = function_subject(fun, x0, blocks, lam, mm, order)
    return run_check(subject, method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose,
                     executor=executor, mode=mode, n_directions=n_directions, seed=seed, progress=progress,
                     budget=budget)


def check_network(net: Network, X: Any, y: Any, lambda_: float = 0.0, method: Any = "central", *,
                  step: Step | None = None, rtol: float | None = None, atol: float | None = None, top: int = 5,
                  diagnose: bool = True, engine: str = "auto", mode: str = "auto",
                  n_directions: int | None = None, seed: int = 0,
                  progress: Callable[[str, int], None] | None = None, budget: int | None = None) -> Report:
    """Check a :class:`~layerkit.Network`'s backprop on ``(X, y)`` with regularization ``lambda_``.

    The network itself is evaluated (its class, layers, ties and bindings), in place, and left exactly as it
    was.  Blocks are the network's (``Theta1``, ``Theta2``, ...).  ``engine="auto"`` computes the cost changes
    of real-valued finite differences with the engine of :mod:`layerkit.fast.probe` when it applies and agrees
    with the network's own cost, and re-evaluates the cost otherwise; ``engine="generic"`` always re-evaluates
    the whole cost (the naive loop); ``engine="structured"`` insists on the engine.  In ``mode="directional"``
    the changes along each direction are propagated through the layers exactly.  Other arguments as in
    :func:`check_function`.
    """
    subject = NetworkSubject(net, X, y, lambda_)
    return run_check(subject, method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose, engine=engine,
                     mode=mode, n_directions=n_directions, seed=seed, progress=progress, budget=budget)


def check_layer(layer: Layer, x: Any, method: Any = "central", *, seed: int = 0, step: Step | None = None,
                rtol: float | None = None, atol: float | None = None, top: int = 5,
                diagnose: bool = True, mode: str = "auto", n_directions: int | None = None,
                budget: int | None = None) -> Report:
    """Check one layer's input gradient and parameter gradients.

    The scalar checked is ``sum(forward(x) * r)`` with ``r`` a seeded standard-normal upstream gradient
    of the output's shape, so ``backward(r)`` must return ``dL/dx`` and write ``dL/dparams``.  Blocks:
    ``"x"`` then the layer's parameter names.  The layer computes with its own bound arrays; their values,
    its bindings and its attributes are restored afterwards.
    """
    subject = LayerSubject(layer, x, _seed(seed))
    return run_check(subject, method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose, mode=mode,
                     n_directions=n_directions, seed=seed, budget=budget)
