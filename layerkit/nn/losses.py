"""Losses and the L2 penalty of a :class:`~layerkit.Network`, as objects.

A loss turns the network's last output ``out`` (``(m, K)``) and the targets ``Y`` (``(m, K)``, from
:meth:`Loss.targets`) into the *summed* data term and its gradient ``dL/dout``; the network divides by ``m``.

* :class:`SigmoidCrossEntropy` (the default): one-vs-all cross-entropy, ``sum_ik -Y log h - (1 - Y) log(1 - h)``.
  When the last layer is a plain :class:`~layerkit.Sigmoid`, the network hands it that layer's *input* (the
  logits) and it is computed in log-sigmoid form, finite when ``h`` saturates.
* :class:`SoftmaxCrossEntropy`: ``sum_i logsumexp(z_i) - Y_i . z_i`` on the logits ``z`` (the last layer's
  output: end the network with a Dense layer), in a stable log-softmax form.
* :class:`MeanSquaredError`: ``(1/2) sum_ik (out_ik - Y_ik)^2``, so that the cost is ``1/(2m)`` of the squared
  error, as in the classic course; targets are real values.

:class:`L2` decides which parameters the penalty ``lambda/(2m) sum theta^2`` applies to: each layer's
``penalized`` view by default (a Dense layer's weights, not its bias column), with per-layer overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError
from .activations import sigmoid, softplus


def cross_entropy_from_logits(z: NDArray, Y: NDArray) -> tuple[NDArray, NDArray]:
    """Summed sigmoid cross-entropy and its gradient with respect to the logits, both *not* divided by ``m``.

    Returns
    -------
    total : scalar array
        ``sum_ik [ -Y log s - (1 - Y) log(1 - s) ]`` with ``s = sigmoid(z)``, computed as
        ``sum_ik [ Y softplus(-z) + (1 - Y) softplus(z) ]``: finite when ``s`` rounds to 0 or 1, and without
        the cancellation of the equal ``softplus(z) - Y z``, which for ``z = 13``, ``Y = 1`` subtracts two
        numbers near 13 to get 2e-6 and keeps only a few bits of it in float32.
    dz : NDArray, shape (m, K)
        ``sigmoid(z) - Y``, formed as ``(1 - Y) sigmoid(z) - Y sigmoid(-z)``: for 0/1 targets one term is
        zero and the other is computed to full relative accuracy.
    """
    total = np.sum(Y * softplus(-z) + (1 - Y) * softplus(z))
    return total, (1 - Y) * sigmoid(z) - Y * sigmoid(-z)


def cross_entropy_from_probabilities(h: NDArray, Y: NDArray) -> tuple[NDArray, NDArray]:
    """As :func:`cross_entropy_from_logits`, for outputs ``h`` that are already probabilities in (0, 1).

    Used when the network does not end with a plain ``Sigmoid``; it is only as stable as ``h`` is far from 0
    and 1.  Returns the summed loss and ``dL/dh = (h - Y) / (h (1 - h))``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        total = -np.sum(Y * np.log(h) + (1 - Y) * np.log(1 - h))
        dh = (h - Y) / (h * (1 - h))
    return total, dh


def log_softmax(z: NDArray) -> NDArray:
    """``z - logsumexp(z)`` per row, with the row maximum taken out first (no overflow, no 0/0)."""
    shifted = z - np.max(z, axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def _labels(y: Any, m: int, K: int | None, dtype: Any) -> NDArray:
    """1-D integer class labels ``0..K-1`` as one-hot rows ``(m, K)``."""
    if y.shape[0] != m:
        raise InputError("y", f"{m} labels (one per row of X)", f"{y.shape[0]}")
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise InputError("y", "integer class labels", describe(y))
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        bad = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(np.nan_to_num(y))))[0])
        raise InputError("y", "integer class labels", f"{y[bad]} at position {bad}")
    labels = y.astype(np.int64)
    top = K if K is not None else int(labels.max()) + 1
    out_of_range = np.flatnonzero((labels < 0) | (labels >= top))
    if out_of_range.size:
        first = int(out_of_range[0])
        raise InputError("y", f"labels in 0..{top - 1} (0-based, {top} classes)",
                         f"{labels[first]} at position {first} ({out_of_range.size} out of range)")
    Y = np.zeros((m, top), dtype=dtype)
    Y[np.arange(m), labels] = 1
    return Y


