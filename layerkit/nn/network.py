"""The :class:`Network`: layers over one flat parameter vector, with the regularized cross-entropy.

Cost, for ``m`` examples and ``K`` outputs ``h = network(X)``, targets ``Y`` (one-hot or probabilities)::

    J = (1/m) sum_i sum_k [ -Y_ik log h_ik - (1 - Y_ik) log(1 - h_ik) ]  +  lambda/(2m) sum W^2

where ``W`` runs over the penalized entries of every layer (for ``Dense``: all of ``Theta`` except the bias
column 0).  Its gradient is the backprop average over ``m`` plus ``(lambda/m) W``.  When the last layer is a
:class:`~layerkit.Sigmoid`, the data term is computed from the logits in log-sigmoid form
(:func:`~layerkit.losses.cross_entropy_from_logits`), finite even when ``h`` saturates to 0 or 1.

The flat layout is defined in :mod:`layerkit.nn.layout`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.optimize
from attrs import frozen
from numpy.typing import NDArray

from .._validate import describe, finite_matrix, float_dtype, nonnegative_float, positive_int
from .datasets import debug_matrix
from ..errors import InputError
from .layers import Dense, Layer, Sigmoid, _defined_in, epsilon_init
from .layout import Block, Order, ParameterLayout
from .losses import cross_entropy_from_logits, cross_entropy_from_probabilities

CostAndGradient = Callable[[NDArray], tuple[Any, NDArray]]


@frozen
class FitResult:
    """Outcome of :meth:`Network.fit`: final cost, L-BFGS iterations and cost evaluations, and status."""

    cost: float
    n_iter: int
    n_evals: int
    success: bool
    message: str


def _block_names(layers: Sequence[Layer]) -> list[tuple[int, str, str]]:
    """``(layer index, parameter name, block name)``; block names number the layers with parameters from 1."""
    out, k = [], 0
    for i, layer in enumerate(layers):
        if layer.param_shapes:
            k += 1
            out += [(i, p, f"{p}{k}") for p in layer.param_shapes]
    return out


def _params_only(layer: Layer) -> Callable[[NDArray], None] | None:
    """The layer's ``backward_params`` when it is at least as specialized as its ``backward``: a subclass that
    overrides only ``backward`` must see its own override used, even in the first layer."""
    if not hasattr(layer, "backward_params"):
        return None
    cls = type(layer)
    if _defined_in(cls, "backward_params") > _defined_in(cls, "backward"):
        return None
    return layer.backward_params


class Network:
    """A feed-forward stack of layers sharing one flat parameter vector.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order.  Each layer's current parameter values are copied into the network's buffer and
        the layer is re-bound to views of it.
    dtype : float32 or float64
        dtype of ``params``, ``grads`` and every computation.

    Attributes
    ----------
    layers : list of Layer
    layout : ParameterLayout
        Blocks ``Theta1, Theta2, ...`` (parameter name + number of the layer among layers with parameters).
    """

    def __init__(self, layers: Sequence[Layer], *, dtype: Any = np.float64) -> None:
        layers = list(layers)
        if not layers:
            raise InputError("layers", "a non-empty sequence of layers", "an empty sequence")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise InputError(f"layers[{i}]", "a Layer (param_shapes, params, bind, forward, backward)",
                                 describe(layer))
        self.layers = layers
        self.dtype = np.dtype(dtype) if np.dtype(dtype).kind == "c" else float_dtype(dtype)
        self._names = _block_names(layers)
        self.layout = ParameterLayout.from_shapes(
            {block: layers[i].param_shapes[p] for i, p, block in self._names})
        self._params = np.zeros(self.layout.size, self.dtype)
        self._grads = np.zeros(self.layout.size, self.dtype)
        views = self.layout.views(self._params)
        for i, p, block in self._names:
            current = layers[i].params.get(p) if layers[i].params else None
            if current is not None:
                views[block][...] = current
        self._bind_layers()
        self._fused_sigmoid = isinstance(layers[-1], Sigmoid)

    def _bind_layers(self) -> None:
        """Bind every layer with parameters to views of this network's ``params`` and ``grads`` buffers."""
        views, gviews = self.layout.views(self._params), self.layout.views(self._grads)
        for i, layer in enumerate(self.layers):
            mine = [(p, block) for j, p, block in self._names if j == i]
            if mine:
                layer.bind({p: views[b] for p, b in mine}, {p: gviews[b] for p, b in mine})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sizes(cls, sizes: Sequence[int], *, dtype: Any = np.float64, seed: int | None = 0,
                   init: Literal["random", "debug"] = "random") -> Network:
        """A ``Dense``/``Sigmoid`` stack from layer sizes, e.g. ``[400, 25, 10]``.

        ``init="random"`` draws uniform weights seeded by ``seed`` (see :meth:`init_random`);
        ``init="debug"`` uses the course's deterministic weights (see :meth:`init_debug`).
        """
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
            raise InputError("sizes", "a sequence of at least two layer sizes, e.g. [400, 25, 10]", describe(sizes))
        sizes = [positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
        layers: list[Layer] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [Dense(n_in, n_out, dtype=float_dtype(dtype)), Sigmoid()]
        net = cls(layers, dtype=dtype)
        if init == "random":
            net.init_random(seed)
        elif init == "debug":
            net.init_debug()
        else:
            raise InputError("init", "'random' or 'debug'", repr(init))
        return net

    def init_random(self, seed: int | None = 0) -> None:
        """Re-initialize every block uniformly in ``[-eps, eps]``, ``eps = sqrt(6) / sqrt(n_in + n_out)``.

        For a block of shape ``(n_out, n_in + 1)`` (a ``Dense`` Theta) that is the classic ``epsilon_init``;
        other shapes use ``n_out = shape[0]`` and ``n_in = size / shape[0]``.
        """
        rng = np.random.default_rng(seed)
        for b in self.layout.blocks:
            rows = b.shape[0] if b.shape else 1
            n_in = max(b.size // max(rows, 1) - 1, 1) if len(b.shape) == 2 else max(b.size // max(rows, 1), 1)
            eps = epsilon_init(n_in, rows)
            self._params[b.slice] = rng.uniform(-eps, eps, b.size)

    def init_debug(self) -> None:
        """The course's deterministic weights: each block is ``sin(1..size) / 10`` in Fortran order.

        See :func:`layerkit.datasets.debug_matrix`; 1-D blocks are filled with ``sin(1..size) / 10``.
        """
        for b in self.layout.blocks:
            shape = b.shape if len(b.shape) == 2 else (b.size, 1)
            self._params[b.slice] = debug_matrix(shape).ravel()

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> NDArray:
        """The flat parameter vector (the buffer itself, C order, 1-D, contiguous).  Assigning copies in."""
        return self._params

    @params.setter
    def params(self, value: NDArray) -> None:
        self.set_params(value)

    @property
    def grads(self) -> NDArray:
        """The flat gradient buffer written by the last :meth:`cost_and_gradient` (same layout as params)."""
        return self._grads

    @property
    def blocks(self) -> tuple[Block, ...]:
        """Ordered parameter blocks: name, shape and slice of the flat vector."""
        return self.layout.blocks

    @property
    def size(self) -> int:
        """Number of parameters ``P``."""
        return self.layout.size

    def penalized_mask(self) -> NDArray:
        """Boolean mask, shape (P,), of the entries the L2 penalty applies to (each layer's ``penalized``)."""
        mask = np.zeros(self.layout.size, dtype=bool)
        views = self.layout.views(mask)
        for i, p, block in self._names:
            pen = getattr(self.layers[i], "penalized", None)
            if pen is not None:
                pen(p, views[block])[...] = True
        return mask

    def get_params(self, order: Order = "C") -> NDArray:
        """A copy of the parameters unrolled block by block in ``order`` (``"F"`` for MATLAB's ``Theta(:)``)."""
        return self.layout.convert(self._params, "C", order)

    def set_params(self, value: NDArray, order: Order = "C") -> None:
        """Copy a flat vector into the buffer; ``order="F"`` reads MATLAB/Octave ``[Theta1(:); Theta2(:)]``.

        Raises :class:`~layerkit.errors.InputError` unless ``value`` is 1-D, of ``size`` entries, of this
        network's dtype and finite.
        """
        vec = self.layout.check_vector(value, "params", dtype=self.dtype)
        self._params[...] = self.layout.convert(vec, order, "C")

    # ------------------------------------------------------------------ data
    @property
    def n_inputs(self) -> int | None:
        """Input width, when the first layer declares it (``n_in``)."""
        return getattr(self.layers[0], "n_in", None)

    @property
    def n_outputs(self) -> int | None:
        """Output width: ``n_out`` of the last layer that declares one."""
        for layer in reversed(self.layers):
            if hasattr(layer, "n_out"):
                return int(layer.n_out)
        return None

    def _check_X(self, X: Any) -> NDArray:
        X = finite_matrix(X, "X", self.n_inputs)
        if X.shape[0] == 0:
            raise InputError("X", "at least one example (row)", describe(X))
        if np.iscomplexobj(X) and self.dtype.kind != "c":
            raise InputError("X", "real values", describe(X))
        return X if X.dtype == self.dtype else X.astype(self.dtype)

    def targets(self, y: Any, m: int) -> NDArray:
        """Labels as an ``(m, K)`` target matrix.

        ``y`` is either 1-D integer class labels in ``0..K-1`` (one-hot encoded here) or an ``(m, K)``
        matrix of one-hot rows or probabilities in [0, 1].
        """
        K = self.n_outputs
        y = np.asarray(y)
        if y.ndim == 1:
            if y.shape[0] != m:
                raise InputError("y", f"{m} labels (one per row of X)", f"{y.shape[0]}")
            if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
                raise InputError("y", "integer class labels", describe(y))
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(np.nan_to_num(y))))[0])
                raise InputError("y", "integer class labels", f"{y[bad]} at position {bad}")
            labels = y.astype(np.int64)
            top = K if K is not None else int(labels.max()) + 1
            bad = np.flatnonzero((labels < 0) | (labels >= top))
            if bad.size:
                raise InputError("y", f"labels in 0..{top - 1} (0-based, {top} classes)",
                                 f"{labels[bad[0]]} at position {bad[0]} ({bad.size} out of range)")
            Y = np.zeros((m, top), dtype=self.dtype.type(0).real.dtype)
            Y[np.arange(m), labels] = 1
            return Y
        if y.ndim == 2:
            if y.shape[0] != m or (K is not None and y.shape[1] != K):
                raise InputError("y", f"a target matrix of shape ({m}, {K})", describe(y))
            yf = y.astype(np.float64)
            if not np.all(np.isfinite(yf)) or yf.min() < 0 or yf.max() > 1:
                raise InputError("y", "finite target values in [0, 1]", f"values in [{np.nanmin(yf)}, {np.nanmax(yf)}]")
            return y.astype(self.dtype.type(0).real.dtype)
        raise InputError("y", "1-D class labels or an (m, K) target matrix", describe(y))

    # ------------------------------------------------------------------ evaluation
    def _run(self, X: NDArray, record: list[NDArray] | None = None) -> NDArray:
        """Forward through every layer but a final Sigmoid: the logits (or outputs, if not fused).

        With ``record``, the input and every layer's output are appended to it.
        """
        a = X
        if record is not None:
            record.append(a)
        for layer in (self.layers[:-1] if self._fused_sigmoid else self.layers):
            a = layer.forward(a)
            if record is not None:
                record.append(a)
        return a

    def _penalty(self, lambda_: float, m: int, with_grad: bool) -> Any:
        total = 0.0
        if lambda_ == 0:
            return total
        views = self.layout.views(self._params)
        gviews = self.layout.views(self._grads)
        for i, p, block in self._names:
            pen = getattr(self.layers[i], "penalized", None)
            if pen is None:
                continue
            W = pen(p, views[block])
            total = total + np.sum(W * W) * (lambda_ / (2 * m))
            if with_grad:
                pen(p, gviews[block])[...] += (lambda_ / m) * W
        return total

    def _evaluate(self, X: Any, y: Any, lambda_: float, with_grad: bool) -> Any:
        lambda_ = nonnegative_float(lambda_, "lambda_")
        X = self._check_X(X)
        return self._cost(X, self.targets(y, X.shape[0]), lambda_, with_grad)

    def _cost(self, X: NDArray, Y: NDArray, lambda_: float, with_grad: bool,
              record: list[NDArray] | None = None) -> Any:
        """Cost (and gradient into ``grads``) on validated ``X`` and target matrix ``Y``; ``record`` collects
        the activations (see :meth:`_run`)."""
        m = X.shape[0]
        out = self._run(X, record)
        if out.ndim != 2 or out.shape[0] != m or out.shape[1] != Y.shape[1]:
            raise InputError("y", f"targets matching the network output of shape {out.shape}", describe(Y))
        loss = cross_entropy_from_logits if self._fused_sigmoid else cross_entropy_from_probabilities
        total, dout = loss(out, Y)
        cost = total / m
        if with_grad:
            d = dout / m
            layers = self.layers[:-1] if self._fused_sigmoid else self.layers
            for k in range(len(layers) - 1, -1, -1):
                first_only = _params_only(layers[k]) if k == 0 else None
                if first_only is not None:  # the input gradient of the first layer is never used
                    first_only(d)
                else:
                    d = layers[k].backward(d)
        cost = cost + self._penalty(lambda_, m, with_grad)
        return cost.item() if hasattr(cost, "item") else cost

    def cost(self, X: Any, y: Any, lambda_: float = 0.0) -> float:
        """Regularized cross-entropy ``J`` at the current parameters (see the module docstring).

        X : (m, n_inputs) finite array; y : (m,) labels in 0..K-1 or (m, K) targets; lambda_ >= 0.
        """
        return self._evaluate(X, y, lambda_, with_grad=False)

    def cost_and_gradient(self, X: Any, y: Any, lambda_: float = 0.0) -> tuple[float, NDArray]:
        """``(J, dJ/dparams)``: the gradient is written into :attr:`grads` and returned as a copy (P,)."""
        cost = self._evaluate(X, y, lambda_, with_grad=True)
        return cost, self._grads.copy()

    def clone(self, dtype: Any = None) -> Network:
        """A network with copies of the layers, its own buffers (of ``dtype``, default this one's) and
        the same parameter values.  ``dtype`` may be complex, for complex-step evaluation."""
        dt = self.dtype if dtype is None else np.dtype(dtype)
        layers = [copy.copy(layer) for layer in self.layers]
        twin = Network.__new__(Network)
        twin.layers = layers
        twin.dtype = dt
        twin._names = self._names
        twin.layout = self.layout
        twin._params = self._params.astype(dt)
        twin._grads = np.zeros(self.layout.size, dt)
        twin._bind_layers()
        twin._fused_sigmoid = self._fused_sigmoid
        return twin

    def objective(self, X: Any, y: Any, lambda_: float = 0.0) -> Objective:
        """A function ``theta -> (cost, grad)`` for optimizers and checkers; see :class:`Objective`."""
        return Objective(self, X, y, lambda_)

    def predict_proba(self, X: Any) -> NDArray:
        """Network outputs ``h``, shape ``(m, K)``: one-vs-all class probabilities."""
        out = self._run(self._check_X(X))
        return (self.layers[-1].forward(out) if self._fused_sigmoid else out)

    def predict(self, X: Any) -> NDArray:
        """Class labels ``argmax_k h_ik`` (0-based), shape ``(m,)``."""
        return np.argmax(self.predict_proba(X), axis=1)

    def fit(self, X: Any, y: Any, lambda_: float = 0.0, max_iter: int = 100) -> FitResult:
        """Minimize the cost over the flat vector with SciPy's L-BFGS-B, starting from the current params.

        The result is written into :attr:`params`.  SciPy works in float64; for a float32 network every cost
        and gradient is still computed in float32.
        """
        max_iter = positive_int(max_iter, "max_iter")
        fun = self.objective(X, y, lambda_)
        res = scipy.optimize.minimize(fun, self._params.astype(np.float64), jac=True, method="L-BFGS-B",
                                      options={"maxiter": max_iter})
        self.set_params(np.asarray(res.x, dtype=self.dtype))
        return FitResult(cost=float(res.fun), n_iter=int(res.nit), n_evals=int(res.nfev),
                         success=bool(res.success), message=str(res.message))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickling turns views into copies; re-bind the layers to views of the restored buffers.
        self.__dict__.update(state)
        self._bind_layers()

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.layers))
        return f"Network([{inner}]; {self.size} params, {self.dtype})"


