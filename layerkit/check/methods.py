"""Numerical gradient strategies: :class:`Forward`, :class:`Central`, :class:`Richardson`, :class:`ComplexStep`.

Every strategy is a frozen attrs value with one small protocol (:class:`Method`): given a
:class:`~layerkit.check.probes.Probe` (which evaluates cost *changes* ``J(x + s e_j) - J(x)`` along axes ``j``),
return an :class:`Estimate` of the derivative along each axis.  Strategies never touch parameter vectors
themselves, so the same strategy runs on a plain function, a Network's fast path, or random directions.

Error model of a difference rule of order ``p`` with step ``h`` on a cost of magnitude ``|J|``::

    error ~  C_t h^p |J^(p+1)|     (truncation)   +   C_r eps |J| / h     (roundoff in the cost difference)

The sum is smallest when both terms balance, at ``h ~ eps^(1/(p+1))`` (for unit derivatives), where the
error is ``~ eps^(p/(p+1))``.  The automatic step is that ``h``, multiplied by ``max(1, |x_j|)`` so that it
stays relative for large coordinates, divided by the target's axis scale ``s_j >= 1`` when it has one (for
a network's Dense weight, the largest ``|input|`` the weight multiplies: the cost varies along that weight on
a length scale ``1 / s_j``, so ``J^(p+1)`` grows like ``s_j^(p+1)``), and snapped so that ``x_j + h`` is
exactly representable (``h = (x_j + h) - x_j``), which makes the denominator exact.  ``eps`` is the machine epsilon of the
*target's* dtype (float32: 1.19e-7, float64: 2.22e-16).

The default tolerance follows from the same model (see :meth:`FiniteDifference.tolerances`).

To add a strategy, subclass :class:`FiniteDifference` with a stencil (see its docstring) or write any frozen
class with ``name``, ``estimate`` and ``tolerances``, and :func:`register_method` it for the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, Union, runtime_checkable

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError, UnknownMethodError
from .probes import Probe

Step = Union[float, str]

#: Safety factor between the error model's prediction and the default tolerance.
SAFETY = 16.0


def _check_step(instance: Any, attribute: Any, value: Step) -> None:
    if isinstance(value, str):
        if value != "auto":
            raise InputError("step", "'auto' or a positive float", repr(value))
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise InputError("step", "'auto' or a positive float", describe(value))


@frozen(eq=False)
class Estimate:
    """Result of a strategy along ``n`` axes.

    Attributes
    ----------
    values : NDArray, shape (n,)
        Estimated directional derivatives (the numerical gradient for coordinate axes).
    step : NDArray, shape (n,)
        The (largest) step used on each axis, in the units of ``x``.
    error : NDArray, shape (n,) or None
        An estimate of each value's absolute error, when the strategy can give one (Richardson).
    """

    values: NDArray
    step: NDArray
    error: NDArray | None = None


@runtime_checkable
class Method(Protocol):
    """What a gradient-estimation strategy provides."""

    name: str
    step: Step

    def estimate(self, probe: Probe) -> Estimate:
        """Estimate the derivative along each of the probe's axes."""
        ...

    def tolerances(self, dtype: np.dtype, cost: float, scale: float, step: NDArray) -> tuple[float, NDArray]:
        """``(rtol, atol)``: an entry passes when ``|n - a| <= rtol * max(|n|, |a|) + atol``.

        ``cost`` is ``|J(x)|``, ``scale`` the largest ``|analytical|`` entry, ``step`` the per-axis step.
        """
        ...


def nonzero_steps(h: NDArray, step: Any, probe: Probe) -> NDArray:
    """``h``, unless a snapped step is zero: ``x_j + h`` rounds back to ``x_j`` in the probe's dtype."""
    if np.any(h == 0):
        j = int(np.flatnonzero(h == 0)[0])
        raise InputError("step", f"a step large enough to change every parameter in {np.dtype(probe.dtype)}",
                         f"{step!r}, which rounds to no change at axis {j} ({int(np.sum(h == 0))} axes in all)")
    return h


def machine_eps(dtype: Any) -> float:
    """Machine epsilon of a real or complex dtype's real part."""
    return float(np.finfo(np.dtype(dtype)).eps)


