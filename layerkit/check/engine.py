"""Which evaluator computes a check's cost changes, decided in one place.

A network check uses the fast engine of :mod:`layerkit.fast` when it applies (:func:`engine_applies`: a
network whose loss the engine has a rule for and whose class keeps Network's cost, and ``engine`` not
``"generic"``) and when its predictions agree with the network's own cost (:meth:`Evaluators.verified`):
along a random direction in every block (all blocks at once when every layer is layerkit's own and
Dense-like), and at the check's own steps for the blocks whose change passes through a layer that is not.  Anything else, and any subject that is not a network, re-evaluates the subject's cost, whose
noise is measured first (:mod:`layerkit.check.noise`).

The engine's rules are layerkit's own, confirmed against each layer's ``forward`` on every example before
they are used (:mod:`layerkit.fast.confirm`); nothing a user writes about derivatives enters them, so there is
nothing to refuse mid-check.

:class:`Evaluators` holds what a check builds of this once, on first use: the measured noise, the network's
state at ``x0``, the verified engines, the rounding of the analytic gradient.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..fast.confirm import Prediction
from ..fast.directions import NetworkDirections
from ..fast.probe import NetworkProbe, supports_engine
from ..fast.state import NetworkState, rounding_norms, rounding_scales
from ..numerics import AGREEMENT, NOISE_C, machine_eps
from .baseline import Baseline
from .ledger import Ledger
from .noise import Noise, calibrate, measure_noise, step_excess
from .options import CheckOptions
from .probes import CoordinateProbe, CostDirections
from .subjects import NetworkSubject, Subject
from .tolerance import SAFETY
from .verdicts import nondeterministic_noise


def engine_applies(subject: Subject, options: CheckOptions) -> bool:
    """Whether the network engine may compute this check's cost changes (module docstring)."""
    return isinstance(subject, NetworkSubject) and options.engine != "generic" and supports_engine(subject.network)


@attrs.frozen
class Agreement:
    """One prediction of an engine against the network's own cost: ``|predicted - real| <= threshold``."""

    prediction: Prediction
    real: float
    threshold: float

    @property
    def difference(self) -> float:
        return abs(self.prediction.predicted - self.real)

    @property
    def agrees(self) -> bool:
        return bool(np.isfinite(self.difference) and self.difference <= self.threshold)


