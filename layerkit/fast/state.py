"""What the fast engine reads off a network at a point: its :class:`NetworkState` (layers, activations, loss
terms, penalty), the magnitudes of the terms backprop sums below each layer, and from them the rounding scale
of every gradient entry.

A gradient entry ``(r, c)`` of a Dense-like block is a sum of ``m`` products ``A_ir F_ic / m``
(``A``: the magnitudes of ``dL/d output`` at the layer, ``F``: its ``param_inputs``), which rounds to about
``eps sqrt(sum_i (A_ir F_ic)^2) / m`` (rounding errors add like random signs): its rounding scale ``R_j``
(:func:`block_rounding`, the one formula).  The engine bounds the rounding of its cost changes with it, and
a check the rounding of the analytic gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from attrs import define, frozen
from numpy.typing import NDArray

from ..nn.buffer import Binding
from ..nn.layout import Block
from ..nn.network import Network
from ..numerics import least_precise, machine_eps
from .changes import matrix_shape
from .confirm import Rules
from .loss_rules import loss_rule
from .rules import BoundRule, rule_for

#: Largest dense temporary (in elements) a batch of perturbations may create: 256K (2 MB in float64), small
#: enough to stay in cache, which matters more than batch size once a batch holds a few perturbations.
MAX_BATCH_ELEMENTS = 1 << 18

@define
class NetworkState:
    """What the engine needs of a network at a point, read from the caller's network itself: its layers up
    to the logits, their activations (input first), the targets, the loss terms at the logits, ``m``,
    ``lambda``, the penalized mask and the bindings.  Built while the caller holds
    :meth:`~layerkit.Network.preserved` with the parameters at the point."""

    net: Network
    layers: list[Any]
    acts: list[NDArray]
    Y: NDArray
    loss: Any
    m: int
    lambda_: float
    penalized: NDArray
    bindings: tuple[Binding, ...]

    @property
    def eps(self) -> float:
        """The unit roundoff the network's arithmetic carries: of the least precise of its parameters' dtype
        and every activation's (a layer that computes in float32 inside a float64 network rounds like
        float32, and so does everything after it)."""
        return machine_eps(least_precise(self.net.params.dtype, *self.acts))

    @classmethod
    def at(cls, net: Network, X: NDArray, Y: NDArray, lambda_: float,
           acts: list[NDArray] | None = None) -> NetworkState:
        """``acts``: the activations at the current parameters, when already recorded."""
        acts = net.activations(X) if acts is None else acts
        Y = Y.astype(X.dtype)
        return cls(net, list(net.body), acts, Y, loss_rule(net.loss, acts[-1], Y), X.shape[0], lambda_,
                   net.penalized_mask(), net.bindings)


def layer_magnitude(rule: BoundRule, x: NDArray, y: NDArray, A: NDArray) -> NDArray | None:
    """The magnitudes below ``layer`` given those above it, ``A`` (m, width of its output).  layerkit's own
    layers say it themselves (``magnitude``); for any other layer without parameters it is measured:
    ``|backward(A)|`` after a ``forward`` of the same input -- exact for an elementwise layer, a lower
    bound otherwise (a rounding bound too small costs a second look, one too large would hide a wrong
    gradient, so a layer's own claim is not taken).  None for another layer with parameters (its backward
    would write its gradients)."""
    if rule.trusted and rule.has("magnitude"):
        return np.asarray(rule.magnitude(x, y, A), dtype=np.float64)
    layer = rule.layer
    if getattr(layer, "param_shapes", None):
        return None
    try:
        with np.errstate(all="ignore"):
            layer.forward(x)
            out = np.abs(np.asarray(layer.backward(A.astype(x.dtype)), dtype=np.float64))
    except Exception:  # noqa: BLE001 - no magnitude, no rounding allowance: never a looser tolerance
        return None
    return out if out.shape == x.shape and np.all(np.isfinite(out)) else None


def magnitudes(state: NetworkState) -> list[NDArray | None]:
    """Backprop run on magnitudes: for each layer ``k``, ``A_k`` (m, width of its output), the scale of the
    terms that make up ``dL/d output`` -- ``(1 - y) s + y sigmoid(-z)`` at the logits, the two terms a
    Network's backprop forms, then each layer's magnitude on the way down (:func:`layer_magnitude`); None
    from the first layer without one on.  A gradient
    entry ``(r, c)`` of a Dense-like block is a sum of ``m`` products ``A_ir F_ic / m``, which rounds to about
    ``eps sqrt(sum_i (A_ir F_ic)^2) / m`` (rounding errors add like random signs): its rounding scale
    ``R_j`` (:func:`block_rounding`)."""
    out: list[NDArray | None] = [None] * len(state.layers)
    A = state.loss.magnitude()
    for k in range(len(state.layers) - 1, -1, -1):
        out[k] = A
        if k == 0:
            break
        A = layer_magnitude(rule_for(state.layers[k]), state.acts[k], state.acts[k + 1], A)
        if A is None:
            break
    return out


def rounding_scales(state: NetworkState) -> NDArray:
    """``R_j`` for every entry (see :func:`magnitudes`): ``sqrt(sum_i (A_ir F_ic)^2) / m`` for entry ``(r, c)``
    of a Dense-like block; NaN where a layer on the way down has no ``magnitude`` member.  A backprop
    gradient entry rounds to about ``eps R_j``."""
    R = np.full(state.net.size, np.nan)
    A = magnitudes(state)
    for b in state.bindings:
        block = state.net.layout[b.block]
        rule = rule_for(state.layers[b.index]) if b.index < len(state.layers) else None
        Ak = A[b.index] if b.index < len(A) else None
        scale = block_rounding(Ak, rule, b.param, state.acts[b.index], block, state.m)
        if scale is not None:
            R[block.slice] = scale
    return R


def block_rounding(A: NDArray | None, rule: BoundRule | None, param: str, x: NDArray, block: Block,
                   m: int) -> NDArray | None:
    """``R_j = sqrt(sum_i (A_ir F_ic)^2) / m`` for the entries ``(r, c)`` of a Dense-like block (flat, in the
    block's order), from the magnitudes ``A`` above its layer and its ``param_inputs`` ``F``; for a layer on
    images the sum runs over the output pixels too (each is a term of the gradient entry).  For a per-feature
    vector with ``feature_inputs`` ``G`` (entry ``r`` moves output feature ``r`` by ``t G[:, r]``), ``R_r =
    sqrt(sum_i (A_ir G_ir)^2) / m``.  None when either is unknown or the block is neither.
    (:class:`~layerkit.fast.series.SeriesBlock` forms the same sum while it computes its tables.)"""
    if A is None or rule is None or not block.shape:
        return None
    if rule.has("feature_inputs") and len(block.shape) == 1:  # entry r moves output feature r by t G[:, r]
        G = np.asarray(rule.feature_inputs(param, x), dtype=np.float64)
        if G.shape != A.shape or A.shape[1] != block.shape[0]:
            return None
        over = (0,) + tuple(range(2, A.ndim))  # the examples, and the pixels of images
        return np.asarray(np.sqrt((A * A * G * G).sum(axis=over)) / m)
    if not rule.has("param_inputs"):
        return None
    F = rule.param_inputs(param, x)
    cols = F.columns(0, F.shape[1], np.float64)
    if matrix_shape(block.shape) != (A.shape[1], F.shape[1]) or cols.shape[2:] != A.shape[2:]:
        return None
    if A.ndim == 2:
        return np.asarray((np.sqrt((A * A).T @ (cols * cols)) / m).ravel())
    axes = [0] + list(range(2, A.ndim))
    return np.asarray((np.sqrt(np.tensordot(A * A, cols * cols, axes=(axes, axes))) / m).ravel())


def rounding_norms(state: NetworkState) -> list[tuple[int, int, float]]:
    """``(start, stop, ||R||)`` for each block whose :func:`block_rounding` is known: the Euclidean norm of
    its ``R_j`` without forming them, ``||R||^2 = sum_i (sum_r A_ir^2) (sum_c F_ic^2) / m^2`` (over the pixels
    too), so that ``sum_j |u_j| R_j <= ||u|| ||R||`` bounds the rounding along a direction ``u`` over the block
    for the cost of the magnitudes alone (a product per entry costs about a gradient evaluation)."""
    out = []
    A_all = magnitudes(state)
    for b in state.bindings:
        block = state.net.layout[b.block]
        if b.index >= len(state.layers) or b.index >= len(A_all) or not block.shape:
            continue
        A, rule = A_all[b.index], rule_for(state.layers[b.index])
        if A is None:
            continue
        x = state.acts[b.index]
        A2 = np.asarray(A, dtype=np.float64) ** 2
        if rule.has("feature_inputs") and len(block.shape) == 1:
            G = np.asarray(rule.feature_inputs(b.param, x), dtype=np.float64)
            if G.shape != A.shape or A.shape[1] != block.shape[0]:
                continue
            out.append((block.start, block.stop, float(np.sqrt(np.sum(A2 * G * G))) / state.m))
            continue
        if not rule.has("param_inputs"):
            continue
        F = rule.param_inputs(b.param, x)
        if matrix_shape(block.shape) != (A.shape[1], F.shape[1]) or F.x.shape[2:] != A.shape[2:]:
            continue
        total = float(np.sum(A2.sum(axis=1) * F.row_squares()))  # per example (and pixel)
        out.append((block.start, block.stop, float(np.sqrt(total)) / state.m))
    return out


@frozen(eq=False)
class ForwardPass:
    """One forward pass as the engine reads it: the state, the rules it may use (confirmed against each
    layer's ``forward``) and the magnitudes below each layer (:func:`magnitudes`)."""

    state: NetworkState
    rules: Rules
    magnitude: list[NDArray | None]

    @classmethod
    def of(cls, state: NetworkState) -> ForwardPass:
        rules = Rules(state.layers, state.acts, state.bindings, state.net.params, state.net.layout)
        return cls(state, rules, magnitudes(state))

    @property
    def layers(self) -> list[Any]:
        return self.state.layers

    @property
    def acts(self) -> list[NDArray]:
        return self.state.acts

    @property
    def loss(self) -> Any:
        return self.state.loss

    @property
    def m(self) -> int:
        return self.state.m

    @property
    def Z(self) -> NDArray:
        return self.state.acts[-1]
