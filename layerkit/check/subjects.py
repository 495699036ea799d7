"""Subjects: what a check evaluates -- a plain function, a Network or a single layer -- as the caller's own.

A subject offers the point ``x0`` (a private copy), its block layout, ``value(theta)`` (the cost) and
``evaluate(fresh)`` (cost and gradient at ``x0``), and a ``session()`` inside which a check runs.  A network
or a layer is evaluated *in place*: its own buffer takes the parameter values, its own class and layer
objects compute, ties and bindings stay what they are.  The session restores everything on every exit path
(see :meth:`~layerkit.Network.preserved`), so a check leaves the caller's parameters, gradients, bindings and
attributes as it found them, even when the code under check raises or the user interrupts it.
A function is handed a fresh copy of the point at every call, so the caller's ``x0`` is never touched.

``evaluate(fresh=True)`` starts from zeroed gradient buffers, ``evaluate(fresh=False)`` reuses whatever the
previous evaluation left there: a check evaluates both and compares, which exposes gradients that
accumulate (``g += ...``) or depend on the call history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager

import numpy as np
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError, NonFiniteError, TargetError
from ..fast.changes import ColumnMaxima
from ..fast.rules import rule_for
from ..nn.buffer import bind_fresh
from ..nn.layers import Layer
from ..nn.layout import Order, ParameterLayout, check_order
from ..nn.network import Network, Objective
from ..numerics import least_precise
from ..snapshot import preserving
from .probes import as_scalar_cost


def _as_point(x0: Any) -> NDArray:
    x = np.asarray(x0)
    if x.ndim != 1 or x.size == 0:
        raise InputError("x0", "a non-empty 1-D parameter vector (or a column (P, 1))", describe(x0))
    if np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number):
        raise InputError("x0", "a real float32 or float64 vector", describe(x))
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("x0", "finite values", f"{x[i]} at position {i}")
    return np.array(x, copy=True)


def _gradient(grad: Any, P: int, where: str) -> NDArray:
    g = np.asarray(grad)
    if g.shape not in ((P,), (P, 1), (1, P)):
        raise TargetError(f"the gradient returned by the target {where} has shape {g.shape}; expected ({P},) "
                          f"to match x0 (a ({P}, 1) column is accepted too)")
    if np.iscomplexobj(g) or not np.issubdtype(g.dtype, np.number):
        raise TargetError(f"the gradient returned by the target must be real; got {describe(g)}")
    return g.reshape(P).astype(np.float64 if g.dtype not in (np.float32, np.float64) else g.dtype)


class Subject:
    """Base of the three subjects (module docstring).

    Attributes
    ----------
    kind : str
        ``"function"``, ``"network"`` or ``"layer"``.
    x0 : NDArray, shape (P,)
        A private copy of the point.
    layout : ParameterLayout
    lambda_, m : float or None, int or None
        The regularization and the number of examples, when known (the doctor names factors with them).
    """

    kind = "subject"
    #: What a subject knows of itself (layerkit's own layers in a plain Network know more): its gradient is a
    #: function of the parameters alone, its cost is analytic in them, the engine's rules are layerkit's own.
    @property
    def known_stateless(self) -> bool:
        return False

    @property
    def known_analytic(self) -> bool:
        return False

    @property
    def known_rules(self) -> bool:
        return False

    @property
    def precision(self) -> np.dtype:
        """The dtype the subject's arithmetic rounds like, as far as it can be seen: the point's own (a
        network says more, from its activations)."""
        return least_precise(self.x0.dtype)

    def __init__(self, x0: NDArray, layout: ParameterLayout, lambda_: float | None = None,
                 m: int | None = None) -> None:
        self.x0, self.layout, self.lambda_, self.m = x0, layout, lambda_, m
        self._axis_scale: NDArray | None = None
        #: Column maxima of the Dense-like inputs, shared by the step scales and the engine's tables.
        self.maxima = ColumnMaxima()

    def session(self) -> ContextManager[Any]:
        return nullcontext()

    def value(self, theta: NDArray) -> Any:
        """The cost at ``theta`` (a scalar; complex for a complex ``theta``)."""
        raise NotImplementedError

    def evaluate(self, fresh: bool = True) -> tuple[Any, NDArray]:
        """Cost and analytic gradient at ``x0`` as ``(scalar, float array of shape (P,))``.

        Raises NonFiniteError for a non-finite cost and TargetError for a gradient of the wrong size or shape.
        """
        raise NotImplementedError

    def axis_scale(self) -> NDArray | None:
        """Per-axis step divisors ``s_j >= 1`` (None: all 1); see :mod:`layerkit.check.methods`."""
        return None

    @property
    def kinked(self) -> list[tuple[int, tuple[float, ...]]]:
        """``(position, kinks)`` of the layers that declare points where they are not differentiable."""
        return []

    def kink_sides(self, theta: NDArray) -> NDArray:
        """On which side of each kink every kinked unit's input lies at ``theta`` (see :mod:`layerkit.check.kinks`)."""
        raise NotImplementedError

    def _checked_cost(self, cost: Any, where: str) -> Any:
        cost = as_scalar_cost(cost, where)
        if not np.isfinite(cost):
            raise NonFiniteError("cost at x0", cost)
        return cost