class Evaluators:
    """The evaluators of one check, each built (and verified) once, on first use (module docstring).

    ``evaluator`` says what computed the changes the report is about: ``"cost"`` or ``"engine"``."""

    def __init__(self, subject: Subject, options: CheckOptions, base: Baseline, ledger: Ledger) -> None:
        self.subject, self.options, self.base, self.ledger = subject, options, base, ledger
        self.evaluator = "cost"
        self.noise: Noise | None = None
        #: The coordinate probe the full check used (None until one was asked for).
        self.coordinates: Any = None
        self._state: NetworkState | None = None
        self._directions: Any = None
        self._rounding: NDArray | float | None = None

    # ------------------------------------------------------------------ the subject's own cost
    def assumed_noise(self) -> Noise:
        return Noise.assumed(self.base.cost, self.base.rounding_dtype(self.subject.x0.dtype),
                            deterministic=self.base.deterministic)

    def report_noise(self) -> Noise:
        """The noise steps and tolerances were derived from: measured, or the rounding floor assumed."""
        return self.noise or self.assumed_noise()

    def measured_noise(self) -> Noise:
        """The subject's cost noise (:func:`~layerkit.check.noise.measure_noise`), measured until a table
        was conclusive; a cost that differs on two passes is a ``nondeterministic-cost`` finding."""
        s = self.subject
        if self.noise is None or not self.noise.measured:
            scale = np.maximum(1.0, np.abs(s.x0.astype(np.float64)))
            axis = s.axis_scale()
            if axis is not None:
                scale = scale / axis
            self.noise = measure_noise(s.value, s.x0, self.base.cost, scale=scale, seed=self.options.seed,
                                       f_again=self.base.f1)
            self.ledger.count("noise", self.noise.n_evals)
            if not self.noise.deterministic and "nondeterministic-cost" not in self.ledger.codes():
                self.ledger.fail(nondeterministic_noise(self.noise))
        return self.noise

    def cost_probe(self) -> CoordinateProbe:
        noise = self.measured_noise()
        s = self.subject
        return CoordinateProbe(s.value, s.x0, self.base.f0, executor=self.options.executor,
                               axis_scale=s.axis_scale(), noise_level=noise.level, noise_excess=step_excess(noise))

    def cost_directions(self) -> CostDirections:
        noise = self.measured_noise()
        s = self.subject
        return CostDirections(s.value, s.x0, self.base.f0, self.options.executor, noise.level, step_excess(noise))

    # ------------------------------------------------------------------ the network engine
    def state(self) -> NetworkState:
        """The network's state at ``x0``, read once (``NetworkSubject`` only)."""
        if self._state is None:
            s = self.subject
            assert isinstance(s, NetworkSubject)
            obj = s.objective
            self._state = NetworkState.at(s.network, obj.inputs(s.network.params.dtype), obj.Y, obj.lambda_,
                                          s.activations())
        return self._state

    def coordinate_engine(self) -> NetworkProbe | None:
        """The network engine over coordinates, verified; None when it does not apply or disagrees."""
        s, options = self.subject, self.options
        if not isinstance(s, NetworkSubject) or options.engine == "generic" or not options.traits.stencil:
            return None
        if not supports_engine(s.network):
            if options.engine == "structured":
                raise InputError("engine", "a network whose last layer is a Sigmoid and whose class keeps "
                                 "Network's cost for engine='structured'", repr(s.network))
            return None
        probe = NetworkProbe(self.state(), s.x0, self.base.f0, axis_scale=s.axis_scale(), maxima=s.maxima)
        steps = None
        own_from = s.own_from
        if own_from:  # a user's rules are also compared with the real cost at the check's own steps
            try:
                steps = options.strategy.steps(probe)
            except (AttributeError, TypeError):  # a user strategy without per-axis steps
                pass
        return probe if self.verified(probe.predictions(options.seed, steps, own_from), "engine") else None

    def coordinate_probe(self, complex_step: bool = False) -> Any:
        """The full check's evaluator: the verified engine, else (and always for the complex step) the
        subject's cost; kept for the doctor's experiments (:meth:`doctor_probe`)."""
        engine = None if complex_step else self.coordinate_engine()
        if engine is not None:
            self.evaluator = "engine"
            self.noise = self.report_noise()
            self.coordinates = engine
        else:
            self.coordinates = self.cost_probe()
        return self.coordinates

    def hand_over(self, engine: NetworkProbe, entries: list[str]) -> Any:
        """The full check's evaluator after the engine's first estimate was not finite at ``entries`` (whose
        analytic values are): the subject's own cost, with a note; the engine's evaluations stay counted.
        A change of finite logits is finite for every rule of layerkit's, so this is a safeguard: a report
        never blames the gradient for what the engine could not compute."""
        self.ledger.count("engine", engine.n_evals)
        n = len(entries)
        self.ledger.note(
            f"the fast engine was not used: its change of the cost was not finite at {n} entr{'y' if n == 1 else 'ies'}"
            f" ({', '.join(entries[:4])}{', ...' if n > 4 else ''}) where the analytic gradient is; the network's "
            "own cost was re-evaluated instead")
        self.evaluator = "cost"
        self.noise = None
        self.coordinates = self.cost_probe()
        return self.coordinates

    def doctor_probe(self) -> Any:
        """The full check's coordinate evaluator, or after a directional check the subject's own cost."""
        if self.coordinates is None:
            self.coordinates = self.cost_probe()
        return self.coordinates

    def direction_engine(self) -> NetworkDirections | None:
        """The network engine along directions, its rules confirmed and its predictions verified; None when it
        does not apply or is refused (a note says why)."""
        s = self.subject
        if not (isinstance(s, NetworkSubject) and engine_applies(s, self.options)
                and NetworkDirections.supports(s.network)):
            return None
        probe = NetworkDirections(self.state(), s.x0, self.base.f0)
        if not probe.confirmed():
            for note in probe.rules.notes:
                self.ledger.note(note)
            return None
        predictions = probe.predictions(self.options.seed, small_steps=not s.known_rules)
        return probe if self.verified(predictions, "direction engine") else None

    def directions(self) -> Any:
        """The directional evaluator: the verified engine, else the subject's cost (built once)."""
        if self._directions is None:
            engine = self.direction_engine()
            if engine is not None:
                self.evaluator = "engine"
            self._directions = engine if engine is not None else self.cost_directions()
        return self._directions

    def calibrated(self, evaluator: Any) -> Any:
        """The direction engine with its own noise measured on a difference table (:func:`calibrate`, 9
        evaluations) when its rules are not all layerkit's own; any other evaluator as it is."""
        s = self.subject
        if not evaluator.exact or s.known_rules:
            return evaluator
        level = calibrate(evaluator, s.x0, self.options.seed, s.kink_sides if s.kinked else None)
        self.ledger.count("calibrate", 9)
        self._directions = evaluator.with_noise_floor(level)
        return self._directions

    def verified(self, predictions: list[Prediction], what: str) -> bool:
        """Whether every prediction agrees with the network's own cost within their noise: ``AGREEMENT`` times
        twice the cost's assumed noise plus the prediction's rounding.  Before concluding that one does not,
        the cost's noise is measured along its direction (a float32 cost can be flat along one unit's weights
        and smooth elsewhere).  A note says why the engine was not used."""
        s, base = self.subject, self.base
        level = self.assumed_noise().level
        checks = []
        for p in predictions:
            real = float(np.real(np.asarray(s.value(p.point)).reshape(-1)[0])) - base.cost
            checks.append(Agreement(p, real, AGREEMENT * (2 * level + p.noise)))
        self.ledger.count("verify", len(checks))
        if all(c.agrees for c in checks):
            return True
        settled = []
        for c in checks:
            if not c.agrees:
                noise = measure_noise(s.value, s.x0, base.cost, direction=c.prediction.direction, f_again=base.f1)
                self.ledger.count("verify", noise.n_evals)
                c = attrs.evolve(c, threshold=max(c.threshold, AGREEMENT * 2 * noise.level))
            settled.append(c)
        bad = [c for c in settled if not c.agrees]
        if not bad:
            return True
        worst = max(bad, key=lambda c: c.difference / max(c.threshold, 1e-300))
        p = worst.prediction
        self.ledger.note(
            f"the fast {what} was not used: its change of the cost {p.what} in {p.block} ({p.predicted:.10g}) "
            f"differs from the network's own ({worst.real:.10g}) by {worst.difference:.2e}, beyond the noise "
            f"({worst.threshold:.1e}); the network's own cost was re-evaluated instead (a subclass, a tied or "
            "shared layer, an instance's own forward, or a layer rule that does not match its forward)")
        return False

    # ------------------------------------------------------------------ the analytic gradient's rounding
    def analytic_rounding_norms(self) -> list[tuple[int, int, float]]:
        """``(start, stop, ||r||)`` per block: the Euclidean norm of :meth:`analytic_rounding`'s entries of each
        block where it is known (:func:`~layerkit.fast.state.rounding_norms`), without forming them; empty for
        other subjects."""
        s = self.subject
        if not (isinstance(s, NetworkSubject) and supports_engine(s.network)):
            return []
        c = SAFETY * NOISE_C * machine_eps(self.base.rounding_dtype(s.x0.dtype))
        return [(lo, hi, c * norm) for lo, hi, norm in rounding_norms(self.state())]

    def analytic_rounding(self, probe: Any) -> NDArray | float:
        """``SAFETY 4 eps R_j``: the rounding of a network's backprop gradient entries (see
        :func:`~layerkit.fast.state.rounding_scales`), which the engine's noise already counts and a
        re-evaluated cost does not; 0 when unknown (functions, layers, layers without ``magnitude``)."""
        if self._rounding is None:
            s = self.subject
            self._rounding = 0.0
            if not isinstance(probe, NetworkProbe) and isinstance(s, NetworkSubject) and supports_engine(s.network):
                R = np.nan_to_num(rounding_scales(self.state()), nan=0.0)
                self._rounding = SAFETY * NOISE_C * machine_eps(self.base.rounding_dtype(s.x0.dtype)) * R
        return self._rounding

