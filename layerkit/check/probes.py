"""Probes: the evaluators that strategies ask for cost changes, with their capabilities declared.

A probe stands at a point ``x`` with cost ``f0 = J(x)`` and offers ``n_axes`` axes (coordinate unit
vectors, a subset of them, or directions).  Strategies only call:

* ``probe.delta(steps)``: ``steps`` has shape ``(S, n_axes)``; returns ``J(x + steps[s, k] e_k) - f0`` with
  the same shape (NaN where the cost was not finite);
* ``probe.noise(steps)``: a bound on the error of each of those differences, same shape: for a probe that
  re-evaluates the cost, twice its measured noise level (:mod:`layerkit.check.noise`); an engine that computes
  differences without cancellation reports its own, much smaller, rounding;
* ``probe.imag(h)``: ``Im J(x + i h_k e_k)`` for each axis (complex step);
* ``probe.snap(h)``, ``probe.scale()`` and ``probe.subset(axes)``.

and read its declared capabilities, set when it is made (:class:`Probe`): ``cheap`` (an evaluation costs far
less than one of the cost: strategies afford a second stencil to measure their truncation), ``noise_excess``
(how much noisier than its rounding the cost is: automatic steps follow it), ``x`` and ``axes`` (the point
and the coordinates the axes are, for steps relative to them; None along directions), and ``notes`` (what
the evaluator refused to use, and why).  Two capabilities are optional.  One, ``smooth_reach(widest)``, per axis how
far the cost is certainly smooth (no kink crossed) up to the stencil's widest step ``widest``; an exact engine
that knows its layers' kinks offers it, and automatic steps stay within it
(:func:`~layerkit.check.methods.smooth_steps`, which then tells it which steps it shortened:
``shortened(axes)``).  Another, ``table_reach(widest)``: per axis the step up to which an exact engine reads
its changes off two Taylor tables; automatic steps stay within it too
(:func:`~layerkit.check.methods.table_steps`).

``scale()`` is the length scale, per axis, that automatic steps are relative to: ``max(1, |x_j|) / s_j``,
where the optional ``axis_scale`` ``s_j >= 1`` says how much faster the cost varies along axis ``j`` (see
:meth:`layerkit.check.subjects.NetworkSubject.axis_scale`).

The probes here re-evaluate the subject's cost: :class:`CoordinateProbe` along coordinates and
:class:`CostDirections` along directions; :class:`LineProbe` offers the directions of either kind of
direction evaluator (this one, or the network engine's) as the axes of a probe.  A probe owns a private copy
of ``x`` and hands the cost a fresh copy of it, perturbed, at every evaluation: the caller's vector is never
touched, even when the cost raises or writes into its argument.
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
from ..numerics import Direction, scaled

CostFn = Callable[[NDArray], Any]


class Probe(Protocol):
    """What a strategy may ask of an evaluator (module docstring); capabilities are attributes set at
    construction."""

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def real_dtype(self) -> np.dtype: ...

    @property
    def n_axes(self) -> int: ...

    @property
    def n_evals(self) -> int: ...

    @property
    def cheap(self) -> bool: ...

    @property
    def noise_excess(self) -> float: ...

    @property
    def x(self) -> NDArray | None: ...

    @property
    def axes(self) -> NDArray | None: ...

    def delta(self, steps: NDArray) -> NDArray: ...

    def noise(self, steps: NDArray) -> NDArray: ...

    def imag(self, h: NDArray) -> NDArray: ...

    def snap(self, h: NDArray) -> NDArray: ...

    def scale(self) -> NDArray: ...


class Directions(Protocol):
    """What a directional check asks of an evaluator: cost changes along directions, and their rounding.

    ``exact`` says whether the changes are computed without cancellation (tiny steps are then fine);
    ``noise_excess`` is as for :class:`Probe`."""

    @property
    def exact(self) -> bool: ...

    @property
    def noise_excess(self) -> float: ...

    @property
    def n_evals(self) -> int: ...

    def delta(self, dirs: Sequence[Direction], steps: NDArray) -> tuple[NDArray, NDArray]: ...


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


def not_complex(reason: str) -> ComplexEvaluationError:
    """The complex step is not applicable, for ``reason``; the message names the methods that are."""
    return ComplexEvaluationError(f"the target cannot be evaluated at complex parameters: {reason}; use "
                                  "method='central' or 'richardson' instead")


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
        Per-axis step divisors ``s_j >= 1`` of the coordinates ``axes`` (see :func:`~layerkit.numerics.scaled`).
    noise_level : float
        The noise of one cost evaluation (:class:`~layerkit.check.noise.Noise`); a difference carries twice it.
    noise_excess : float
        How much noisier than its rounding the cost is (:func:`~layerkit.check.noise.step_excess`).
    """

    cheap = False

    def __init__(self, cost: CostFn, x0: NDArray, f0: float, axes: Sequence[int] | NDArray | None = None,
                 executor: Executor | None = None, axis_scale: NDArray | None = None,
                 noise_level: float = 0.0, noise_excess: float = 1.0) -> None:
        self.cost = cost
        self.x = np.array(x0, copy=True)
        self.f0 = f0
        self.axes = np.arange(self.x.size) if axes is None else np.asarray(axes, dtype=np.int64)
        self.axis_scale = None if axis_scale is None else np.asarray(axis_scale, dtype=np.float64)
        self.dtype = self.x.dtype
        self.real_dtype = np.dtype(self.x.real.dtype)
        self.n_axes = int(self.axes.size)
        self.n_evals = 0
        self._parent: CoordinateProbe | None = None
        self.executor = executor
        self.noise_level = float(noise_level)
        self.noise_excess = float(noise_excess)
        self.notes: list[str] = []

    def subset(self, axes: Sequence[int]) -> CoordinateProbe:
        """The same probe restricted to ``axes`` (positions among this probe's axes); its evaluations count as
        this probe's too."""
        pick = np.asarray(axes, dtype=np.int64)
        sub = CoordinateProbe(self.cost, self.x, self.f0, self.axes[pick], self.executor,
                              None if self.axis_scale is None else self.axis_scale[pick], self.noise_level,
                              self.noise_excess)
        sub._parent = self
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
            raise not_complex(f"it discards the imaginary part ({exc})") from None
        except (TypeError, ValueError) as exc:
            raise not_complex(f"{type(exc).__name__}: {exc}") from None
        if costs and not any(isinstance(c, complex) for c in costs):
            raise not_complex("it returned a real cost for a complex input, so the imaginary part was lost")
        out = np.asarray([complex(c).imag for c in costs], dtype=np.float64)
        out[~np.isfinite(out)] = np.nan
        return out