@frozen
class FiniteDifference:
    """Base class of difference rules ``D(h) = sum_s w_s [J(x + c_s h e_j) - J(x)] / h``.

    Subclasses set the class attributes ``name``, ``offsets`` (the ``c_s``), ``weights`` (the ``w_s``),
    ``order`` (``p``: the truncation error is ``O(h^p)``) and ``order_step`` (how the error expansion
    proceeds: 2 for symmetric stencils, whose expansion has only even powers; 1 otherwise).  For example a
    five-point stencil is::

        @frozen
        class FivePoint(FiniteDifference):
            name = "five-point"
            offsets = (-2.0, -1.0, 1.0, 2.0)
            weights = (1 / 12, -2 / 3, 2 / 3, -1 / 12)
            order = 4
            order_step = 2

    Attributes
    ----------
    step : "auto" or float
        ``"auto"``: ``h_j = eps^(1/(p+1)) * max(1, |x_j|) / s_j`` (``s_j``: the probe's axis scale, 1 for a
        plain function), snapped.  A float is used as the absolute step
        on every axis (snapped too), as in course code's ``epsilon = 1e-4``.
    """

    name: ClassVar[str] = "finite-difference"
    offsets: ClassVar[tuple[float, ...]] = ()
    weights: ClassVar[tuple[float, ...]] = ()
    order: ClassVar[int] = 1
    order_step: ClassVar[int] = 1

    step: Step = field(default="auto", validator=_check_step)

    def base_step(self, dtype: Any) -> float:
        """The relative step ``eps^(1/(p+1))`` that balances truncation ``h^p`` and roundoff ``eps/h``."""
        return machine_eps(dtype) ** (1.0 / (self.order + 1))

    def steps(self, probe: Probe, step: Step | None = None) -> NDArray:
        """Per-axis step: from ``step`` (default: this strategy's), scaled and snapped by the probe.

        Raises InputError when a step is too small to change some ``x_j`` in the probe's dtype.
        """
        step = self.step if step is None else step
        if step == "auto":
            return nonzero_steps(probe.snap(self.base_step(probe.dtype) * probe.scale()), step, probe)
        return nonzero_steps(probe.snap(np.full(probe.n_axes, float(step), dtype=probe.real_dtype)), step, probe)

    def plan(self, probe: Probe, h: NDArray) -> tuple[NDArray, Callable[[NDArray], NDArray]]:
        """The stencil at steps ``h``: ``(steps, finish)`` where ``steps`` has shape ``(S, n)`` and
        ``finish(probe.delta(steps))`` returns the estimates.  Lets a wrapper batch several rules."""
        offsets = np.asarray(self.offsets, dtype=h.dtype)
        weights = np.asarray(self.weights)
        return offsets[:, None] * h[None, :], lambda d: weights @ d / h

    def estimate(self, probe: Probe, h: NDArray | None = None) -> Estimate:
        h = self.steps(probe) if h is None else h
        steps, finish = self.plan(probe, h)
        return Estimate(finish(probe.delta(steps)), h)

    def tolerances(self, dtype: Any, cost: float, scale: float, step: NDArray) -> tuple[float, NDArray]:
        """Default ``rtol = 16 * eps^(p/(p+1))`` and ``atol_j = 16 * (roundoff_j + truncation_j)``.

        * roundoff: ``eps * |J| * sum|w_s| / h_j`` -- the rounding of each cost, divided by the step;
        * truncation: ``(h_j s_j / max(1, |x_j|))^p * M``, with the unknown ``(p+1)``-th derivative taken at the
          scale ``M = max(|J|, max|a|)`` of the problem.

        At the automatic step both terms are ``~ eps^(p/(p+1)) M``: about 6e-11 M (central, float64),
        3e-5 M (central, float32), 1.5e-8 M (forward, float64).  ``safety = 16`` absorbs the constants of
        the model and the rounding of sums over many examples.
        """
        eps = machine_eps(dtype)
        rtol = SAFETY * eps ** (self.order / (self.order + 1))
        M = max(abs(cost), scale, np.finfo(np.float64).tiny)
        w = float(np.sum(np.abs(self.weights)))
        h0 = self.base_step(dtype) if self.step == "auto" else float(self.step)
        atol = SAFETY * (eps * M * w / step + h0 ** self.order * M)
        return rtol, atol