class FunctionSubject(Subject):
    """A hand-written ``fun(theta) -> (cost, grad)``."""

    kind = "function"

    def __init__(self, fun: Callable[[NDArray], Any], x0: NDArray, layout: ParameterLayout,
                 lambda_: float | None = None, m: int | None = None) -> None:
        super().__init__(x0, layout, lambda_, m)
        self.fun = fun

    def _unpack(self, out: Any, where: str) -> tuple[Any, Any]:
        """``(cost, grad)``; the gradient may also come one array per block, as ``(cost, g1, g2, ...)`` or
        ``(cost, [g1, g2, ...])`` (each of its block's shape, or its size), joined in the layout's order."""
        blocks = self.layout.blocks
        n = len(blocks)
        if isinstance(out, (tuple, list)) and n > 1 and len(out) == n + 1:
            return out[0], self._join(out[1:], where)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            expected = "a (cost, grad) pair" + (f" or (cost, grad_{blocks[0].name}, ..., grad_{blocks[-1].name})"
                                                if n > 1 else "")
            raise TargetError(f"the target must return {expected}; {where} it returned {describe(out)}")
        grad = out[1]
        if isinstance(grad, (tuple, list)) and len(grad) == n and (n > 1 or np.ndim(grad[0]) >= 1):
            return out[0], self._join(grad, where)
        if n == 1 and np.ndim(grad) >= 2 and np.shape(grad) == tuple(blocks[0].shape):
            return out[0], self._join([grad], where)  # a single block's gradient in the block's own shape
        return out[0], grad

    def _join(self, parts: Any, where: str) -> NDArray:
        pieces = []
        for b, g in zip(self.layout.blocks, parts):
            g = np.asarray(g)
            flat = ((b.size,), (b.size, 1), (1, b.size))
            if g.shape != tuple(b.shape) and g.shape not in flat:
                raise TargetError(f"the gradient of block {b.name} returned by the target {where} has shape "
                                  f"{g.shape}; expected {tuple(b.shape)} (or {b.size} entries in a vector; a "
                                  "transposed block is not taken for the block)")
            pieces.append(g.ravel(order=b.order) if g.shape == tuple(b.shape) else g.reshape(-1))
        return np.concatenate(pieces)

    def value(self, theta: NDArray) -> Any:
        out = self.fun(np.array(theta, copy=True))
        if isinstance(out, (tuple, list)) and len(out) >= 2:
            return out[0]
        return self._unpack(out, "at a perturbed point")[0]

    def evaluate(self, fresh: bool = True) -> tuple[Any, NDArray]:
        with np.errstate(all="ignore"):
            cost, grad = self._unpack(self.fun(np.array(self.x0, copy=True)), "at x0")
        return self._checked_cost(cost, "at x0"), _gradient(grad, self.layout.size, "at x0")


