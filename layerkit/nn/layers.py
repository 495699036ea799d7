"""Layer objects: the :class:`Layer` protocol, :class:`Dense` and :class:`Sigmoid`.

Shapes: a layer maps a batch ``x`` of shape ``(m, n_in)`` (one example per row) to ``y`` of shape
``(m, n_out)``.  ``backward(dy)`` takes ``dL/dy`` of shape ``(m, n_out)`` and returns ``dL/dx`` of shape
``(m, n_in)``; a layer with parameters also *writes* ``dL/dparam`` into the gradient arrays bound to it.

Parameters are owned by whoever binds them: a :class:`~layerkit.Network` binds views into its one flat
buffer, so that layers never hold copies.  A layer may be used alone too: ``Dense`` starts bound to
standalone arrays of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .._validate import describe, float_dtype, positive_int
from ..errors import InputError, NotBoundError, NotForwardedError
from ..fast.changes import (
    Change,
    ColumnChange,
    ColumnsChange,
    DenseChange,
    ParamInputs,
    RankOneChange,
    SeriesChange,
    compose_series,
    sigmoid_change,
    sigmoid_series,
)
from .activations import sigmoid

#: Half-width of the strip ``|Im z| <= pi/2`` in which ``|sigmoid(z)| <= 1`` and ``|sigmoid'(z)| <= 1/2``
#: (see :meth:`Sigmoid.series_bound`): the domain of the bounds that certify series truncations.
STRIP = np.pi / 2


def strip_limit(b: NDArray) -> NDArray:
    """Largest ``rho`` per batch item for which changes bounded by ``rho b`` (``b`` of shape ``(B, n)``)
    stay within the strip: ``(pi/2) / max_l b[B, l]`` (infinite where ``b`` is 0)."""
    with np.errstate(divide="ignore"):
        return STRIP / np.max(b, axis=1, initial=0.0)


@runtime_checkable
class Layer(Protocol):
    """What a layer must provide.

    Attributes
    ----------
    param_shapes : Mapping[str, tuple[int, ...]]
        Shapes of the parameter arrays the layer needs, by name (empty for none).
    params, grads : Mapping[str, NDArray]
        The parameter and gradient arrays currently bound (empty for none).

    Methods
    -------
    bind(params, grads)
        Take parameter and gradient arrays (one per name in ``param_shapes``) and keep *references* to them.
    forward(x)
        Compute the output, caching only what ``backward`` needs.
    backward(dy)
        Return ``dL/dx`` and write parameter gradients into the bound gradient arrays (``g[...] = ...``).

    Optional members, used when present
    -----------------------------------
    penalized(name, array)
        The view of ``array`` (a parameter named ``name``) that L2 regularization applies to; a layer
        without it is never regularized.
    backward_params(dy)
        Like ``backward`` but writes only the parameter gradients; a network uses it for its first layer,
        whose input gradient nobody needs.
    propagate(x, y, change)
        Exact propagation of a structured input change; see :mod:`layerkit.fast.changes`.
    series(x, y, change), series_bound(b)
        Propagation of a :class:`~layerkit.fast.changes.SeriesChange` (Taylor coefficients in a scalar ``tau`` per
        example), and of a bound on that change for complex ``tau`` (see :meth:`Dense.series_bound`); used to
        certify the truncation of the series.
    param_change(name, row, cols, steps, x), param_inputs(name, x)
        For Dense-like parameters, whose entry ``(r, c)`` moves only output column ``r``, by ``t F[:, c]``
        (``param_inputs`` returns ``F`` as a :class:`~layerkit.fast.changes.ParamInputs`).
    """

    param_shapes: Mapping[str, tuple[int, ...]]
    params: Mapping[str, NDArray]
    grads: Mapping[str, NDArray]

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None: ...

    def forward(self, x: NDArray) -> NDArray: ...

    def backward(self, dy: NDArray) -> NDArray: ...


def _defined_in(cls: type, name: str) -> int:
    """Position in ``cls``'s MRO of the class that defines attribute ``name`` (large when none does)."""
    for i, klass in enumerate(cls.__mro__):
        if name in vars(klass):
            return i
    return len(cls.__mro__)


def provides(layer: Any, *members: str) -> bool:
    """Whether ``layer`` has every member, each defined at least as far down its class hierarchy as its
    ``forward``: a subclass that redefines ``forward`` but inherits, say, ``series`` would be evaluated
    with its parent's math, so it takes the generic path instead.  A ``forward`` set on the instance itself
    counts as the most specialized of all."""
    if layer is None:
        return False
    own = getattr(layer, "__dict__", {})
    if "forward" in own:
        return all(name in own for name in members)
    cls = type(layer)
    return all(hasattr(layer, name) and _defined_in(cls, name) <= _defined_in(cls, "forward") for name in members)