def _matrix(y: NDArray, m: int, K: int | None) -> NDArray:
    if y.shape[0] != m or (K is not None and y.shape[1] != K):
        raise InputError("y", f"a target matrix of shape ({m}, {K if K is not None else 'K'})", describe(y))
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise InputError("y", "real target values", describe(y))
    return y.astype(np.float64)


class Loss:
    """Base of the losses (module docstring).  A subclass defines :meth:`targets`, :meth:`value_and_grad` and
    :meth:`predict_proba`; ``fuses_sigmoid`` says whether a final plain Sigmoid is folded into the loss."""

    fuses_sigmoid = False

    def targets(self, y: Any, m: int, K: int | None, dtype: Any) -> NDArray:
        """Validate ``y`` and return the ``(m, K)`` target matrix of ``dtype``."""
        raise NotImplementedError

    def value_and_grad(self, out: NDArray, Y: NDArray, fused: bool = False) -> tuple[NDArray, NDArray]:
        """``(summed loss, dL/dout)`` for the network's output ``out`` (its logits when ``fused``)."""
        raise NotImplementedError

    def predict_proba(self, out: NDArray, fused: bool = False) -> NDArray:
        """Class probabilities ``(m, K)`` from the network's output (its logits when ``fused``)."""
        raise NotImplementedError

    def predict(self, out: NDArray, fused: bool = False) -> NDArray:
        """Class labels: ``argmax_k`` of :meth:`predict_proba`, shape ``(m,)``."""
        return np.argmax(self.predict_proba(out, fused), axis=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash(type(self))


class SigmoidCrossEntropy(Loss):
    """One-vs-all cross-entropy on outputs in (0, 1) (module docstring): the classic course's cost.

    Targets: 1-D integer labels ``0..K-1`` (one-hot encoded) or an ``(m, K)`` matrix of values in [0, 1].
    """

    fuses_sigmoid = True

    def targets(self, y: Any, m: int, K: int | None, dtype: Any) -> NDArray:
        y = np.asarray(y)
        if y.ndim == 1:
            return _labels(y, m, K, dtype)
        if y.ndim == 2:
            yf = _matrix(y, m, K)
            if not np.all(np.isfinite(yf)) or yf.min() < 0 or yf.max() > 1:
                raise InputError("y", "finite target values in [0, 1]",
                                 f"values in [{np.nanmin(yf)}, {np.nanmax(yf)}]")
            return y.astype(dtype)
        raise InputError("y", "1-D class labels or an (m, K) target matrix", describe(y))

    def value_and_grad(self, out: NDArray, Y: NDArray, fused: bool = False) -> tuple[NDArray, NDArray]:
        return cross_entropy_from_logits(out, Y) if fused else cross_entropy_from_probabilities(out, Y)

    def predict_proba(self, out: NDArray, fused: bool = False) -> NDArray:
        return sigmoid(out) if fused else out


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy on logits ``z`` (the network's last output): ``sum_i logsumexp(z_i) - Y_i . z_i``.

    Computed as ``-sum Y log_softmax(z)``, stable for any finite logits; ``dL/dz = (sum_k Y_ik) softmax(z) -
    Y``, which is ``softmax(z) - Y`` for rows that sum to 1 (and exact for rows that sum to 1 only up to
    rounding).  Targets: 1-D integer labels ``0..K-1`` or an ``(m, K)`` matrix of probability rows
    (non-negative, each summing to 1 within 1e-6).  End the network with a Dense (or Identity) layer, not a
    Sigmoid.
    """

    def targets(self, y: Any, m: int, K: int | None, dtype: Any) -> NDArray:
        y = np.asarray(y)
        if y.ndim == 1:
            return _labels(y, m, K, dtype)
        if y.ndim == 2:
            yf = _matrix(y, m, K)
            sums = yf.sum(axis=1)
            if not np.all(np.isfinite(yf)) or yf.min() < 0 or np.any(np.abs(sums - 1) > 1e-6):
                worst = int(np.argmax(np.abs(np.nan_to_num(sums, nan=np.inf) - 1)))
                raise InputError("y", "probability rows (non-negative, each summing to 1)",
                                 f"row {worst} sums to {sums[worst]}, values in [{np.nanmin(yf)}, {np.nanmax(yf)}]")
            return y.astype(dtype)
        raise InputError("y", "1-D class labels or an (m, K) matrix of probability rows", describe(y))

    def value_and_grad(self, out: NDArray, Y: NDArray, fused: bool = False) -> tuple[NDArray, NDArray]:
        logp = log_softmax(out)
        return -np.sum(Y * logp), np.sum(Y, axis=1, keepdims=True) * np.exp(logp) - Y

    def predict_proba(self, out: NDArray, fused: bool = False) -> NDArray:
        return np.exp(log_softmax(out))


class MeanSquaredError(Loss):
    """``(1/2) sum_ik (out_ik - Y_ik)^2`` (the cost is that over ``m``); ``dL/dout = out - Y``.

    Targets: real values, 1-D (one output) or ``(m, K)``.  :meth:`predict` returns the outputs (``(m,)`` for
    one output); there are no class probabilities.
    """

    def targets(self, y: Any, m: int, K: int | None, dtype: Any) -> NDArray:
        y = np.asarray(y)
        if y.ndim == 1:
            if K not in (None, 1):
                raise InputError("y", f"an (m, {K}) target matrix (the network has {K} outputs)", describe(y))
            y = y[:, None]
        if y.ndim != 2:
            raise InputError("y", "1-D targets or an (m, K) target matrix", describe(y))
        yf = _matrix(y, m, K)
        if not np.all(np.isfinite(yf)):
            raise InputError("y", "finite target values", f"{int(np.sum(~np.isfinite(yf)))} non-finite values")
        return yf.astype(dtype)

    def value_and_grad(self, out: NDArray, Y: NDArray, fused: bool = False) -> tuple[NDArray, NDArray]:
        r = out - Y
        return 0.5 * np.sum(r * r), r

    def predict_proba(self, out: NDArray, fused: bool = False) -> NDArray:
        raise InputError("predict_proba", "a classification loss (MeanSquaredError is a regression loss: "
                         "use predict)", "MeanSquaredError")

    def predict(self, out: NDArray, fused: bool = False) -> NDArray:
        return out[:, 0] if out.shape[1] == 1 else out


#: What :class:`L2` may say of one layer: its own ``penalized`` view, every parameter, or none.
LAYER_RULES = ("default", "all", "none")


class L2:
    """Which parameters ``lambda/(2m) sum theta^2`` applies to.

    Parameters
    ----------
    layers : mapping, optional
        Per-layer overrides, keyed by the layer object or its position in the network: ``"all"`` (bias
        included), ``"none"`` (not regularized) or ``"default"``.  Every other layer uses its own
        ``penalized(name, array)`` view (a Dense layer: the weights, the bias column exempt); a layer without
        one is not regularized.
    """

    def __init__(self, layers: Mapping[Any, str] | None = None) -> None:
        layers = dict(layers or {})
        for key, rule in layers.items():
            if rule not in LAYER_RULES:
                raise InputError(f"L2(layers[{key!r}])", f"one of {LAYER_RULES}", repr(rule))
        self.layers = layers

    @staticmethod
    def value(lambda_: float, m: float, W: NDArray) -> Any:
        """``lambda/(2m) sum W^2`` over the penalized entries ``W``."""
        return np.sum(W * W) * (lambda_ / (2 * m))

    @staticmethod
    def gradient(lambda_: float, m: float, W: NDArray) -> NDArray:
        """``(lambda/m) W``: the penalty's gradient on the penalized entries."""
        return (lambda_ / m) * W

    @staticmethod
    def change(lambda_: float, m: float, theta: NDArray, step: NDArray) -> NDArray:
        """The exact change of each penalized term when ``theta`` moves by ``step``:
        ``lambda/(2m) ((theta + s)^2 - theta^2) = lambda/(2m) s (2 theta + s)``, without cancellation."""
        return (lambda_ / (2 * m)) * step * (2 * theta + step)

    def rule(self, index: int, layer: Any) -> str:
        """The rule for the layer at ``index``."""
        for key, rule in self.layers.items():
            if key is layer or (isinstance(key, int) and not isinstance(key, bool) and key == index):
                return rule
        return "default"

    def __repr__(self) -> str:
        return f"L2({self.layers!r})" if self.layers else "L2()"
