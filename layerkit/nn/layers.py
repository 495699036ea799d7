"""Layer objects: the :class:`Layer` protocol and :class:`Dense`; the elementwise layers (Sigmoid, Tanh, ReLU,
LeakyReLU, Identity) are in :mod:`layerkit.nn.elementwise` and importable from here too.

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
from .elementwise import Elementwise, Identity, LeakyReLU, ReLU, Sigmoid, Tanh


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
    init_params(rng)
        Fill the bound parameters with a random start (``rng``: a ``numpy.random.Generator``); a network
        calls it from :meth:`~layerkit.Network.init_random`.  A layer without it starts from zeros.

    A layer knows nothing of gradient checks.  The fast engine that checks networks has rules for layerkit's
    own layers only, and calls any other layer's ``forward``: batched, for a layer without parameters
    (see :mod:`layerkit.fast.rules`).
    """

    param_shapes: Mapping[str, tuple[int, ...]]
    params: Mapping[str, NDArray]
    grads: Mapping[str, NDArray]

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None: ...

    def forward(self, x: NDArray) -> NDArray: ...

    def backward(self, dy: NDArray) -> NDArray: ...


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
        theta = np.zeros(self.param_shapes["Theta"], dtype=float_dtype(dtype))
        self.params: dict[str, NDArray] = {}
        self.grads: dict[str, NDArray] = {}
        self.bind({"Theta": theta}, {"Theta": np.zeros_like(theta)})
        self.init_params(np.random.default_rng(seed))
        self._x: NDArray | None = None

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        for name, arrs in (("params", params), ("grads", grads)):
            a = arrs.get("Theta") if isinstance(arrs, Mapping) else None
            if a is None or a.shape != self.param_shapes["Theta"]:
                raise InputError(f"Dense.bind({name})", f"{{'Theta': array of shape {self.param_shapes['Theta']}}}",
                                 describe(a))
        self.params = {"Theta": params["Theta"]}
        self.grads = {"Theta": grads["Theta"]}

    def init_params(self, rng: np.random.Generator) -> None:
        """Uniform in ``[-eps, eps]``, ``eps = sqrt(6) / sqrt(n_in + n_out)`` (the classic start), written into
        the bound ``Theta``."""
        eps = epsilon_init(self.n_in, self.n_out)
        theta = self.params["Theta"]
        theta[...] = rng.uniform(-eps, eps, theta.shape).astype(theta.dtype)

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

    def __repr__(self) -> str:
        return f"Dense({self.n_in}, {self.n_out})"


__all__ = ["Dense", "Elementwise", "Identity", "Layer", "LeakyReLU", "ReLU", "Sigmoid", "Tanh", "epsilon_init"]
