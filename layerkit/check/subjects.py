"""Targets: what a check evaluates, built from a plain function, a Network or a single layer.

A :class:`Target` bundles ``fun(theta) -> (cost, grad)``, a cost-only function, the point ``x0`` and the
block layout, plus what the doctor may use for follow-up experiments (the network and data, or the layer).
Building a target validates the caller's input; evaluating it never changes the caller's arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from attrs import define, field
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError, NonFiniteError, TargetError
from ..nn.layers import Layer, provides
from ..nn.layout import ParameterLayout
from ..nn.network import Network, Objective
from .probes import as_scalar_cost


def _as_point(x0: Any) -> NDArray:
    x = np.asarray(x0)
    if x.ndim != 1 or x.size == 0:
        raise InputError("x0", "a non-empty 1-D parameter vector", describe(x0))
    if np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number):
        raise InputError("x0", "a real float32 or float64 vector", describe(x))
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("x0", "finite values", f"{x[i]} at position {i}")
    return np.array(x, copy=True)


@define
class Target:
    """A ``(cost, grad)`` function at a point, with its block layout.

    Attributes
    ----------
    fun : callable
        ``fun(theta) -> (cost, grad)``.
    x0 : NDArray, shape (P,)
        A private copy of the point.
    layout : ParameterLayout
    kind : str
        ``"function"``, ``"network"`` or ``"layer"``.
    cost_fn : callable or None
        ``theta -> cost`` when cheaper than ``fun(theta)[0]``.
    context : dict
        ``lambda_`` and ``m`` for networks, and anything else reports should carry.
    network, objective, layer : optional
        For follow-up experiments.
    scale_fn : callable or None
        ``() -> s`` (shape (P,), entries >= 1): how much faster than its own magnitude suggests the cost
        varies along each axis; automatic steps are divided by it (see :meth:`axis_scale`).
    """

    fun: Callable[[NDArray], Any]
    x0: NDArray
    layout: ParameterLayout
    kind: str = "function"
    cost_fn: Callable[[NDArray], Any] | None = None
    context: dict[str, Any] = field(factory=dict)
    network: Network | None = None
    objective: Objective | None = None
    layer: Any = None
    n_calls: int = 0
    scale_fn: Callable[[], NDArray] | None = None
    _axis_scale: NDArray | None = field(default=None, init=False, repr=False)

    def axis_scale(self) -> NDArray | None:
        """Per-axis step divisors ``s_j >= 1`` (None: all 1), computed once.

        For a network, entry ``(r, c)`` of a Dense layer's ``Theta`` moves pre-activation ``r`` by ``t x1[:, c]``,
        so the cost varies along it on a length scale ``1 / max_i |x1[i, c]|``: with raw inputs (pixel values up
        to 255, say) a step relative to ``max(1, |theta|)`` alone would leave a truncation error ``s^p`` times
        larger than the error model assumes.  Dividing the step by ``s = max(1, max_i |x1[i, c]|)`` makes it
        relative to the pre-activation it moves.
        """
        if self._axis_scale is None and self.scale_fn is not None:
            self._axis_scale = self.scale_fn()
        return self._axis_scale

    def cost(self, theta: NDArray) -> Any:
        """Cost only, at ``theta``."""
        self.n_calls += 1
        if self.cost_fn is not None:
            return self.cost_fn(theta)
        return self._unpack(self.fun(theta), "at a perturbed point")[0]

    def _unpack(self, out: Any, where: str) -> tuple[Any, Any]:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TargetError(f"the target must return a (cost, grad) pair; {where} it returned {describe(out)}")
        return out[0], out[1]

    def evaluate(self) -> tuple[Any, NDArray]:
        """Cost and analytic gradient at ``x0`` as ``(scalar, float array of shape (P,))``.

        Raises NonFiniteError for a non-finite cost and TargetError for a gradient of the wrong size or shape.
        """
        self.n_calls += 1
        with np.errstate(all="ignore"):
            cost, grad = self._unpack(self.fun(np.array(self.x0, copy=True)), "at x0")
        cost = as_scalar_cost(cost, "at x0")
        if not np.isfinite(cost):
            raise NonFiniteError("cost at x0", cost)
        g = np.asarray(grad)
        P = self.layout.size
        ok_shape = g.shape in ((P,), (P, 1), (1, P))
        if not ok_shape:
            raise TargetError(f"the gradient returned by the target has shape {g.shape}; expected ({P},) "
                              f"to match x0 (a ({P}, 1) column is accepted too)")
        if np.iscomplexobj(g) or not np.issubdtype(g.dtype, np.number):
            raise TargetError(f"the gradient returned by the target must be real; got {describe(g)}")
        return cost, g.reshape(P).astype(np.float64 if g.dtype not in (np.float32, np.float64) else g.dtype)


def function_target(fun: Callable[[NDArray], Any], x0: Any, blocks: Mapping[str, Any] | None = None) -> Target:
    """Target for a user's ``fun(theta) -> (cost, grad)`` at ``x0``, with optional ``blocks`` (name -> shape,
    laid out in order, each in C order; their sizes must sum to ``x0.size``)."""
    if not callable(fun):
        raise InputError("fun", "a callable theta -> (cost, grad)", describe(fun))
    x = _as_point(x0)
    if blocks is None:
        layout = ParameterLayout.single(x.size, "x")
    else:
        layout = ParameterLayout.from_shapes(blocks)
        if layout.size != x.size:
            sizes = ", ".join(f"{b.name}={b.size}" for b in layout.blocks)
            raise InputError("blocks", f"block sizes summing to x0.size = {x.size}", f"{layout.size} ({sizes})")
    return Target(fun, x, layout, kind="function")


def network_target(net: Network, X: Any, y: Any, lambda_: float = 0.0) -> Target:
    """Target for a Network's regularized cost on ``(X, y)``; evaluated on a clone, never on ``net``."""
    if not isinstance(net, Network):
        raise InputError("net", "a layerkit.Network", describe(net))
    obj = net.objective(X, y, lambda_)
    x0 = np.array(net.params, copy=True)
    return Target(obj, x0, net.layout, kind="network", cost_fn=obj.cost,
                  context={"lambda_": obj.lambda_, "m": obj.m}, network=net, objective=obj,
                  scale_fn=lambda: input_scales(net, obj.activations(x0)))