@frozen
class Forward(FiniteDifference):
    """Forward difference ``[J(x + h e_j) - J(x)] / h``: 1 evaluation per entry.

    Truncation ``h |J''| / 2`` (order 1), roundoff ``2 eps |J| / h``; optimal ``h ~ sqrt(eps)``
    (1.5e-8 in float64, 3.5e-4 in float32), leaving an error ``~ sqrt(eps)``.
    """

    name: ClassVar[str] = "forward"
    offsets: ClassVar[tuple[float, ...]] = (1.0,)
    weights: ClassVar[tuple[float, ...]] = (1.0,)
    order: ClassVar[int] = 1
    order_step: ClassVar[int] = 1


@frozen
class Central(FiniteDifference):
    """Central difference ``[J(x + h e_j) - J(x - h e_j)] / (2h)``: 2 evaluations per entry.

    Truncation ``h^2 |J'''| / 6`` (order 2, even expansion), roundoff ``eps |J| / h``; optimal
    ``h ~ eps^(1/3)`` (6.1e-6 in float64, 4.9e-3 in float32), leaving an error ``~ eps^(2/3)``
    (3.7e-11 relative in float64).  Both sides are snapped, so the denominator ``h+ + h-`` is exact.
    """

    name: ClassVar[str] = "central"
    offsets: ClassVar[tuple[float, ...]] = (1.0, -1.0)
    weights: ClassVar[tuple[float, ...]] = (0.5, -0.5)
    order: ClassVar[int] = 2
    order_step: ClassVar[int] = 2

    def plan(self, probe: Probe, h: NDArray) -> tuple[NDArray, Callable[[NDArray], NDArray]]:
        hm = probe.snap(-h)
        return np.stack([h, hm]), lambda d: (d[0] - d[1]) / (h - hm)


def _resolve(method: Any) -> Any:
    return get_method(method) if isinstance(method, str) else method