def _check_input(x: Any, n_in: int, who: str) -> NDArray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise InputError(f"{who}.forward(x)", f"shape (m, {n_in})", describe(x))
    return x


def _check_dy(dy: Any, y_shape: tuple[int, ...], who: str) -> NDArray:
    dy = np.asarray(dy)
    if dy.shape != y_shape:
        raise InputError(f"{who}.backward(dy)", f"shape {y_shape} (the last output's)", describe(dy))
    return dy


def epsilon_init(n_in: int, n_out: int) -> float:
    """Half-width of the uniform initialization interval, ``sqrt(6) / sqrt(n_in + n_out)``."""
    return float(np.sqrt(6.0) / np.sqrt(n_in + n_out))


class Dense:
    """Affine layer ``y = x W^T + b`` with the bias stored as column 0 of one matrix ``Theta``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    seed : int or None
        Seed of the standalone initialization, uniform in ``[-eps, eps]`` with
        ``eps = sqrt(6) / sqrt(n_in + n_out)``.  A Network re-initializes its layers anyway.
    dtype : float32 or float64
        dtype of the standalone arrays.

    Notes
    -----
    ``Theta`` has shape ``(n_out, n_in + 1)``: ``b = Theta[:, 0]`` and ``W = Theta[:, 1:]``, as in the
    classic course code.  With ``x1 = [1, x]`` (a column of ones prepended), ``y = x1 Theta^T`` and

    * ``dL/dTheta = dy^T x1``  (shape ``(n_out, n_in + 1)``),
    * ``dL/dx = dy W``          (shape ``(m, n_in)``).
    """

    def __init__(self, n_in: int, n_out: int, *, seed: int | None = None, dtype: Any = np.float64) -> None:
        self.n_in = positive_int(n_in, "n_in")
        self.n_out = positive_int(n_out, "n_out")
        self.param_shapes: dict[str, tuple[int, ...]] = {"Theta": (self.n_out, self.n_in + 1)}
        dt = float_dtype(dtype)
        eps = epsilon_init(self.n_in, self.n_out)
        theta = np.random.default_rng(seed).uniform(-eps, eps, self.param_shapes["Theta"]).astype(dt)
        self.params: dict[str, NDArray] = {}
        self.grads: dict[str, NDArray] = {}
        self.bind({"Theta": theta}, {"Theta": np.zeros_like(theta)})
        self._x: NDArray | None = None
        self._x1t: tuple[NDArray, NDArray] | None = None

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        for name, arrs in (("params", params), ("grads", grads)):
            a = arrs.get("Theta") if isinstance(arrs, Mapping) else None
            if a is None or a.shape != self.param_shapes["Theta"]:
                raise InputError(f"Dense.bind({name})", f"{{'Theta': array of shape {self.param_shapes['Theta']}}}",
                                 describe(a))
        self.params = {"Theta": params["Theta"]}
        self.grads = {"Theta": grads["Theta"]}

    @property
    def Theta(self) -> NDArray:
        """The bound parameter matrix, shape ``(n_out, n_in + 1)``."""
        return self.params["Theta"]

    @property
    def dTheta(self) -> NDArray:
        """The bound gradient matrix, shape ``(n_out, n_in + 1)``."""
        return self.grads["Theta"]

    def penalized(self, name: str, array: NDArray) -> NDArray:
        """The weights (all but the bias column 0) are regularized."""
        return array[:, 1:]

    def forward(self, x: NDArray) -> NDArray:
        x = _check_input(x, self.n_in, "Dense")
        if not self.params:
            raise NotBoundError("Dense has no parameters bound")
        theta = self.params["Theta"]
        self._x = x
        return x @ theta[:, 1:].T + theta[:, 0]

    def backward(self, dy: NDArray) -> NDArray:
        self.backward_params(dy)
        return dy @ self.params["Theta"][:, 1:]

    def backward_params(self, dy: NDArray) -> None:
        """Write ``dL/dTheta`` only (a network's first layer: nobody needs the input gradient there)."""
        if self._x is None:
            raise NotForwardedError("Dense.backward was called before Dense.forward: there is no input to differentiate at")
        x = self._x
        dy = _check_dy(dy, (x.shape[0], self.n_out), "Dense")
        g = self.grads["Theta"]
        g[:, 0] = dy.sum(axis=0)
        g[:, 1:] = dy.T @ x

    # -- structured perturbations (layerkit.fast.probe) -------------------------------------------
    def param_change(self, name: str, row: int, cols: Any, steps: NDArray, x: NDArray) -> ColumnChange:
        """Output change of ``Theta[row, c] += steps[b]`` for the columns ``c`` in ``cols`` (a slice or an
        index array), at input ``x`` (m, n_in): only output column ``row`` moves, by ``steps[b] * x1[:, c]``
        with ``x1 = [1, x]`` (exact: the layer is linear).  Returns a ColumnChange of shape ``(B, m)``."""
        memo = self._x1t
        if memo is None or memo[0] is not x:  # [1, x]^T, contiguous, memoized per input
            x1t = np.empty((x.shape[1] + 1, x.shape[0]), dtype=x.dtype)
            x1t[0] = 1
            x1t[1:] = x.T
            memo = self._x1t = (x, x1t)
        return ColumnChange(row, steps[:, None] * memo[1][cols])

    def param_inputs(self, name: str, x: NDArray) -> ParamInputs:
        """``F = x1 = [1, x]`` (m, n_in + 1): ``Theta[r, c] += t`` adds ``t F[:, c]`` to output column ``r``."""
        return ParamInputs(x, ones=1)

    def series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """Taylor coefficients of the output change: ``coeffs W^T`` (the layer is linear); a column series
        becomes rank one, ``outer(c_k, W[:, col])``, and stays rank one."""
        W = self.params["Theta"][:, 1:]
        if change.cols is not None:  # rank one: the column of W
            return SeriesChange(change.coeffs, v=W[:, change.cols].T)
        if change.v is not None:  # rank one stays rank one: outer(c, v) W^T = outer(c, W v)
            return SeriesChange(change.coeffs, v=change.v @ W.T)
        return SeriesChange(change.coeffs @ W.T)

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: ``A |W|`` for output magnitudes ``A`` (m, n_out); gives the scale of the
        rounding of gradients (see :func:`layerkit.fast.probe.rounding_scales`)."""
        return A @ np.abs(self.params["Theta"][:, 1:])

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """Bound propagation for complex ``tau``: if ``|dx[i, l]| <= rho b[B, l]`` for every example, then
        ``|dy[i, j]| <= rho (|W| b)[B, j]``, for any ``rho`` (no limit: the layer is linear).  ``b`` is
        ``(B, n_in)``; returns ``(b_out, limit)`` with ``limit`` of shape ``(B,)``."""
        return b @ np.abs(self.params["Theta"][:, 1:]).T, np.full(b.shape[0], np.inf)

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """Output change for an input change (exact: ``D W^T`` for ``W = Theta[:, 1:]``)."""
        W = self.params["Theta"][:, 1:]
        if isinstance(change, ColumnChange):
            return RankOneChange(change.delta, W[:, change.col].copy())
        if isinstance(change, RankOneChange):
            return RankOneChange(change.u, W @ change.v)
        if isinstance(change, ColumnsChange):
            return DenseChange(change.delta @ W[:, change.cols].T)
        return DenseChange(change.delta @ W.T)

    def direction_change(self, x: NDArray, change: Change | None, dtheta: NDArray, rows: slice) -> Change:
        """Output change when ``Theta`` moves by ``dtheta[b]`` (shape ``(B, n_out, n_in + 1)``, zero outside
        ``rows``) and the input by ``change`` (or not at all): ``D_x W^T + (x1 + D_x1) dTheta^T``, exact.
        With no input change only the output columns ``rows`` move."""
        # x1 dTheta^T is formed as x dW^T + db, as forward does, without materializing x1 = [1, x]
        if change is None:  # one (m, n_in) x (n_in, B r) product for the whole batch
            sub = dtheta[:, rows, :]
            B, r = sub.shape[0], sub.shape[1]
            flat = sub.reshape(B * r, -1)
            out = x @ flat[:, 1:].T + flat[:, 0]  # (m, B r)
            return ColumnsChange(rows, out.reshape(x.shape[0], B, r).transpose(1, 0, 2))
        dx = change.dense(x.shape)
        W = self.params["Theta"][:, 1:]
        dW = dtheta[:, :, 1:].transpose(0, 2, 1)
        out = dx @ W.T + np.matmul(x, dW)
        out += dtheta[:, None, :, 0]
        out += np.matmul(dx, dW)
        return DenseChange(out)

    def __repr__(self) -> str:
        return f"Dense({self.n_in}, {self.n_out})"


class Sigmoid:
    """Elementwise logistic function ``y = 1 / (1 + exp(-x))``, stable for every finite input.

    Notes
    -----
    ``dL/dx = dy * y * (1 - y)``, computed as ``dy * y * sigmoid(-x)``: ``1 - y`` formed by subtraction keeps
    only the rounding of ``y`` when the unit saturates (``y`` within a few ``eps`` of 1), so the input is kept
    (a reference, no copy) next to the output.  The dtype of ``x`` is preserved.  When it is the
    last layer of a :class:`~layerkit.Network`, the network computes the cost from its *input* (the logits)
    in log-sigmoid form, so saturation does not make the cost infinite.
    """

    param_shapes: Mapping[str, tuple[int, ...]] = {}
    params: Mapping[str, NDArray] = {}
    grads: Mapping[str, NDArray] = {}

    def __init__(self) -> None:
        self._x: NDArray | None = None
        self._y: NDArray | None = None
        self._slope: tuple[NDArray, ...] | None = None
        self._taylor_memo: tuple[NDArray, NDArray] | None = None

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        """Nothing to bind: the layer has no parameters."""

    def forward(self, x: NDArray) -> NDArray:
        x = np.asarray(x)
        if x.ndim != 2:
            raise InputError("Sigmoid.forward(x)", "a 2-D array (m, n)", describe(x))
        self._x = x
        self._y = sigmoid(x)
        return self._y

    def backward(self, dy: NDArray) -> NDArray:
        if self._y is None or self._x is None:
            raise NotForwardedError("Sigmoid.backward was called before Sigmoid.forward: there is no output to differentiate at")
        y = self._y
        dy = _check_dy(dy, y.shape, "Sigmoid")
        return dy * y * sigmoid(-self._x)

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """Exact output change ``sigmoid(x + D) - sigmoid(x)`` (see :func:`~layerkit.fast.changes.sigmoid_change`);
        a column change stays a column change."""
        slope = self._slopes(x, y)
        if isinstance(change, ColumnChange):
            c = change.col
            return ColumnChange(c, sigmoid_change(slope[1][c], slope[2][c], change.delta, overwrite=True, z=x[:, c]))
        if isinstance(change, ColumnsChange):
            c = change.cols
            return ColumnsChange(c, sigmoid_change(y[:, c], slope[3][:, c], change.delta, overwrite=True,
                                                   z=x[:, c]))
        return DenseChange(sigmoid_change(y, slope[3], change.dense(x.shape), overwrite=True, z=x))

    def series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """Taylor coefficients of ``sigmoid(x + D(tau)) - sigmoid(x)`` from those of ``D`` (see
        :func:`~layerkit.fast.changes.sigmoid_series`); a column series stays a column series."""
        slope = self._slopes(x, y)
        if change.cols is not None:
            c = change.cols
            return SeriesChange(sigmoid_series(slope[1][c], slope[4][c], change.coeffs), c)
        if change.v is not None:
            # rank one, c(tau) v: sigmoid(x_il + c_i v_l) - sigmoid(x_il) = sum_n sigma_n(x_il) v_l^n c_i^n,
            # with sigma_n = sigmoid^(n) / n! at x (memoized): only powers of the narrow series c are formed
            K = change.coeffs.shape[0]
            sig = self._taylor(x, y, K)
            powers = change.v[None, :, None, :] ** np.arange(1, K + 1)[:, None, None, None]
            return SeriesChange(compose_series(sig[:, None] * powers, change.coeffs[..., None]))
        return SeriesChange(sigmoid_series(y, slope[5], change.coeffs))

    def _taylor(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        """``sigmoid^(n)(x) / n!`` for ``n = 1..K``, shape ``(K, m, n)``, memoized per input."""
        memo = self._taylor_memo
        if memo is None or memo[0] is not x or len(memo[1]) < K:
            memo = self._taylor_memo = (x, sigmoid_series(y, self._slopes(x, y)[5], None, K))
        return memo[1][:K]

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """``sigmoid'(z) = 1 / (4 cosh^2(z/2))`` and ``|cosh(u + iv)|^2 = sinh^2 u + cos^2 v >= 1/2`` when
        ``|v| <= pi/4``, so ``|sigmoid'| <= 1/2`` in the strip ``|Im z| <= pi/2``, and
        ``|sigmoid(x + d) - sigmoid(x)| <= |d| / 2`` for real ``x`` and ``|d| <= pi/2``: the bound halves,
        valid for ``rho <= (pi/2) / max_l b[B, l]``."""
        return b / 2, strip_limit(b)

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: ``A sigmoid'(x)``, formed as ``A s sigmoid(-x)``."""
        return A * self._slopes(x, y)[3]

    def _slopes(self, x: NDArray, y: NDArray) -> tuple[NDArray, ...]:
        """Memoized per input: ``(x, s^T, s (1 - s)^T, s (1 - s), sigmoid(-x)^T, sigmoid(-x))``, rows
        contiguous; ``s (1 - s)`` is formed as ``s sigmoid(-x)``, without cancellation near ``s = 1``."""
        slope = self._slope
        if slope is None or slope[0] is not x:
            sc = sigmoid(-x)
            s_sc = y * sc
            slope = self._slope = (x, np.ascontiguousarray(y.T), np.ascontiguousarray(s_sc.T), s_sc,
                                   np.ascontiguousarray(sc.T), sc)
        return slope

    def __repr__(self) -> str:
        return "Sigmoid()"
