"""The :class:`Network`: layers over one flat parameter vector, with a loss and an L2 penalty.

Cost, for ``m`` examples, outputs ``out = network(X)`` of shape ``(m, K)`` and targets ``Y``::

    J = (1/m) sum_i loss(out_i, Y_i)  +  lambda/(2m) sum W^2

with the loss an object (:mod:`layerkit.nn.losses`): by default the sigmoid cross-entropy
``sum_k -Y_ik log h_ik - (1 - Y_ik) log(1 - h_ik)`` of the classic course, or the softmax cross-entropy, or
half the squared error.  ``W`` runs over the penalized entries of every layer (the :class:`L2` penalty
object decides: for ``Dense`` by default all of ``Theta`` except the bias column 0).  The gradient is the
backprop average over ``m`` plus ``(lambda/m) W``.  When the loss is the sigmoid cross-entropy and the last
layer a plain :class:`~layerkit.Sigmoid`, the data term is computed from the logits in log-sigmoid form
(:func:`~layerkit.nn.losses.cross_entropy_from_logits`), finite even when ``h`` saturates to 0 or 1.

The flat layout is defined in :mod:`layerkit.nn.layout`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, cast

import numpy as np
import scipy.optimize
from attrs import frozen
from numpy.typing import NDArray

from .._classes import defined_in
from .._validate import describe, finite_matrix, float_dtype, nonnegative_float, positive_int
from ..errors import InputError
from ..snapshot import preserving
from .buffer import FlatParameters, bindings_of
from .elementwise import Identity, LeakyReLU, ReLU, Tanh
from .layers import Dense, Layer, Sigmoid
from .losses import L2, Loss, MeanSquaredError, SigmoidCrossEntropy


@frozen
class FitResult:
    """Outcome of :meth:`Network.fit`: final cost, L-BFGS iterations and cost evaluations, and status."""

    cost: float
    n_iter: int
    n_evals: int
    success: bool
    message: str


def _params_only(layer: Layer) -> Callable[[NDArray], None] | None:
    """The layer's ``backward_params`` when it is at least as specialized as its ``backward``: a subclass that
    overrides only ``backward`` must see its own override used, even in the first layer."""
    if not hasattr(layer, "backward_params"):
        return None
    cls = type(layer)
    if defined_in(cls, "backward_params") > defined_in(cls, "backward"):
        return None
    return layer.backward_params


def _checked_loss(loss: Any) -> Loss:
    if isinstance(loss, type) or not all(callable(getattr(loss, n, None))
                                         for n in ("targets", "value_and_grad", "predict_proba", "predict")):
        raise InputError("loss", "a Loss instance, e.g. SoftmaxCrossEntropy()", describe(loss))
    return loss


def _check_fit(loss: Loss, last: Layer) -> None:
    """Refuse a sigmoid cross-entropy after a layer of layerkit's whose outputs leave (0, 1) (a Dense layer,
    Identity, Tanh, ReLU): its logarithms would be NaN."""
    if type(loss) is SigmoidCrossEntropy and type(last) in (Dense, Identity, Tanh, ReLU, LeakyReLU):
        raise InputError("loss", "a loss that fits the last layer: the sigmoid cross-entropy (the default) needs "
                         "outputs in (0, 1), so end the network with Sigmoid(), or give "
                         "loss=SoftmaxCrossEntropy() for logits (MeanSquaredError() for regression)",
                         f"the default sigmoid cross-entropy after {last!r}")


def _checked_layers(layers: Sequence[Layer]) -> list[Layer]:
    """Layers, each a Layer, and each layer with parameters used once (a second use would get the same
    parameters but a gradient each use overwrites)."""
    layers = list(layers)
    if not layers:
        raise InputError("layers", "a non-empty sequence of layers", "an empty sequence")
    seen: dict[int, int] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise InputError(f"layers[{i}]", "a Layer (param_shapes, params, bind, forward, backward)",
                             describe(layer))
    for i, layer in enumerate(layers):
        if layer.param_shapes and seen.setdefault(id(layer), i) != i:
            raise InputError(f"layers[{i}]", "a layer with parameters used once (a second use would get the "
                             "same parameters but a gradient each use overwrites; to share weights, give a "
                             "layer that reads another's parameters, as a tied decoder does)",
                             f"the same object as layers[{seen[id(layer)]}] ({layer!r})")
    return layers


def _checked_penalty(penalty: L2, layers: list[Layer]) -> L2:
    """An L2 whose per-layer keys are positions or layers of this network."""
    for key in penalty.layers:
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(layers):
                raise InputError(f"penalty.layers[{key}]", f"a layer position in 0..{len(layers) - 1}", str(key))
        elif not any(key is layer for layer in layers):
            raise InputError(f"penalty.layers[{key!r}]", "a layer of this network or its position", repr(key))
    return penalty


class Network(FlatParameters):
    """A feed-forward stack of layers sharing one flat parameter vector.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order.  Each layer's current parameter values are copied into the network's buffer and
        the layer is re-bound to views of it.
    loss : Loss, optional
        The data term (:mod:`layerkit.nn.losses`): :class:`~layerkit.SigmoidCrossEntropy` by default,
        :class:`~layerkit.SoftmaxCrossEntropy` or :class:`~layerkit.MeanSquaredError`.
    penalty : L2, optional
        Which parameters the L2 penalty applies to (default: each layer's ``penalized`` view, a Dense layer's
        weights without the bias column); its strength ``lambda_`` is given with the data.
    dtype : float32 or float64
        dtype of ``params``, ``grads`` and every computation.

    Attributes
    ----------
    layers : list of Layer
    loss : Loss
    penalty : L2
    layout : ParameterLayout
        Blocks ``Theta1, Theta2, ...`` (parameter name + number of the layer among layers with parameters).
    """

    def __init__(self, layers: Sequence[Layer], *, loss: Loss | None = None, penalty: L2 | None = None,
                 dtype: Any = np.float64) -> None:
        self.loss = _checked_loss(SigmoidCrossEntropy() if loss is None else loss)
        penalty = L2() if penalty is None else penalty
        if not isinstance(penalty, L2):
            raise InputError("penalty", "an L2 instance, e.g. L2({0: 'all'})", describe(penalty))
        self.layers = _checked_layers(layers)
        _check_fit(self.loss, self.layers[-1])
        self.penalty = _checked_penalty(penalty, self.layers)
        #: The penalty rule of each layer ("default", "all" or "none"), by position.
        self.penalty_rules = tuple(self.penalty.rule(i, layer) for i, layer in enumerate(self.layers))
        self.dtype = np.dtype(dtype) if np.dtype(dtype).kind == "c" else float_dtype(dtype)
        self._allocate(bindings_of(self.layers))
        self._lock = threading.RLock()

    @property
    def fused_sigmoid(self) -> bool:
        """Whether the loss folds a final :class:`~layerkit.Sigmoid` in (the sigmoid cross-entropy) and the
        last layer is one whose math is Sigmoid's own: the cost is then computed from its input (the logits),
        in log-sigmoid form.  A subclass or an instance with its own ``forward`` or ``fn`` is an output layer
        like any other (its outputs enter the cross-entropy, its ``backward`` carries the gradient), so that
        what it computes is what is differentiated."""
        last = self.layers[-1]
        own = getattr(last, "__dict__", {})
        return (bool(getattr(self.loss, "fuses_sigmoid", False)) and isinstance(last, Sigmoid)
                and "forward" not in own and "fn" not in own
                and type(last).forward is Sigmoid.forward and type(last).fn is Sigmoid.fn)

    @property
    def body(self) -> list[Layer]:
        """The layers whose last output the loss reads: all of them, or all but a fused final Sigmoid."""
        return self.layers[:-1] if self.fused_sigmoid else list(self.layers)

    @property
    def lock(self) -> threading.RLock:
        """Held while an evaluation has parameter values other than the network's own in its buffer (see
        :meth:`preserved`): objectives and checks of one network never interleave."""
        return self._lock

    @contextmanager
    def preserved(self, state: bool = False) -> Iterator[Network]:
        """Restore this network exactly as it was when the block is left, however it is left.

        On exit (normal, an exception, or a KeyboardInterrupt) the values of :attr:`params` and :attr:`grads`,
        the network's own attributes and every layer's attributes are put back: attributes that were rebound
        get their old objects, and the lists, dicts and helper objects they lead to (a layer's ``params`` and
        ``grads`` bindings, wherever it keeps them) their old contents.  With ``state``, the values of the
        arrays those attributes hold are put back too, up to :data:`MAX_STATE` entries each (a running
        statistic a layer updates in place): what a check uses; an objective leaves such state to evolve, as
        training does.  Checks and objectives evaluate the caller's network in place inside this block, so
        that what is checked is the network itself: its class, its layer objects, their ties and their
        bindings.  Holds :attr:`lock` meanwhile.
        """
        with self._lock, preserving([self] + self.layers, [self._params, self._grads], state=state):
            yield self

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
            layers += [cast(Layer, Dense(n_in, n_out, dtype=float_dtype(dtype))), cast(Layer, Sigmoid())]
        net = cls(layers, dtype=dtype)
        if init == "random":
            net.init_random(seed)
        elif init == "debug":
            net.init_debug()
        else:
            raise InputError("init", "'random' or 'debug'", repr(init))
        return net

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
        if np.ndim(X) > 2:  # images (m, C, H, W) for a network that starts with a spatial layer
            return self._check_images(X)
        X = finite_matrix(X, "X", self.n_inputs)
        if X.shape[0] == 0:
            raise InputError("X", "at least one example (row)", describe(X))
        if np.iscomplexobj(X) and self.dtype.kind != "c":
            raise InputError("X", "real values", describe(X))
        return X if X.dtype == self.dtype else X.astype(self.dtype)

    def _check_images(self, X: Any) -> NDArray:
        """``X`` of more than 2 dimensions, validated as :meth:`_check_X` validates a matrix: numeric, finite,
        at least one example, and of the first layer's ``in_channels`` when it declares them."""
        arr = np.asarray(X)
        channels = getattr(self.layers[0], "in_channels", None)
        if getattr(self.layers[0], "n_in", None) is not None:
            raise InputError("X", f"a 2-D array (examples x {self.n_inputs} features) for {self.layers[0]!r}",
                             describe(arr))
        if not np.issubdtype(arr.dtype, np.number) or arr.shape[0] == 0:
            raise InputError("X", "a numeric batch with at least one example", describe(arr))
        if channels is not None and (arr.ndim != 4 or arr.shape[1] != channels):
            raise InputError("X", f"images (m, {channels}, H, W) for {self.layers[0]!r}", describe(arr))
        if np.iscomplexobj(arr) and self.dtype.kind != "c":
            raise InputError("X", "real values", describe(arr))
        bad = ~np.isfinite(arr)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError("X", "finite values", f"{arr[where]} at {where} ({int(bad.sum())} in all)")
        return arr if arr.dtype == self.dtype else arr.astype(self.dtype)

    def targets(self, y: Any, m: int) -> NDArray:
        """Labels as an ``(m, K)`` target matrix, validated by the loss (see :meth:`Loss.targets`): for the
        cross-entropies 1-D integer class labels in ``0..K-1`` (one-hot encoded here), the same labels as an
        ``(m, 1)`` column (when ``K > 1``), or an ``(m, K)`` matrix of targets; for the squared error real
        values."""
        y_arr = np.asarray(y)
        if (y_arr.ndim == 2 and y_arr.shape[1] == 1 and (self.n_outputs or 1) > 1
                and type(self.loss) is not MeanSquaredError):
            y = y_arr.reshape(-1)  # a label column, as loadmat gives it
        return self.loss.targets(y, m, self.n_outputs, self.dtype.type(0).real.dtype)

    # ------------------------------------------------------------------ evaluation
    def _run(self, X: NDArray, record: list[NDArray] | None = None) -> NDArray:
        """Forward through every layer but a final Sigmoid: the logits (or outputs, if not fused).

        With ``record``, the input and every layer's output are appended to it.
        """
        a = X
        if record is not None:
            record.append(a)
        for layer in self.body:
            a = layer.forward(a)
            if record is not None:
                record.append(a)
        return a

    def _penalty(self, lambda_: float, m: int, with_grad: bool) -> Any:
        if lambda_ == 0:
            return 0.0
        mask = self.penalized_mask()
        W = self._params[mask]
        if with_grad:
            self._grads[mask] += L2.gradient(lambda_, m, W)
        return L2.value(lambda_, m, W)

    def prepare(self, X: Any, y: Any) -> tuple[NDArray, NDArray]:
        """Validate data once: ``X`` as an ``(m, n_inputs)`` array of this network's dtype and ``y`` as the
        ``(m, K)`` target matrix (see :meth:`targets`), for repeated :meth:`evaluate` calls."""
        X = self._check_X(X)
        return X, self.targets(y, X.shape[0])

    def activations(self, X: NDArray, theta: NDArray | None = None) -> list[NDArray]:
        """The input and every layer's output up to what the loss reads (the last layer's input when the cost
        is fused with a final Sigmoid: :attr:`body`), at the current parameters or, with ``theta`` (P,), at
        those (the parameters are put back); ``X`` as returned by :meth:`prepare`."""
        record: list[NDArray] = []
        if theta is None:
            self._run(X, record)
            return record
        vec = self.layout.check_vector(theta, "theta", dtype=self.dtype)
        with self.preserved():
            self._params[...] = vec
            self._run(X, record)
        return record

    def evaluate(self, X: NDArray, Y: NDArray, lambda_: float, with_grad: bool,
                 record: list[NDArray] | None = None) -> Any:
        """Cost at the current parameters on data validated by :meth:`prepare` (no checks here); with
        ``with_grad`` the gradient is written into :attr:`grads`; ``record`` collects the activations (as
        :meth:`activations` returns them).  :meth:`cost` and :meth:`cost_and_gradient` call it, so a subclass
        that overrides it changes both."""
        return self._cost(X, Y, lambda_, with_grad, record)

    def _evaluate(self, X: Any, y: Any, lambda_: float, with_grad: bool) -> Any:
        lambda_ = nonnegative_float(lambda_, "lambda_")
        X, Y = self.prepare(X, y)
        return self.evaluate(X, Y, lambda_, with_grad)

    def _cost(self, X: NDArray, Y: NDArray, lambda_: float, with_grad: bool,
              record: list[NDArray] | None = None) -> Any:
        """Cost (and gradient into ``grads``) on validated ``X`` and target matrix ``Y``; ``record`` collects
        the activations (see :meth:`_run`)."""
        m = X.shape[0]
        out = self._run(X, record)
        if out.ndim != 2 or out.shape[0] != m or out.shape[1] != Y.shape[1]:
            raise InputError("y", f"targets matching the network output of shape {out.shape}", describe(Y))
        fused = self.fused_sigmoid
        total, dout = self.loss.value_and_grad(out, Y, fused)
        cost = total / m
        if with_grad:
            d = dout / m
            layers = self.body
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
        """A deep copy: the same class, copies of the layers (a layer used twice stays one object, layers that
        refer to each other keep referring to each other's copies), its own buffers (of ``dtype``, default this
        one's; complex is allowed) and the same parameter values."""
        twin = copy.deepcopy(self)
        if dtype is not None:
            twin.use_dtype(dtype)
        return twin

    def objective(self, X: Any, y: Any, lambda_: float = 0.0) -> Objective:
        """A function ``theta -> (cost, grad)`` for optimizers and checkers; see :class:`Objective`."""
        return Objective(self, X, y, lambda_)

    def predict_proba(self, X: Any) -> NDArray:
        """Class probabilities, shape ``(m, K)``, as the loss reads the outputs: one-vs-all sigmoids for the
        sigmoid cross-entropy, the softmax for the softmax one (none for the squared error).  Layers with an
        evaluation mode (Dropout) run in it."""
        with self._evaluation():
            return self.loss.predict_proba(self._run(self._check_X(X)), self.fused_sigmoid)

    def predict(self, X: Any) -> NDArray:
        """Class labels ``argmax_k`` (0-based), shape ``(m,)``, for a classification loss; the outputs
        themselves (``(m,)`` for one output) for the squared error.  Layers with an evaluation mode
        (Dropout) run in it."""
        with self._evaluation():
            return self.loss.predict(self._run(self._check_X(X)), self.fused_sigmoid)

    @contextmanager
    def _evaluation(self) -> Iterator[None]:
        modal = [layer for layer in self.layers if callable(getattr(layer, "eval", None))
                 and isinstance(getattr(layer, "training", None), bool)]
        before = [layer.training for layer in modal]  # type: ignore[attr-defined]
        for layer in modal:
            layer.training = False  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for layer, was in zip(modal, before):
                layer.training = was  # type: ignore[attr-defined]

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

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickling and deep copies turn views into copies; re-bind the layers to views of the restored buffers.
        # The buffers are copied first: a transport may hand several unpickled networks the same memory (Dask's
        # in-process workers deserialize without copying), and each evaluates in its own buffer, in place.
        self.__dict__.update(state)
        self._params = np.array(self._params, copy=True)
        self._grads = np.array(self._grads, copy=True)
        self._lock = threading.RLock()
        self._bind_layers()

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.layers))
        extra = "" if type(self.loss) is SigmoidCrossEntropy else f", {self.loss!r}"
        return f"Network([{inner}]{extra}; {self.size} params, {self.dtype})"


