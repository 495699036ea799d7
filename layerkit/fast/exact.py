"""The engine's exact per-perturbation path: batches of perturbations of one block carried through the
layers after it as structured changes (:mod:`layerkit.fast.changes`) by each layer's confirmed rules, or, for
a layer without rules, by re-running the layers from the block's own on the cached input.

It serves the entries the Taylor tables (:mod:`layerkit.fast.series`) cannot certify, blocks whose layers
have no series, and the engine's predictions for its verification.  Work is split in batches bounded by
``MAX_BATCH_ELEMENTS`` per temporary (cache-sized, so memory stays a small multiple of one forward pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.buffer import Binding
from ..numerics import NOISE_C
from .changes import Change, ColumnChange, RankOneChange, matrix_shape
from .state import MAX_BATCH_ELEMENTS, ForwardPass


class ExactPath:
    """The exact path of one forward pass ``fp`` (module docstring); ``eps`` is the network dtype's."""

    def __init__(self, fp: ForwardPass, eps: float) -> None:
        self.fp, self.eps = fp, eps
        self.net, self.layers, self.acts = fp.state.net, fp.layers, fp.acts
        self.loss, self.m, self.Z = fp.loss, fp.m, fp.Z
        self.rules, self.magnitude = fp.rules, fp.magnitude
        #: The generic path differences whole re-run outputs: ``d = a - Z`` carries ``eps |Z|`` per logit.
        self.generic_noise = NOISE_C * eps * self.loss.slope_scale() / self.m
        self._cancel: dict[Any, NDArray] = {}

    def cancellation(self, b: Binding, block: Any) -> NDArray:
        """Rounding of the exact path's changes through layers whose rule subtracts two outputs
        (``forward(x + d) - forward(x)``, see :attr:`~layerkit.fast.rules.BoundRule.cancels`), per entry of the
        block, in units of the data term (divided by ``m``): each changed output carries about ``eps (|y| +
        |x f'(x)|)``, weighted by the magnitude of ``dL/dy`` there (:func:`magnitudes`), and these roundings
        add like random signs over the examples (the model of :func:`magnitudes`), times ``NOISE_C``.  A
        column change (the layer right after a Dense-like block) moves only its unit ``r``; later layers move
        every unit.
        The generic path's bound where a magnitude is unknown."""
        key = ("cancel", b.block)
        cached = self._cancel.get(key)
        if cached is not None:
            return cached
        out = np.zeros(block.size)
        for k in range(b.index + 1, len(self.layers)):
            if not self.rules.rule(k).cancels:
                continue
            A, below = self.magnitude[k], self.magnitude[k - 1]
            if A is None or below is None:
                out += self.generic_noise
                continue
            x, y = self.acts[k], self.acts[k + 1]
            out_terms = A * np.abs(y.astype(np.float64))
            in_terms = below * np.abs(x.astype(np.float64))
            columnwise = out_terms.shape == in_terms.shape and self.rules.rule(k).columnwise(x, y)
            if columnwise:  # an elementwise layer: a column change stays one, unit r's roundings meet
                out_terms = out_terms + in_terms
                per_unit = (out_terms * out_terms).sum(axis=0)
            else:
                per_unit = np.full(1, (out_terms**2).sum() + (in_terms**2).sum())
            if columnwise and k == b.index + 1 and len(block.shape) == 2 and per_unit.size == block.shape[0]:
                out += NOISE_C * self.eps * np.repeat(np.sqrt(per_unit), block.shape[1]) / self.m
            else:
                out += NOISE_C * self.eps * float(np.sqrt(per_unit.sum())) / self.m
        self._cancel[key] = out
        return out

    def structured(self, i: int, block: Any) -> bool:
        """Whether a block's entries go through its layer's ``param_change`` and the later layers'
        ``propagate`` (its entry ``(r, c)`` of :func:`~layerkit.fast.changes.matrix_shape` moves output column or
        channel ``r`` alone)."""
        return (i < len(self.layers) and len(block.shape) >= 1 and self.rules.ok(i, "param_change")
                and all(self.rules.ok(k, "propagate") for k in range(i + 1, len(self.layers))))

    def tasks(self, b: Binding, block: Any, local: NDArray, steps: NDArray, out: NDArray,
                     where: NDArray) -> list[Callable[[], None]]:
        """Work items writing ``out[:, where]`` for the entries ``local`` of a block at ``steps`` (S, k)."""
        i, p = b.index, b.param
        cols = matrix_shape(block.shape)[1]
        # Cache blocking: a task covers the columns of one row whose (B, m) temporaries (times an output
        # channel's pixels) fit in MAX_BATCH_ELEMENTS, so that the elementwise passes run from cache.
        pixels = int(np.prod(self.acts[i + 1].shape[2:], dtype=np.int64))
        width = max(1, min(cols, MAX_BATCH_ELEMENTS // (self.m * pixels)))
        rows = local // cols
        tasks = []

        def task(s: int, r: int, sel: NDArray) -> Callable[[], None]:
            def run() -> None:
                change = self.rules.param_change(i, p, r, local[sel] % cols, steps[s, sel], self.acts[i],
                                                 self.acts[i + 1].shape[1])
                out[s, where[sel]] = self.finish(change, i + 1) / self.m
            return run

        for r in np.unique(rows):
            idx = np.flatnonzero(rows == r)
            for lo in range(0, idx.size, width):
                for s in range(steps.shape[0]):
                    tasks.append(task(s, int(r), idx[lo:lo + width]))
        return tasks

    def finish(self, change: Change, start: int) -> NDArray:
        """Summed data-term change for a batch ``change`` of the output of layer ``start - 1``.

        A batch is split just before a layer whose output would be a dense ``(B, m, width)`` temporary larger
        than ``MAX_BATCH_ELEMENTS``; column changes of ``(m, n)`` activations stay ``(B, m)`` and are never
        split.
        """
        m = self.m
        for k in range(start, len(self.layers)):
            width = int(np.prod(self.acts[k + 1].shape[1:], dtype=np.int64))
            B = change.batch
            # a channel change of images (B, m, H, W) may become dense at a convolution
            splittable = not isinstance(change, ColumnChange) or change.delta.ndim > 2
            if splittable and B > 1 and B * m * width > MAX_BATCH_ELEMENTS:
                chunk = max(1, MAX_BATCH_ELEMENTS // (m * width))
                return np.concatenate([self.finish(change.take(lo, min(lo + chunk, B)), k)
                                       for lo in range(0, B, chunk)])
            change = self.rules.propagate(k, self.acts[k], self.acts[k + 1], change)
        return self.loss_change(change)

    def loss_change(self, change: Change) -> NDArray:
        """``sum_ik [l(z + D) - l(z)]`` per batch item, for a change ``D`` of the logits."""
        if isinstance(change, ColumnChange):
            return self.loss.column(change.col, change.delta)
        if isinstance(change, RankOneChange):
            return self.loss.rank_one(change.u, change.v)
        return self.loss.dense(change.dense(self.Z.shape))

    def perturbed_loss(self, b: Binding, block: Any, local: NDArray, values: NDArray) -> float:
        """Data-term change when ``theta[block][local] += values`` (all at once), by re-running the layers
        from the block's own on the cached input, in the network's buffer (restored)."""
        flat = self.net.params
        idx = block.start + local
        old = flat[idx].copy()
        flat[idx] = old + values
        try:
            a = self.acts[b.index]
            for layer in self.layers[b.index:]:
                a = layer.forward(a)
        finally:
            flat[idx] = old
        return self.loss.total(a - self.Z) / self.m

    def generic(self, b: Binding, block: Any, local: NDArray, steps: NDArray) -> NDArray:
        """Each entry perturbed alone in the network's buffer, the layers from the block's own re-run."""
        out = np.empty(steps.shape)
        with np.errstate(all="ignore"):
            for k, j in enumerate(local):
                for s in range(steps.shape[0]):
                    out[s, k] = self.perturbed_loss(b, block, np.array([j]), steps[s, k:k + 1])
        return out