class Objective:
    """``theta -> (cost, grad)`` for one network and data set, evaluated on a private clone.

    Calling it never changes the network it was made from.  ``theta`` is a 1-D vector of ``P`` entries;
    a real ``theta`` is computed in the network's dtype, a complex one in the matching complex dtype (so that
    the complex-step check works).  Returns ``(float or complex, grad of shape (P,))``.  Not thread-safe:
    give each thread its own objective.
    """

    def __init__(self, net: Network, X: Any, y: Any, lambda_: float) -> None:
        self.lambda_ = nonnegative_float(lambda_, "lambda_")
        self.X = net._check_X(X)
        self.Y = net.targets(y, self.X.shape[0])
        self.network = net
        self._twins: dict[np.dtype, Network] = {}
        self._inputs: dict[np.dtype, NDArray] = {self.X.dtype: self.X}
        self._last: tuple[NDArray, list[NDArray]] | None = None

    @property
    def m(self) -> int:
        """Number of examples."""
        return self.X.shape[0]

    def _twin(self, dtype: np.dtype) -> Network:
        twin = self._twins.get(dtype)
        if twin is None:
            twin = self._twins[dtype] = self.network.clone(dtype)
        return twin

    def __call__(self, theta: Any) -> tuple[Any, NDArray]:
        theta = np.asarray(theta)
        if theta.ndim != 1 or theta.size != self.network.size:
            raise InputError("theta", f"a 1-D vector of {self.network.size} entries", describe(theta))
        real = self.network.dtype
        dtype = np.result_type(real, np.complex64) if np.iscomplexobj(theta) else real
        twin = self._twin(np.dtype(dtype))
        twin._params[...] = theta
        X = self.inputs(np.dtype(dtype))
        acts: list[NDArray] = []
        cost = twin._cost(X, self.Y, self.lambda_, with_grad=True, record=acts)
        self._last = (np.array(theta, copy=True), acts)
        return cost, twin._grads.copy()

    def cost(self, theta: NDArray) -> Any:
        """The cost alone at ``theta`` (no gradient, no recorded activations); same dtype rules as a call."""
        twin = self._twin(np.dtype(theta.dtype))
        twin._params[...] = theta
        return twin._cost(self.inputs(np.dtype(theta.dtype)), self.Y, self.lambda_, with_grad=False)

    def inputs(self, dtype: np.dtype) -> NDArray:
        """``X`` in ``dtype`` (converted once)."""
        X = self._inputs.get(dtype)
        if X is None:
            X = self._inputs[dtype] = self.X.astype(dtype)
        return X

    def activations(self, theta: NDArray) -> list[NDArray]:
        """The input and every layer's output (up to the logits) at ``theta``; reuses the last call's when it
        was at the same point."""
        last = self._last
        if last is not None and last[0].dtype == theta.dtype and np.array_equal(last[0], theta):
            return last[1]
        twin = self._twin(np.dtype(theta.dtype))
        twin._params[...] = theta
        acts: list[NDArray] = []
        twin._run(self.inputs(np.dtype(theta.dtype)), acts)
        return acts

    def __repr__(self) -> str:
        return f"Objective({self.network!r}, m={self.m}, lambda_={self.lambda_})"