#: Members whose override in a Network subclass changes what the cost is (see :func:`evaluation_overrides`).
EVALUATION_MEMBERS = ("cost", "cost_and_gradient", "evaluate", "prepare", "activations", "targets", "_evaluate",
                      "_cost", "_run", "_penalty", "penalized_mask")


def evaluation_overrides(net: Network) -> list[str]:
    """The members of :data:`EVALUATION_MEMBERS` that ``net``'s class or the instance itself redefines."""
    cls = type(net)
    return [name for name in EVALUATION_MEMBERS
            if name in vars(net) or getattr(cls, name, None) is not getattr(Network, name, None)]


class Objective:
    """``theta -> (cost, grad)`` for one network and data set, evaluated on the network itself.

    A call writes ``theta`` into the network's buffer, evaluates, and restores the network exactly as it was
    (:meth:`Network.preserved`): calling it never changes the network.  It evaluates what the network *is*:
    a subclass's ``cost_and_gradient``, tied or shared layers, user layers.  ``theta`` is a 1-D vector of ``P``
    entries; a real ``theta`` is computed in the network's dtype, a complex one in the matching complex dtype
    (so that the complex-step check works).  Returns ``(float or complex, grad of shape (P,))``.  Calls from
    several threads are serialized by the network's lock.
    """

    def __init__(self, net: Network, X: Any, y: Any, lambda_: float) -> None:
        self.lambda_ = nonnegative_float(lambda_, "lambda_")
        self.X, self.Y = net.prepare(X, y)
        self.network = net
        self._data = (X, y)  # as given, for a subclass's own cost methods
        self._inputs: dict[np.dtype, NDArray] = {self.X.dtype: self.X}
        overrides = evaluation_overrides(net)
        self._public_grad = "cost_and_gradient" in overrides
        self._public_cost = "cost" in overrides

    @property
    def m(self) -> int:
        """Number of examples."""
        return self.X.shape[0]

    def _dtype(self, theta: NDArray) -> np.dtype:
        real = np.dtype(self.network.dtype).type(0).real.dtype
        return np.dtype(np.result_type(real, np.complex64) if np.iscomplexobj(theta) else real)

    def _check(self, theta: Any) -> NDArray:
        theta = np.asarray(theta)
        if theta.ndim != 1 or theta.size != self.network.size:
            raise InputError("theta", f"a 1-D vector of {self.network.size} entries", describe(theta))
        return theta

    def evaluate_in_place(self, theta: NDArray, with_grad: bool, record: list[NDArray] | None = None) -> Any:
        """Write ``theta`` into the network's buffer and evaluate there, leaving both changed: for callers
        that already hold :meth:`Network.preserved` (a check), and restore the network themselves.  Returns
        the cost, the gradient being in ``network.grads``."""
        net = self.network
        net.use_dtype(self._dtype(theta))
        net.params[...] = theta
        if with_grad:
            if self._public_grad:
                return net.cost_and_gradient(*self._data, self.lambda_)[0]
            return net.evaluate(self.inputs(net.params.dtype), self.Y, self.lambda_, True, record)
        if self._public_cost:
            return net.cost(*self._data, self.lambda_)
        if self._public_grad:
            return net.cost_and_gradient(*self._data, self.lambda_)[0]
        return net.evaluate(self.inputs(net.params.dtype), self.Y, self.lambda_, False)

    def __call__(self, theta: Any) -> tuple[Any, NDArray]:
        theta = self._check(theta)
        with self.network.preserved():
            cost = self.evaluate_in_place(theta, with_grad=True)
            return cost, self.network.grads.copy()

    def cost(self, theta: Any) -> Any:
        """The cost alone at ``theta``; same dtype rules as a call."""
        theta = self._check(theta)
        with self.network.preserved():
            return self.evaluate_in_place(theta, with_grad=False)

    def inputs(self, dtype: np.dtype) -> NDArray:
        """``X`` in ``dtype`` (converted once)."""
        X = self._inputs.get(dtype)
        if X is None:
            X = self._inputs[dtype] = self.X.astype(dtype)
        return X

    def __repr__(self) -> str:
        return f"Objective({self.network!r}, m={self.m}, lambda_={self.lambda_})"
