"""Elementwise layers: one function applied to every entry, ``y = f(x)``.

:class:`Elementwise` is the helper: a subclass gives ``fn(x)`` and ``derivative(x, y)`` (``f'(x)``, given
``y = f(x)`` too, so that it can be formed from the output without cancellation), and gets ``forward``,
``backward`` and a fast rule for the network engine (:mod:`layerkit.fast.layer_rules`), which carries
changes through it exactly.  Optional members make the engine faster or more precise:

* ``change(x, y, d)``: ``f(x + d) - f(x)`` without cancellation (default: ``fn(x + d) - y``);
* ``taylor(x, y, K)``: ``f^(n)(x) / n!`` for ``n = 1..K``, shape ``(K,) + x.shape``, and ``strip``, ``slope``
  (class attributes): ``|f'(z)| <= slope`` for complex ``z`` with ``|Im z| <= strip``.  With both, a check
  reads a whole block's cost changes off Taylor tables whose truncation is certified (about 8x faster);
* ``kinks``: the points where ``f`` is not differentiable (ReLU: ``(0.0,)``), so that a check knows a
  difference across one is not a derivative;
* ``linear_pieces``: True when ``f`` is linear between its kinks (ReLU, LeakyReLU), so that ``derivative`` off
  the kinks is the slope of the piece: the engine then reads a block's changes off Taylor tables on every
  example whose step stays on its piece, and evaluates the others' entries exactly.

A new activation is a few lines::

    class Softsign(Elementwise):
        def fn(self, x):
            return x / (1 + np.abs(x))

        def derivative(self, x, y):
            return (1 - np.abs(y)) ** 2

The built-in layers are made this way.  ``forward`` keeps its input and output (references, no copies) for
``backward``; the dtype of ``x`` is preserved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError, NotForwardedError
from .activations import sigmoid


class Elementwise:
    """Base class of layers that apply one function to every entry (module docstring).

    Subclasses define ``fn(x)`` and ``derivative(x, y)``; ``backward(dy)`` is ``dy * derivative(x, y)``.
    """

    param_shapes: Mapping[str, tuple[int, ...]] = {}
    params: Mapping[str, NDArray] = {}
    grads: Mapping[str, NDArray] = {}
    #: Points where ``fn`` is not differentiable.
    kinks: tuple[float, ...] = ()
    #: Whether ``fn`` is linear between consecutive kinks (and beyond the outermost ones).
    linear_pieces: bool = False
    #: Half-width of a strip ``|Im z| <= strip`` in which ``|f'(z)| <= slope`` (None: no certified series).
    strip: float | None = None
    slope: float | None = None

    def __init__(self) -> None:
        self._x: NDArray | None = None
        self._y: NDArray | None = None

    def fn(self, x: NDArray) -> NDArray:
        raise NotImplementedError

    def derivative(self, x: NDArray, y: NDArray) -> NDArray:
        raise NotImplementedError

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        """Nothing to bind: the layer has no parameters."""

    def forward(self, x: NDArray) -> NDArray:
        x = np.asarray(x)
        if x.ndim < 2:
            raise InputError(f"{type(self).__name__}.forward(x)", "a batch (m, n) or (m, C, H, W)", describe(x))
        self._x = x
        self._y = self.fn(x)
        return self._y

    def backward(self, dy: NDArray) -> NDArray:
        if self._y is None or self._x is None:
            raise NotForwardedError(f"{type(self).__name__}.backward was called before "
                                    f"{type(self).__name__}.forward: there is no output to differentiate at")
        dy = np.asarray(dy)
        if dy.shape != self._y.shape:
            raise InputError(f"{type(self).__name__}.backward(dy)", f"shape {self._y.shape} (the last output's)",
                             describe(dy))
        return dy * self.derivative(self._x, self._y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Sigmoid(Elementwise):
    """Logistic function ``y = 1 / (1 + exp(-x))``, stable for every finite input.

    ``f'(x) = y (1 - y)``, formed as ``y sigmoid(-x)``: ``1 - y`` by subtraction keeps only the rounding of
    ``y`` when the unit saturates.  When it is the last layer of a :class:`~layerkit.Network` whose loss is
    the sigmoid cross-entropy, the network computes the cost from its *input* (the logits) in log-sigmoid
    form, so saturation does not make the cost infinite.  ``|f'| <= 1/2`` in the strip ``|Im z| <= pi/2``.
    """

    strip = np.pi / 2
    slope = 0.5

    def fn(self, x: NDArray) -> NDArray:
        return sigmoid(x)

    def derivative(self, x: NDArray, y: NDArray) -> NDArray:
        return y * sigmoid(-x)


class Tanh(Elementwise):
    """Hyperbolic tangent ``y = tanh(x)``.

    ``f'(x) = sech^2(x)``, formed from ``x`` (``1 - y^2`` would keep only the rounding of ``y`` near
    saturation).  Changes are exact and cancellation-free: ``tanh(x + d) - tanh(x) =
    sinh(d) / (cosh(x + d) cosh(x))``.  The poles of ``tanh`` are at ``i pi/2``; on ``|Im z| <= pi/4``,
    ``|cosh z|^2 = sinh^2 Re z + cos^2 Im z >= 1/2``, so ``|f'| <= 2``.
    """

    strip = np.pi / 4
    slope = 2.0

    def fn(self, x: NDArray) -> NDArray:
        return np.tanh(x)

    def derivative(self, x: NDArray, y: NDArray) -> NDArray:
        with np.errstate(over="ignore"):
            return 1 / np.cosh(x) ** 2

    def change(self, x: NDArray, y: NDArray, d: NDArray) -> NDArray:
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.sinh(d) / (np.cosh(x + d) * np.cosh(x))
        # where cosh overflows the change is tanh's saturated difference, formed directly
        bad = ~np.isfinite(out)
        if bad.any():
            xb = np.broadcast_to(x, d.shape)[bad]
            out[bad] = np.tanh(xb + d[bad]) - np.tanh(xb)
        return out

    def taylor(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        """``tanh^(n)(x) / n!`` for ``n = 1..K``: each derivative is a polynomial in ``t = tanh x`` and
        ``s = sech^2 x`` (``t' = s``, ``s' = -2 t s``), evaluated with ``s`` formed stably."""
        s = self.derivative(x, y)
        terms: dict[tuple[int, int], float] = {(0, 1): 1.0}  # t^a s^b -> coefficient
        out = np.empty((K,) + np.shape(x), dtype=np.result_type(x, np.float32))
        # the powers t^a and s^b the polynomials read (a < K, 1 <= b <= K), by products rather than pow
        t_pow: list[Any] = [None, np.asarray(y, dtype=out.dtype)]
        s_pow: list[Any] = [None, np.asarray(s, dtype=out.dtype)]
        for _ in range(2, K + 1):
            t_pow.append(t_pow[-1] * t_pow[1])
            s_pow.append(s_pow[-1] * s_pow[1])
        term = np.empty_like(out[0])
        fact = 1.0
        for n in range(1, K + 1):
            fact *= n
            acc = out[n - 1]
            acc[...] = 0
            for (a, b), c in terms.items():  # every term has b >= 1
                np.multiply(s_pow[b], c / fact, out=term)
                if a:
                    term *= t_pow[a]
                acc += term
            nxt: dict[tuple[int, int], float] = {}
            for (a, b), c in terms.items():
                if a:
                    nxt[a - 1, b + 1] = nxt.get((a - 1, b + 1), 0.0) + a * c
                nxt[a + 1, b] = nxt.get((a + 1, b), 0.0) - 2 * b * c
            terms = nxt
        return out


class ReLU(Elementwise):
    """Rectifier ``y = max(x, 0)``; its derivative is taken as 1 for ``x > 0`` and 0 elsewhere (at 0 too).

    ``f`` has a kink at 0: a finite difference whose stencil crosses it is not a derivative, and a check
    says so (``nonsmooth``) instead of failing.  Changes are exact: ``d`` where the unit stays on, ``-x`` or
    ``x + d`` where it crosses, 0 where it stays off.
    """

    kinks = (0.0,)
    linear_pieces = True

    def fn(self, x: NDArray) -> NDArray:
        return np.maximum(x, 0)

    def derivative(self, x: NDArray, y: NDArray) -> NDArray:
        return (x > 0).astype(np.result_type(x, np.float32))

    def change(self, x: NDArray, y: NDArray, d: NDArray) -> NDArray:
        xd = x + d
        return np.where(x > 0, np.where(xd > 0, d, -x), np.where(xd > 0, xd, 0)).astype(d.dtype, copy=False)


class LeakyReLU(Elementwise):
    """``y = x`` for ``x > 0``, ``alpha x`` elsewhere (``alpha`` = 0.01 by default); a kink at 0."""

    kinks = (0.0,)
    linear_pieces = True

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if not (isinstance(alpha, (int, float)) and np.isfinite(alpha)):
            raise InputError("alpha", "a finite number", describe(alpha))
        self.alpha = float(alpha)

    def fn(self, x: NDArray) -> NDArray:
        return np.where(x > 0, x, self.alpha * x)

    def derivative(self, x: NDArray, y: NDArray) -> NDArray:
        return np.where(x > 0, 1.0, self.alpha).astype(np.result_type(x, np.float32))

    def change(self, x: NDArray, y: NDArray, d: NDArray) -> NDArray:
        xd = x + d
        a = self.alpha
        return np.where(x > 0, np.where(xd > 0, d, a * xd - x), np.where(xd > 0, xd - a * x, a * d)).astype(
            d.dtype, copy=False)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.alpha:g})"


class Identity(Elementwise):
    """``y = x``: a linear output for regression (with :class:`~layerkit.MeanSquaredError`)."""

    strip = np.inf
    slope = 1.0

    def fn(self, x: NDArray) -> NDArray:
        return x

    def derivative(self, x: NDArray, y: NDArray) -> NDArray:
        return np.ones_like(x)

    def change(self, x: NDArray, y: NDArray, d: NDArray) -> NDArray:
        return d.copy()

    def taylor(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        out = np.zeros((K,) + np.shape(x), dtype=np.result_type(x, np.float32))
        out[0] = 1
        return out