def _cost_along(cost: CostFn, x0: NDArray, lo: int, hi: int, u: NDArray, s: float) -> Any:
    """``cost(x0 + s u)`` for ``u`` supported on ``[lo, hi)``; a picklable worker for executors."""
    x = np.array(x0, copy=True)
    x[lo:hi] += (s * u).astype(x.dtype)
    return as_scalar_cost(cost(x), "along a direction")


class CostDirections:
    """Cost differences along directions by re-evaluating ``cost`` (optionally over an executor).

    Each difference carries twice the cost's noise ``noise_level`` and, with ``rounding`` (the default), at
    least the rounding ``eps (|J| + |f0|)`` of the two costs it subtracts.
    """

    exact = False

    def __init__(self, cost: CostFn, x0: NDArray, f0: float, executor: Executor | None = None,
                 noise_level: float = 0.0, noise_excess: float = 1.0, rounding: bool = True) -> None:
        self.cost, self.x0, self.f0, self.executor = cost, x0, float(np.real(f0)), executor
        self.dtype = x0.dtype
        self.n_evals = 0
        self.noise_level, self.noise_excess, self.rounding = noise_level, float(noise_excess), rounding

    def delta(self, dirs: Sequence[Direction], steps: NDArray) -> tuple[NDArray, NDArray]:
        """``J(x0 + steps[s, k] u_k) - J(x0)`` and its noise bound, both of shape ``(S, len(dirs))``."""
        S = steps.shape[0]
        jobs = [(d.lo, d.hi, d.u, float(steps[s, k])) for s in range(S) for k, d in enumerate(dirs)]
        self.n_evals += len(jobs)
        with np.errstate(all="ignore"):
            if self.executor is None:
                costs = [_cost_along(self.cost, self.x0, *job) for job in jobs]
            else:
                futures = [self.executor.submit(_cost_along, self.cost, self.x0, *job) for job in jobs]
                costs = [f.result() for f in futures]
        c = np.asarray([float(np.real(v)) for v in costs]).reshape(S, len(dirs))
        if not self.rounding:
            return c - self.f0, np.full(c.shape, 2 * self.noise_level)
        eps = float(np.finfo(self.dtype).eps)
        noise = np.maximum(2 * self.noise_level, eps * (np.abs(c) + abs(self.f0)))
        return c - self.f0, noise


class LineProbe:
    """The probe protocol over directions instead of coordinates: axis ``k`` is ``dirs[k]`` of a direction
    evaluator (:class:`Directions`), its length scale ``lengths[k]``; steps are not snapped (a direction is
    not on a parameter's grid).  ``dtype`` is the dtype steps are planned in."""

    cheap = False
    x = None
    axes = None

    def __init__(self, evaluator: Any, dirs: list[Direction], lengths: NDArray, dtype: Any,
                 noise_excess: float = 1.0) -> None:
        self.evaluator, self.dirs, self.lengths = evaluator, dirs, lengths
        self.n_axes = len(dirs)
        self.dtype = self.real_dtype = np.dtype(dtype)
        self.noise_excess = float(noise_excess)
        self.notes: list[str] = []
        self._noise: tuple[NDArray, NDArray] | None = None
        #: Every request ``(steps, changes, noise)`` (each ``(S, n_axes)``, float64), in order.
        self.measured: list[tuple[NDArray, NDArray, NDArray]] = []

    @property
    def n_evals(self) -> int:
        return int(self.evaluator.n_evals)

    def scale(self) -> NDArray:
        return self.lengths

    def snap(self, h: NDArray) -> NDArray:
        return h

    def subset(self, axes: Sequence[int]) -> LineProbe:
        pick = [int(k) for k in axes]
        return LineProbe(self.evaluator, [self.dirs[k] for k in pick], self.lengths[pick], self.dtype,
                         self.noise_excess)

    def delta(self, steps: NDArray) -> NDArray:
        d, noise = self.evaluator.delta(self.dirs, np.asarray(steps, dtype=np.float64))
        self._noise = (steps, noise)
        self.measured.append((np.asarray(steps, dtype=np.float64), np.asarray(d, dtype=np.float64),
                              np.asarray(noise, dtype=np.float64)))
        return d

    def noise(self, steps: NDArray) -> NDArray:
        if self._noise is None or self._noise[0] is not steps:
            self.delta(steps)
        assert self._noise is not None
        return self._noise[1]

    def imag(self, h: NDArray) -> NDArray:
        raise not_complex("the complex step runs along coordinates only")