def input_scales(net: Network, acts: list[NDArray]) -> NDArray:
    """``s_j = max(1, max_i |F_ic|)`` for entry ``(r, c)`` of each Dense-like block (``param_inputs``), 1 for
    other parameters; ``acts`` are the network's activations, input first.  Shape (P,)."""
    s = np.ones(net.size)
    views = net.layout.views(s)
    for i, p, block in net._names:
        layer = net.layers[i]
        if provides(layer, "param_inputs") and views[block].ndim == 2 and i < len(acts):
            views[block][...] = np.maximum(1.0, layer.param_inputs(p, acts[i]).abs_max())[None, :]
    return s


class _LayerFunction:
    """``theta = [x.ravel(), params...] -> (sum(forward(x) * r), grad)`` on private buffers."""

    def __init__(self, layer: Layer, x: NDArray, r: NDArray, layout: ParameterLayout) -> None:
        self.layer, self.x_shape, self.r, self.layout = layer, x.shape, r, layout
        self.nx = int(np.prod(x.shape))
        self._buffers: dict[np.dtype, tuple[NDArray, NDArray]] = {}

    def _bind(self, dtype: np.dtype) -> tuple[NDArray, NDArray]:
        bufs = self._buffers.get(dtype)
        if bufs is None:
            n = self.layout.size - self.nx
            bufs = self._buffers[dtype] = (np.zeros(n, dtype), np.zeros(n, dtype))
        sub = ParameterLayout.from_shapes(dict(self.layer.param_shapes))
        if sub.size:
            self.layer.bind(sub.views(bufs[0]), sub.views(bufs[1]))
        return bufs

    def __call__(self, theta: NDArray) -> tuple[Any, NDArray]:
        theta = np.asarray(theta)
        p, g = self._bind(theta.dtype)
        p[...] = theta[self.nx:]
        g[...] = 0  # a gradient the layer never writes shows up as zero
        x = theta[: self.nx].reshape(self.x_shape)
        y = self.layer.forward(x)
        if y.shape != self.r.shape:
            raise TargetError(f"{self.layer!r}.forward returned shape {y.shape}; expected {self.r.shape}")
        r = self.r.astype(y.dtype)
        cost = np.sum(y * r)
        dx = np.asarray(self.layer.backward(r))
        if dx.shape != self.x_shape:
            raise TargetError(f"{self.layer!r}.backward returned shape {dx.shape}; expected {self.x_shape} (x's)")
        return cost, np.concatenate([dx.ravel(), g])


def layer_target(layer: Layer, x: Any, seed: int = 0) -> tuple[Target, Callable[[], None]]:
    """Target for one layer through ``sum(forward(x) * r)`` with a seeded random ``r``.

    Blocks: ``"x"`` (the input) then the layer's parameters by name.  Returns the target and a ``restore``
    callable that re-binds the layer to its original arrays (call it when done).
    """
    if not isinstance(layer, Layer):
        raise InputError("layer", "a Layer (param_shapes, params, grads, bind, forward, backward)", describe(layer))
    xa = np.asarray(x)
    if xa.ndim != 2 or xa.size == 0:
        raise InputError("x", "a non-empty 2-D input batch (m, n_in)", describe(x))
    xa = _as_point(xa.ravel()).reshape(xa.shape)
    dtype = xa.dtype
    shapes = {"x": xa.shape, **{k: tuple(v) for k, v in layer.param_shapes.items()}}
    if "x" in layer.param_shapes:
        raise InputError("layer.param_shapes", "no parameter named 'x' (reserved for the input)", "'x'")
    layout = ParameterLayout.from_shapes(shapes)
    orig_params, orig_grads = dict(layer.params), dict(getattr(layer, "grads", {}) or {})
    missing = [k for k in layer.param_shapes if k not in orig_params]
    if missing:
        raise InputError("layer", f"bound parameters {list(layer.param_shapes)}", f"none bound for {missing}")
    theta0 = np.concatenate([xa.ravel()] + [np.asarray(orig_params[k], dtype=dtype).ravel()
                                             for k in layer.param_shapes])

    def restore() -> None:
        if layer.param_shapes:
            layer.bind(orig_params, orig_grads)

    with np.errstate(all="ignore"):
        try:
            y = layer.forward(xa)
        finally:
            restore()
    r = np.random.default_rng(seed).standard_normal(np.shape(y)).astype(dtype)
    fun = _LayerFunction(layer, xa, r, layout)
    return Target(fun, theta0, layout, kind="layer", layer=layer), restore
