"""What the doctor may run after a check, within a budget of cost evaluations (:class:`Experiments`).

The doctor never imports the orchestrator: it is handed this runner, which reaches the check's own
evaluators (:class:`~layerkit.check.engine.Evaluators`: the coordinate probe of a full check, or the
subject's cost after a directional one, and the direction evaluator) through :class:`Metered` probes that
charge every evaluation to the budget, measures derivatives along directions from another point than the
check's (:meth:`Experiments.derivatives_at`), and checks single layers with the function the API gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..check.engine import Evaluators
from ..check.methods import Central, truncation_model
from ..check.noise import step_excess
from ..check.probes import CostDirections, as_scalar_cost
from ..check.report import Report
from ..check.subjects import NetworkSubject, Subject
from ..check.tolerance import error_bound
from ..nn.losses import L2
from ..numerics import Direction

#: ``check_layer(layer, x, k)``: the report of layer ``k`` checked on its own at input ``x``.
LayerCheck = Callable[[Any, NDArray, int], Report]


class BudgetExceeded(Exception):
    """A follow-up experiment would exceed the doctor's evaluation budget."""


class Experiments:
    """The doctor's budgeted runner (module docstring).

    Attributes
    ----------
    budget : int
        Evaluations the follow-ups may spend; ``spent`` counts them.  A request beyond it raises
        :class:`BudgetExceeded`, which the doctor turns into a note.
    """

    def __init__(self, evaluators: Evaluators, budget: int, layer_check: LayerCheck) -> None:
        self.evaluators, self.layer_check = evaluators, layer_check
        self.budget = int(budget)
        self.spent = 0

    def charge(self, n: int) -> None:
        if self.spent + n > self.budget:
            raise BudgetExceeded(f"the follow-up needs {n} evaluations and {max(0, self.budget - self.spent)} are left")
        self.spent += n

    @property
    def subject(self) -> Subject:
        return self.evaluators.subject

    def probe(self, axes: NDArray) -> Metered:
        """The check's coordinate evaluator restricted to ``axes`` (after a directional check, the subject's
        own cost), charged per evaluation."""
        return Metered(self.evaluators.doctor_probe().subset(axes), self)

    def directions(self) -> Metered:
        """The check's direction evaluator (for Taylor-remainder fits), charged per evaluation."""
        return Metered(self.evaluators.directions(), self)

    def derivatives_at(self, point: NDArray, dirs: list[Direction]) -> tuple[NDArray, NDArray, list[NDArray]]:
        """Central differences of the subject's own cost at ``point`` (a vector like ``x0``; copied, never
        written to) along the unit directions ``dirs``: ``(values, bounds, taken)``.

        ``bounds`` is each value's error bound (``SAFETY`` times the rounding of the two costs over the step,
        plus the truncation model, as in a check's own directional tests).  ``taken`` is, for each direction,
        the displacement the two perturbed points really differ by, over ``2 h``: in float32 ``x + h u``
        rounds, and the difference measures the derivative along that vector, not exactly ``u`` (compare it
        with ``a . taken``).  The step is the central rule's automatic one, ``eps^(1/3)`` times the length
        scale ``max(1, min |x_j|)`` of the entries a direction moves (times the cost's noise excess), the
        noise the check measured at ``x0``.  Charges ``1 + 2 len(dirs)`` evaluations: the cost at ``point``
        (the rounding bound and the curvature need it), then the stencil."""
        s = self.subject
        self.charge(1 + 2 * len(dirs))
        x = np.array(point, dtype=s.x0.dtype, copy=True)
        f0 = float(np.real(as_scalar_cost(s.value(np.array(x, copy=True)), "at the doctor's point")))
        noise = self.evaluators.report_noise()
        excess = step_excess(noise)
        moved = [np.abs(x[d.lo:d.hi].astype(np.float64))[np.asarray(d.u) != 0] for d in dirs]
        lengths = np.array([max(1.0, float(np.min(m))) if m.size else 1.0 for m in moved])
        h = Central().base_step(x.dtype, excess) * lengths
        evaluator = CostDirections(s.value, x, f0, self.evaluators.options.executor, noise.level, excess)
        d, rounding = evaluator.delta(dirs, np.stack([h, -h]))
        values = (d[0] - d[1]) / (2 * h)
        with np.errstate(invalid="ignore", over="ignore"):
            trunc = truncation_model(h, lengths, 2, values, (d[0], d[1]))
        taken = []
        for k, di in enumerate(dirs):  # as CostDirections perturbs: x[lo:hi] += (s u) in x's dtype
            part = x[di.lo:di.hi]
            up, down = part + (h[k] * di.u).astype(x.dtype), part + (-h[k] * di.u).astype(x.dtype)
            taken.append((up.astype(np.float64) - down.astype(np.float64)) / (2 * h[k]))
        return values, error_bound((rounding[0] + rounding[1]) / (2 * h), trunc), taken

    def gradient(self, lambda_: float) -> NDArray | None:
        """The analytic gradient at ``x0`` with another ``lambda`` (networks only; None otherwise)."""
        subject = self.subject
        if not isinstance(subject, NetworkSubject):
            return None
        self.charge(1)
        other = NetworkSubject(subject.network, subject.objective.X, subject.objective.Y, lambda_)
        return other.evaluate()[1]

    def penalty_gradient(self) -> NDArray | None:
        """``(lambda/m) theta`` on the penalized entries of a network (None for other subjects)."""
        subject = self.subject
        if not isinstance(subject, NetworkSubject) or not subject.lambda_:
            return None
        g = np.zeros(subject.x0.size)
        mask = subject.network.penalized_mask()
        g[mask] = L2.gradient(subject.lambda_, float(subject.m or 1), subject.x0[mask].astype(np.float64))
        return g

    def check_layers(self) -> tuple[list[tuple[int, Any, Report]], str]:
        """Each layer of a network checked on its own (directional mode, a few examples) at ``x0``, in order,
        while the budget lasts; and what the budget left unchecked ('' when nothing)."""
        subject = self.subject
        if not isinstance(subject, NetworkSubject):
            return [], ""
        out: list[tuple[int, Any, Report]] = []
        a = subject.objective.X[: min(subject.m or 1, 4)]
        layers = subject.network.layers
        for k, layer in enumerate(layers):
            try:
                self.charge(8)
            except BudgetExceeded as exc:
                if not out:
                    raise
                rest = ", ".join(str(j) for j in range(k, len(layers)))
                return out, f"not checked on its own, for the budget ({exc}): layer {rest}"
            rep = self.layer_check(layer, a, k)
            self.spent += rep.n_evals
            out.append((k, layer, rep))
            with np.errstate(all="ignore"):
                a = layer.forward(a)
        return out, ""