class NetworkSubject(Subject):
    """A :class:`~layerkit.Network`'s regularized cost on ``(X, y)``, evaluated on the network itself."""

    kind = "network"

    def __init__(self, net: Network, X: Any, y: Any, lambda_: float = 0.0) -> None:
        if not isinstance(net, Network):
            raise InputError("net", "a layerkit.Network", describe(net))
        self.network = net
        self.objective = Objective(net, X, y, lambda_)
        super().__init__(np.array(net.params, copy=True), net.layout, self.objective.lambda_, self.objective.m)
        self._depth = 0
        self._acts: list[NDArray] | None = None
        #: Evaluations of the network itself (its cost, with or without the gradient) so far.
        self.n_target_evals = 0

    @contextmanager
    def _session(self) -> Iterator[NetworkSubject]:
        with self.network.preserved(state=True):
            self._depth += 1
            try:
                self.network.params[...] = self.x0
                yield self
            finally:
                self._depth -= 1

    def session(self) -> ContextManager[Any]:
        return self._session()

    def _in_place(self, theta: NDArray, with_grad: bool, record: list[NDArray] | None = None) -> Any:
        """Evaluate at ``theta`` in the network's buffer, then put ``x0`` back (inside a session)."""
        if self._depth == 0:  # called outside a check's session: guard this one call
            with self._session():
                return self._in_place(theta, with_grad, record)
        self.n_target_evals += 1
        try:
            return self.objective.evaluate_in_place(theta, with_grad, record)
        finally:
            if with_grad:
                self._last_grad = self.network.grads.copy()
            self.network.use_dtype(self.x0.dtype)
            self.network.params[...] = self.x0

    def value(self, theta: NDArray) -> Any:
        return self._in_place(theta, with_grad=False)

    def evaluate(self, fresh: bool = True) -> tuple[Any, NDArray]:
        if self._depth == 0:
            with self._session():
                return self.evaluate(fresh)
        if fresh:
            self.network.grads[...] = 0
        record: list[NDArray] = []
        with np.errstate(all="ignore"):
            cost = self._in_place(self.x0, True, record)
        if fresh and record:
            self._acts = record
        return self._checked_cost(cost, "at x0"), _gradient(self._last_grad, self.layout.size, "at x0")

    @property
    def precision(self) -> np.dtype:
        """The least precise of the parameters' dtype and every activation's at ``x0`` (recorded by the first
        :meth:`evaluate`): a layer computing in float32 inside a float64 network rounds like float32."""
        return least_precise(self.x0.dtype, *(self._acts or ()))

    @property
    def kinked(self) -> list[tuple[int, tuple[float, ...]]]:
        """``(position, kinks)`` of the layers the loss reads through (:attr:`~layerkit.Network.body`) that
        declare ``kinks``: points where they are not differentiable (ReLU: ``(0.0,)``)."""
        out: list[tuple[int, tuple[float, ...]]] = []
        for k, layer in enumerate(self.network.body):
            if callable(getattr(layer, "pieces", None)):  # a layer that says which smooth piece it is on
                out.append((k, ()))
                continue
            kinks = getattr(layer, "kinks", ()) or ()
            try:
                values = tuple(float(v) for v in kinks)
            except (TypeError, ValueError):
                continue
            if values:
                out.append((k, values))
        return out

    def kink_sides(self, theta: NDArray) -> NDArray:
        """On which side of each of its kinks every kinked layer's input lies at ``theta``: the signs of
        ``input - kink``, concatenated (int8).  One evaluation of the cost (counted), none at ``x0`` itself
        (passed as :attr:`x0`), whose activations the first evaluation recorded."""
        if self._depth == 0:
            with self._session():
                return self.kink_sides(theta)
        net = self.network
        if theta is self.x0:  # at the point: its activations, as the first evaluation recorded them
            record = self.activations()
        else:
            with np.errstate(all="ignore"):
                record = net.activations(self.objective.inputs(net.params.dtype),
                                         np.asarray(theta, dtype=self.x0.dtype))
        body = self.network.body
        parts = [np.sign(np.asarray(record[k], dtype=np.float64) - v).astype(np.int64).ravel()
                 for k, kinks in self.kinked for v in kinks if k < len(record)]
        parts += [np.asarray(body[k].pieces(record[k]), dtype=np.int64).ravel()  # type: ignore[attr-defined]
                  for k, kinks in self.kinked if not kinks and k < len(record)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _builtin(self, *members: str, smooth: bool = False) -> bool:
        """Whether the network is a plain Network (no evaluation member redefined) whose layers all take
        ``members`` (and the math an elementwise layer's forward and backward call) from layerkit's own layer
        classes, none of them set on the instance; with ``smooth``, only from the smooth ones."""
        from ..nn.network import evaluation_overrides

        if evaluation_overrides(self.network):
            return False
        classes = _builtin_classes(smooth)
        return all(_own_layer(layer, members, classes) for layer in self.network.layers)

    @property
    def known_analytic(self) -> bool:
        """Whether the cost is known to be analytic in the parameters: every layer's forward is one of
        layerkit's smooth layers' (Dense, Sigmoid, Tanh, Identity) and the network's cost is Network's."""
        return self._builtin("forward", smooth=True)

    @property
    def known_rules(self) -> bool:
        """Whether every fast-path rule the engine may use is layerkit's own (exact identities, no
        cancellation), so that the engine's rounding bound needs no measurement."""
        return self._builtin("forward") and all(rule_for(layer).known for layer in self.network.layers)

    @property
    def own_from(self) -> int:
        """The first position from which on every layer of the network is one of layerkit's own with its own
        rule, as :attr:`known_rules` asks of all of them (``len(layers)`` when the last is not; 0 for every
        layer, and ``len(layers)`` for a network whose evaluation is redefined).  A block of a layer at or
        after it changes the cost through layerkit's math alone."""
        from ..nn.network import evaluation_overrides

        layers = list(self.network.layers)
        if evaluation_overrides(self.network):
            return len(layers)
        k = len(layers)
        while k and _own_layer(layers[k - 1], ("forward",), _builtin_classes()) and rule_for(layers[k - 1]).known:
            k -= 1
        return k

    @property
    def known_stateless(self) -> bool:
        """Whether the gradient is known to be a function of the parameters alone: every layer's forward,
        backward and backward_params are layerkit's own and the network's cost is Network's."""
        from ..nn.layers import Dense

        return self._builtin("forward", "backward") and all(
            "backward_params" not in vars(layer)
            and getattr(type(layer), "backward_params", Dense.backward_params) is Dense.backward_params
            for layer in self.network.layers)

    def activations(self) -> list[NDArray]:
        """The input and every layer's output up to the logits at ``x0`` (inside a session), as the first
        evaluation recorded them when it could."""
        if self._acts is None:
            self._acts = self.network.activations(self.objective.inputs(self.network.params.dtype))
        return self._acts

    def axis_scale(self) -> NDArray | None:
        """For entry ``(r, c)`` of a Dense-like block, ``s = max(1, max_i |F_ic|)`` (``F = [1, x]``, the layer's
        ``param_inputs``): the weight moves pre-activation ``r`` by ``t F[:, c]``, so the cost varies along it
        on a length scale ``1 / s``.  1 for other parameters."""
        if self._axis_scale is None:
            with self.session():
                acts = self.activations()
                s = np.ones(self.network.size)
                for b in self.network.bindings:
                    block = self.network.layout[b.block]
                    layer = self.network.layers[b.index]
                    rule = rule_for(layer)
                    if rule.has("param_inputs") and len(block.shape) == 2 and b.index < len(acts):
                        F = rule.param_inputs(b.param, acts[b.index])
                        s[block.slice] = np.broadcast_to(np.maximum(1.0, self.maxima.of(F))[None, :],
                                                         block.shape).ravel()
            self._axis_scale = s
        return self._axis_scale


class _LayerSession:
    """Evaluation of ``sum(layer.forward(x) * r)`` in the layer's own arrays (private ones for another dtype)."""

    def __init__(self, layer: Layer, x_shape: tuple[int, ...], r: NDArray, layout: ParameterLayout) -> None:
        self.layer, self.x_shape, self.r, self.layout = layer, x_shape, r, layout
        self.nx = int(np.prod(x_shape))
        self.names = list(layer.param_shapes)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickled (a worker's copy): the layer is bound to private copies before anything is written into
        # them, since a transport may hand several copies the same memory (Dask's in-process workers do)
        self.__dict__.update(state)
        if self.names:
            sub = ParameterLayout.from_shapes(dict(self.layer.param_shapes))
            p, g = np.zeros(sub.size), np.zeros(sub.size)
            views, gviews = sub.views(p), sub.views(g)
            for n in self.names:
                views[n][...] = self.layer.params[n]
            self.layer.bind(views, gviews)

    def bind_for(self, dtype: np.dtype) -> None:
        """Make the layer's bound arrays writable arrays of ``dtype``: its own when they are, else private
        copies bound in their place (the session restores the original bindings)."""
        arrays = [self.layer.params.get(n) for n in self.names]
        grads = [(self.layer.grads or {}).get(n) for n in self.names]
        own = all(isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.writeable for a in arrays + grads)
        if own:
            return
        sub = ParameterLayout.from_shapes(dict(self.layer.param_shapes))
        p, g = np.zeros(sub.size, dtype), np.zeros(sub.size, dtype)
        self.layer.bind(sub.views(p), sub.views(g))

    def write(self, theta: NDArray) -> NDArray:
        self.bind_for(theta.dtype)
        offset = self.nx
        for n in self.names:
            a = self.layer.params[n]
            a[...] = theta[offset: offset + a.size].reshape(a.shape)
            offset += a.size
        # a copy: a forward that works in place on its input (a leaky ReLU with inplace=True) must not write
        # into the point being evaluated
        return np.array(theta[: self.nx].reshape(self.x_shape), copy=True)

    def forward(self, theta: NDArray) -> tuple[Any, Any]:
        x = self.write(np.asarray(theta))
        y = self.layer.forward(x)
        if np.shape(y) != self.r.shape:
            raise TargetError(f"{self.layer!r}.forward returned shape {np.shape(y)}; expected {self.r.shape}")
        r = self.r.astype(np.asarray(y).dtype)
        return np.sum(y * r), r

    def gradient(self, r: NDArray) -> NDArray:
        dx = np.asarray(self.layer.backward(r))
        if dx.shape != self.x_shape:
            raise TargetError(f"{self.layer!r}.backward returned shape {dx.shape}; expected {self.x_shape} (x's)")
        grads = [np.asarray(self.layer.grads[n]).ravel() for n in self.names]
        return np.concatenate([dx.ravel()] + grads)


def _parameter_values(layer: Layer, seed: int) -> dict[str, NDArray]:
    """The values of a layer's parameters: its bound arrays, or for a layer not bound yet (fresh from its
    constructor) a seeded start -- its own ``init_params`` when it has one, else standard normal values
    times 0.5 (not zeros, where many wrong gradients vanish) -- drawn into arrays bound for the moment and
    unbound again."""
    missing = [k for k in layer.param_shapes if k not in (layer.params or {})]
    if not missing:
        return {k: np.array(layer.params[k], copy=True) for k in layer.param_shapes}
    if len(missing) != len(layer.param_shapes):
        raise InputError("layer", f"all of its parameters {list(layer.param_shapes)} bound, or none",
                         f"none bound for {missing}")
    with preserving([layer], [], state=True):
        views = bind_fresh(layer, np.random.default_rng([seed, 0x626E64]))
        return {k: np.array(v, copy=True) for k, v in views.items()}


class LayerSubject(Subject):
    """One layer through ``sum(forward(x) * r)`` with a seeded random upstream gradient ``r``.

    Blocks: ``"x"`` (the input) then the layer's parameters by name.  The layer computes with its own bound
    arrays, which take the parameter values of each evaluation; the session restores their values, the
    layer's bindings and its attributes.
    """

    kind = "layer"

    def __init__(self, layer: Layer, x: Any, seed: int = 0) -> None:
        if not isinstance(layer, Layer):
            raise InputError("layer", "a Layer (param_shapes, params, grads, bind, forward, backward)",
                             describe(layer))
        xa = np.asarray(x)
        if xa.ndim < 2 or xa.size == 0:
            raise InputError("x", "a non-empty input batch (m, n_in) or (m, C, H, W)", describe(x))
        xa = _as_point(xa.ravel()).reshape(xa.shape)
        if "x" in layer.param_shapes:
            raise InputError("layer.param_shapes", "no parameter named 'x' (reserved for the input)", "'x'")
        shapes = {"x": xa.shape, **{k: tuple(v) for k, v in layer.param_shapes.items()}}
        layout = ParameterLayout.from_shapes(shapes)
        values = _parameter_values(layer, seed)
        theta0 = np.concatenate([xa.ravel()] + [np.asarray(values[k], dtype=xa.dtype).ravel()
                                                 for k in layer.param_shapes])
        super().__init__(theta0, layout)
        self.layer = layer
        self._eval = _LayerSession(layer, xa.shape, np.zeros(0), layout)
        with self.session(), np.errstate(all="ignore"):
            y = layer.forward(self._eval.write(theta0))
        # a stream of its own (not default_rng(seed)'s, which a caller may have drawn x from: with r = x, a
        # square layer's dW = r^T x is symmetric and a transposed weight gradient would go unseen)
        self._eval.r = np.random.default_rng([seed, 0x6C61]).standard_normal(np.shape(y)).astype(xa.dtype)

    @property
    def kinked(self) -> list[tuple[int, tuple[float, ...]]]:
        """``[(0, kinks)]`` when the layer declares ``kinks`` (points where it is not differentiable), ``[(0, ())]``
        when it says which smooth piece its input is on (``pieces``)."""
        if callable(getattr(self.layer, "pieces", None)):
            return [(0, ())]
        try:
            values = tuple(float(v) for v in (getattr(self.layer, "kinks", ()) or ()))
        except (TypeError, ValueError):
            return []
        return [(0, values)] if values else []

    def kink_sides(self, theta: NDArray) -> NDArray:
        """The signs of ``x - kink`` for the input block of ``theta`` and each kink (an elementwise layer's
        own input is what crosses its kinks)."""
        x = np.asarray(theta[self.layout["x"].slice], dtype=np.float64)
        if callable(getattr(self.layer, "pieces", None)):
            return np.asarray(self.layer.pieces(x.reshape(self._eval.x_shape)),  # type: ignore[attr-defined]
                              dtype=np.int64).ravel()
        return np.concatenate([np.sign(x - v).astype(np.int64) for _, kinks in self.kinked for v in kinks])

    def session(self) -> ContextManager[Any]:
        arrays = [a for a in list((self.layer.params or {}).values()) + list((self.layer.grads or {}).values())
                  if isinstance(a, np.ndarray) and a.flags.writeable]
        return preserving([self.layer], arrays, state=True)

    def value(self, theta: NDArray) -> Any:
        return self._eval.forward(theta)[0]

    def evaluate(self, fresh: bool = True) -> tuple[Any, NDArray]:
        with np.errstate(all="ignore"):
            x = self._eval.write(self.x0)
            if fresh:
                for n in self._eval.names:
                    self.layer.grads[n][...] = 0
            cost, r = self._eval.forward(self.x0)
            del x
            grad = self._eval.gradient(r)
        return self._checked_cost(cost, "at x0"), _gradient(grad, self.layout.size, "at x0")


class _ColumnCall:
    """``fun`` given ``theta`` as the column ``(P, 1)`` it was written for (picklable, for process pools)."""

    def __init__(self, fun: Callable[[NDArray], Any]) -> None:
        self.fun = fun

    def __call__(self, theta: NDArray) -> Any:
        return self.fun(theta.reshape(-1, 1))


def function_subject(fun: Callable[[NDArray], Any], x0: Any, blocks: Mapping[str, Any] | None = None,
                     lambda_: float | None = None, m: int | None = None, order: Order = "C") -> FunctionSubject:
    """Subject for a user's ``fun(theta) -> (cost, grad)`` at ``x0``, with optional ``blocks`` (name -> shape,
    laid out in order, each unrolled in ``order``; their sizes must sum to ``x0.size``).  ``x0`` may be a
    column ``(P, 1)``: the function gets the same shape back."""
    if not callable(fun):
        raise InputError("fun", "a callable theta -> (cost, grad)", describe(fun))
    check_order(order)
    shape = np.shape(x0)
    column = len(shape) == 2 and shape[1] == 1 and shape[0] > 0
    x = _as_point(np.asarray(x0).reshape(-1) if column else x0)
    if column:
        fun = _ColumnCall(fun)

    if blocks is None:
        layout = ParameterLayout.single(x.size, "x")
    else:
        layout = ParameterLayout.from_shapes(blocks, order)
        if layout.size != x.size:
            sizes = ", ".join(f"{b.name}={b.size}" for b in layout.blocks)
            raise InputError("blocks", f"block sizes summing to x0.size = {x.size}", f"{layout.size} ({sizes})")
    return FunctionSubject(fun, x, layout, lambda_, m)


def problem_subject(problem: Any) -> Subject:
    """The subject of a :class:`~layerkit.Problem` (or a subject itself): its network on its data, or its
    function at its point with its blocks, hints and order -- everything the problem says."""
    if isinstance(problem, Subject):
        return problem
    if problem.kind == "network":
        return NetworkSubject(problem.network, problem.X, problem.y, problem.lambda_ or 0.0)
    return function_subject(problem.fun, problem.x0, problem.blocks, problem.lambda_, problem.m, problem.order)


def _builtin_classes(smooth: bool = False) -> tuple[type, ...]:
    """layerkit's layer classes whose math the engine's own rules describe (the smooth ones only, with
    ``smooth``)."""
    from ..nn.elementwise import Identity, LeakyReLU, ReLU, Sigmoid, Tanh
    from ..nn.layers import Dense

    return (Dense, Sigmoid, Tanh, Identity) + (() if smooth else (ReLU, LeakyReLU))


def _own_layer(layer: Any, members: tuple[str, ...], classes: tuple[type, ...]) -> bool:
    """Whether ``layer`` takes ``members`` (and the math an elementwise layer's forward and backward call)
    from one of ``classes``, none of them set on the instance."""
    names = members + ("fn", "derivative", "change", "taylor")
    if any(name in vars(layer) for name in names):
        return False
    return any(all(getattr(type(layer), name, None) is getattr(base, name, None) for name in names)
               for base in classes)