@frozen
class Richardson:
    """Richardson extrapolation of a base difference rule over steps ``h, h/2, ..., h/2^levels``.

    With a base of order ``p`` whose error expands in steps of ``k`` (central: ``p = 2, k = 2``), level
    ``l`` combines two estimates as ``(2^q D(h/2) - D(h)) / (2^q - 1)`` with ``q = p + (l - 1) k``, which
    cancels the ``h^q`` term.  One level on central differences gives order 4 (weights ``-1/3, 4/3``),
    at 4 evaluations per entry.

    The automatic step balances the extrapolated truncation ``h^(p + levels k)`` against the roundoff
    ``eps / h``: ``h ~ eps^(1/(p + levels k + 1))`` (7.4e-4 in float64 for one level on central).

    The error estimate of each entry is ``|R - R'|``, where ``R`` is the final extrapolation and ``R'`` the
    best estimate one level below it: a conservative bound on the error of ``R``.
    """

    name: ClassVar[str] = "richardson"
    base: Any = field(factory=Central, converter=_resolve)
    levels: int = field(default=1)
    step: Step = field(default="auto", validator=_check_step)

    @levels.validator
    def _check_levels(self, attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError("levels", "an integer >= 1", describe(value))

    @property
    def order(self) -> int:
        return self.base.order + self.levels * self.base.order_step

    def base_step(self, dtype: Any) -> float:
        return machine_eps(dtype) ** (1.0 / (self.order + 1))

    def steps(self, probe: Probe) -> NDArray:
        """The largest per-axis step ``h`` (the levels use ``h / 2^l``), scaled and snapped by the probe."""
        if self.step == "auto":
            return probe.snap(self.base_step(probe.dtype) * probe.scale())
        return probe.snap(np.full(probe.n_axes, float(self.step), dtype=probe.real_dtype))

    def estimate(self, probe: Probe) -> Estimate:
        h = self.steps(probe)
        levels = [h] + [probe.snap(h / 2**level) for level in range(1, self.levels + 1)]
        for hl in levels:
            nonzero_steps(hl, self.step, probe)
        # every level's stencil in one batch of evaluations
        parts, finishes = zip(*(self.base.plan(probe, hl) for hl in levels))
        sizes = [len(steps) for steps in parts]
        steps = np.concatenate(parts)
        del parts  # S x n values: keep one copy only
        d = probe.delta(steps)
        table, row = [], 0
        for size, finish in zip(sizes, finishes):
            table.append(finish(d[row: row + size]))
            row += size
        prev = table
        for level in range(1, self.levels + 1):
            q = self.base.order + (level - 1) * self.base.order_step
            f = 2.0**q
            prev, below = [(f * prev[i + 1] - prev[i]) / (f - 1) for i in range(len(prev) - 1)], prev
        best = prev[0]
        return Estimate(best, h, error=np.abs(best - below[-1]))

    def tolerances(self, dtype: Any, cost: float, scale: float, step: NDArray) -> tuple[float, NDArray]:
        """As :meth:`FiniteDifference.tolerances` with the extrapolated order ``p + levels k``; roundoff is
        amplified by the extrapolation weights (``sum |w| = 5/3`` for one level), counted in the factor."""
        eps = machine_eps(dtype)
        q = self.order
        rtol = SAFETY * eps ** (q / (q + 1))
        M = max(abs(cost), scale, np.finfo(np.float64).tiny)
        h0 = self.base_step(dtype) if self.step == "auto" else float(self.step)
        amplification = 2.0**self.levels
        atol = SAFETY * (amplification * eps * M / step + h0**q * M)
        return rtol, atol


@frozen
class ComplexStep:
    """Complex-step derivative ``Im J(x + i h e_j) / h``: 1 complex evaluation per entry.

    Truncation ``h^2 |J'''| / 6`` and *no* subtractive cancellation, so ``h`` can be tiny: the automatic
    step is ``eps^2 * max(1, |x_j|)`` (4.9e-32 in float64), which makes the truncation negligible and
    leaves only the rounding of the evaluation itself, ``~ eps`` relative.  No snapping is needed: the
    real part of ``x`` is not changed.  The target must be analytic and accept complex parameters
    (``abs``, comparisons and ``np.real`` break it).
    """

    name: ClassVar[str] = "complex-step"
    step: Step = field(default="auto", validator=_check_step)

    def base_step(self, dtype: Any) -> float:
        return machine_eps(dtype) ** 2

    def steps(self, probe: Probe) -> NDArray:
        """Per-axis imaginary step (not snapped: the real part of ``x`` does not move)."""
        if self.step == "auto":
            return self.base_step(probe.dtype) * probe.scale()
        return np.full(probe.n_axes, float(self.step), dtype=probe.real_dtype)

    def estimate(self, probe: Probe) -> Estimate:
        h = self.steps(probe)
        return Estimate(probe.imag(h) / h, h)

    def tolerances(self, dtype: Any, cost: float, scale: float, step: NDArray) -> tuple[float, NDArray]:
        """``rtol = 64 eps`` (the evaluation's own rounding, amplified by the conditioning of the cost) and
        ``atol = 64 eps max(|J|, max|a|)``."""
        eps = machine_eps(dtype)
        M = max(abs(cost), scale, np.finfo(np.float64).tiny)
        return 4 * SAFETY * eps, np.full(step.shape, 4 * SAFETY * eps * M)


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_method(name: str, factory: Callable[..., Any]) -> None:
    """Make a strategy available by name (for ``check_*(method=name)`` and the CLI's ``--method``).

    ``factory(step=...)`` must return an object following :class:`Method`.
    """
    if not isinstance(name, str) or not name:
        raise InputError("name", "a non-empty string", describe(name))
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    """Registered strategy names, in registration order."""
    return list(_REGISTRY)


def get_method(name: str, **options: Any) -> Any:
    """The strategy registered as ``name``, built with ``options`` (e.g. ``step=1e-4``)."""
    try:
        factory = _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(str(name), method_names()) from None
    return factory(**options)


register_method("forward", Forward)
register_method("central", Central)
register_method("richardson", Richardson)
register_method("complex-step", ComplexStep)