class Metered:
    """A probe or direction evaluator whose evaluations are charged to an :class:`Experiments` budget: each
    ``delta`` charges the number of steps it is asked for before it runs."""

    def __init__(self, inner: Any, experiments: Experiments) -> None:
        self.inner, self.experiments = inner, experiments

    dtype = property(lambda self: self.inner.dtype)
    real_dtype = property(lambda self: self.inner.real_dtype)
    n_axes = property(lambda self: self.inner.n_axes)
    n_evals = property(lambda self: self.inner.n_evals)
    cheap = property(lambda self: self.inner.cheap)
    exact = property(lambda self: self.inner.exact)
    noise_excess = property(lambda self: self.inner.noise_excess)
    x = property(lambda self: self.inner.x)
    axes = property(lambda self: self.inner.axes)

    def scale(self) -> NDArray:
        return self.inner.scale()

    def snap(self, h: NDArray) -> NDArray:
        return self.inner.snap(h)

    def noise(self, steps: NDArray) -> NDArray:
        return self.inner.noise(steps)

    def delta(self, *args: Any) -> Any:
        """``delta(steps)`` of a probe or ``delta(dirs, steps)`` of a direction evaluator, charged."""
        self.experiments.charge(int(np.size(args[-1])))
        return self.inner.delta(*args)
