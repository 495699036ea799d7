"""Probes: the evaluation engines that strategies ask for cost changes.

A probe stands at a point ``x`` with cost ``f0 = J(x)`` and offers ``n_axes`` axes (coordinate unit
vectors, a subset of them, or random directions).  Strategies only call:

* ``probe.delta(steps)``: ``steps`` has shape ``(S, n_axes)``; returns ``J(x + steps[s, k] e_k) - f0`` with
  the same shape (NaN where the cost was not finite);
* ``probe.noise(steps)``: a bound on the error of each of those differences, same shape: for a probe that
  re-evaluates the cost, twice its measured noise level (:mod:`layerkit.check.noise`); an engine that computes
  differences without cancellation reports its own, much smaller, rounding;
* ``probe.imag(h)``: ``Im J(x + i h_k e_k)`` for each axis (complex step);
* ``probe.snap(h)``, ``probe.scale()``, ``probe.dtype``, and ``probe.cheap``: whether an evaluation costs far
  less than one of the cost (then strategies afford a second step to measure their truncation).

``scale()`` is the length scale, per axis, that automatic steps are relative to: ``max(1, |x_j|) / s_j``,
where the optional ``axis_scale`` ``s_j >= 1`` says how much faster the cost varies along axis ``j`` (see
:meth:`layerkit.check.subjects.Target.axis_scale`).

The probe owns a private copy of ``x`` and hands the cost a fresh copy of it, perturbed, at every
evaluation: the caller's vector is never touched, even when the cost raises or writes into its argument.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .._validate import describe
from ..errors import ComplexEvaluationError, TargetError
from ..fast.probe import scaled

CostFn = Callable[[NDArray], Any]


class Probe(Protocol):
    dtype: np.dtype
    real_dtype: np.dtype
    n_axes: int
    n_evals: int
    cheap: bool

    def delta(self, steps: NDArray) -> NDArray: ...

    def noise(self, steps: NDArray) -> NDArray: ...

    def imag(self, h: NDArray) -> NDArray: ...

    def snap(self, h: NDArray) -> NDArray: ...

    def scale(self) -> NDArray: ...


def as_scalar_cost(value: Any, where: str) -> Any:
    """A cost returned by the target as a Python/numpy scalar (real or complex), or a TargetError."""
    arr = np.asarray(value)
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TargetError(f"the target must return a scalar cost; {where} it returned {describe(value)}")
    return arr.reshape(()).item() if arr.dtype.kind != "c" else complex(arr.reshape(()))


def _costs_at(cost: CostFn, x: NDArray, axes: Sequence[int] | NDArray, steps: Sequence[Any] | NDArray) -> list[Any]:
    """Costs at ``x + steps[k] e_{axes[k]}``, each on a fresh copy of ``x`` (picklable worker)."""
    out = []
    for j, s in zip(axes, steps):
        xj = np.array(x, copy=True)
        xj[j] = xj[j] + s
        out.append(as_scalar_cost(cost(xj), f"at {j} perturbed"))
    return out


class CoordinateProbe:
    """Probe along coordinate axes ``e_j`` for ``j`` in ``axes`` (default: all) of a cost function.

    Parameters
    ----------
    cost : callable
        ``cost(x) -> scalar``; called with the probe's private vector (do not keep a reference to it).
    x0 : NDArray, shape (P,)
        The point; copied.
    f0 : float
        ``cost(x0)``, already computed by the caller.
    axes : sequence of int, optional
        Coordinates to probe (default ``range(P)``).
    executor : concurrent.futures.Executor, optional
        Spread evaluations over it in chunks; results are identical to the serial run because every
        evaluation sees bit-identical inputs.  ``cost`` must then be picklable for process pools.
    axis_scale : NDArray, optional
        Per-axis step divisors ``s_j >= 1`` (see :func:`scaled`).
    noise_level : float
        The noise of one cost evaluation (:class:`~layerkit.check.noise.Noise`); a difference carries twice it.
    """

    cheap = False

    def __init__(self, cost: CostFn, x0: NDArray, f0: float, axes: Sequence[int] | NDArray | None = None,
                 executor: Executor | None = None, axis_scale: NDArray | None = None,
                 noise_level: float = 0.0) -> None:
        self.cost = cost
        self.x = np.array(x0, copy=True)
        self.f0 = f0
        self.axes = np.arange(self.x.size) if axes is None else np.asarray(axes, dtype=np.int64)
        self.axis_scale = None if axis_scale is None else np.asarray(axis_scale, dtype=np.float64)[self.axes]
        self.dtype = self.x.dtype
        self.real_dtype = np.dtype(self.x.real.dtype)
        self.n_axes = int(self.axes.size)
        self.n_evals = 0
        self._parent: CoordinateProbe | None = None
        self.executor = executor
        self.noise_level = float(noise_level)
        self.noise_excess = 1.0  # the noise over the cost's rounding that automatic steps follow

    def subset(self, axes: Sequence[int]) -> CoordinateProbe:
        """The same probe restricted to ``axes`` (positions among this probe's axes)."""
        sub = CoordinateProbe(self.cost, self.x, self.f0, self.axes[np.asarray(axes, dtype=np.int64)],
                              self.executor, None, self.noise_level)
        if self.axis_scale is not None:
            sub.axis_scale = self.axis_scale[np.asarray(axes, dtype=np.int64)]
        sub.noise_excess = self.noise_excess
        sub._parent = self  # its evaluations count as this probe's too
        return sub

    def noise(self, steps: NDArray) -> NDArray:
        return np.full(np.shape(np.atleast_2d(steps)), 2.0 * self.noise_level)

    def scale(self) -> NDArray:
        return scaled(np.abs(self.x[self.axes]), self.axis_scale).astype(self.real_dtype)

    def snap(self, h: NDArray) -> NDArray:
        xj = self.x[self.axes]
        return ((xj + h.astype(self.real_dtype)) - xj).astype(self.real_dtype)

    def _evaluate(self, x: NDArray, axes: NDArray, steps: NDArray) -> list[Any]:
        probe: CoordinateProbe | None = self
        while probe is not None:
            probe.n_evals += len(axes)
            probe = probe._parent
        if self.executor is None:
            with np.errstate(all="ignore"):
                return _costs_at(self.cost, x, axes, steps)
        n_chunks = max(1, min(len(axes), 4 * (getattr(self.executor, "_max_workers", 2) or 2)))
        bounds = np.linspace(0, len(axes), n_chunks + 1).astype(int)
        futures = [self.executor.submit(_costs_at, self.cost, x, axes[a:b].tolist(), list(steps[a:b]))
                   for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        return [c for fut in futures for c in fut.result()]

    def delta(self, steps: NDArray) -> NDArray:
        steps = np.atleast_2d(steps)
        S, n = steps.shape
        axes = np.tile(self.axes, S)
        costs = self._evaluate(self.x, axes, steps.reshape(-1).astype(self.dtype))
        out = np.asarray([np.real(c) for c in costs], dtype=np.float64).reshape(S, n)
        with np.errstate(invalid="ignore"):
            out = out - float(np.real(self.f0))
        out[~np.isfinite(out)] = np.nan
        return out

    def imag(self, h: NDArray) -> NDArray:
        cdtype = np.result_type(self.dtype, np.complex64)
        xc = self.x.astype(cdtype)
        steps = (1j * h).astype(cdtype)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", np.exceptions.ComplexWarning)
                costs = self._evaluate(xc, self.axes, steps)
        except np.exceptions.ComplexWarning as exc:
            raise ComplexEvaluationError(
                f"the target cannot be evaluated at complex parameters: it discards the imaginary part ({exc}); "
                "use method='central' or 'richardson' instead") from None
        except (TypeError, ValueError) as exc:
            raise ComplexEvaluationError(
                f"the target cannot be evaluated at complex parameters: {type(exc).__name__}: {exc}; "
                "use method='central' or 'richardson' instead") from None
        if costs and not any(isinstance(c, complex) for c in costs):
            raise ComplexEvaluationError(
                "the target cannot be evaluated at complex parameters: it returned a real cost for a complex "
                "input, so the imaginary part was lost; use method='central' or 'richardson' instead")
        out = np.asarray([complex(c).imag for c in costs], dtype=np.float64)
        out[~np.isfinite(out)] = np.nan
        return out
