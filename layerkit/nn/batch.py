"""Layers that see the whole batch, or each example's own place in it: :class:`BatchNorm` and
:class:`Dropout`.

Both are *batch-coupled* (``batch_coupled = True``): an example's output depends on the other examples
(BatchNorm's statistics) or on its position in the batch (Dropout's mask).  The network engine never stacks
perturbed copies of a batch along the example axis through such a layer -- its statistics would mix them, its
mask would not fit.  Their rules (:mod:`layerkit.fast.batch_rules`) keep each perturbation's batch apart; a
user's batch-coupled layer keeps the engine out, and its network is checked on its own cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import describe, float_dtype, positive_int
from ..errors import InputError, NotBoundError, NotForwardedError


def _axes(x: NDArray, n: int, who: str) -> tuple[int, ...]:
    """The axes a batch statistic reduces: examples for ``(m, n)``, examples and pixels for ``(m, n, H, W)``."""
    if x.ndim == 2 and x.shape[1] == n:
        return (0,)
    if x.ndim == 4 and x.shape[1] == n:
        return (0, 2, 3)
    raise InputError(f"{who}.forward(x)", f"a batch (m, {n}) or (m, {n}, H, W)", describe(x))


class BatchNorm:
    """Batch normalization with batch statistics, as in training: per feature on ``(m, n)``, per channel on
    ``(m, n, H, W)``.

    ``y = gamma (x - mu) / sqrt(var + eps) + beta`` with ``mu`` and ``var`` (biased) the batch's.  The scale
    ``gamma`` (starts at 1) and shift ``beta`` (starts at 0) are parameters the default L2 penalty leaves alone.
    The input gradient carries the statistics' own terms::

        dx = (N dxhat - sum(dxhat) - xhat sum(dxhat xhat)) / (N sqrt(var + eps)),   dxhat = dy gamma

    (sums over the ``N`` values each statistic reduces).
    """

    batch_coupled = True

    def __init__(self, n_features: int, eps: float = 1e-5, *, dtype: Any = np.float64) -> None:
        self.n_features = positive_int(n_features, "n_features")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise InputError("eps", "a positive number", describe(eps))
        self.eps = float(eps)
        n = self.n_features
        self.param_shapes: dict[str, tuple[int, ...]] = {"gamma": (n,), "beta": (n,)}
        dt = float_dtype(dtype)
        self.params: dict[str, NDArray] = {}
        self.grads: dict[str, NDArray] = {}
        self.bind({"gamma": np.ones(n, dt), "beta": np.zeros(n, dt)}, {"gamma": np.zeros(n, dt), "beta": np.zeros(n, dt)})
        self._cache: tuple[NDArray, NDArray, tuple[int, ...]] | None = None

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        for name, arrs in (("params", params), ("grads", grads)):
            for p in ("gamma", "beta"):
                a = arrs.get(p) if isinstance(arrs, Mapping) else None
                if a is None or a.shape != (self.n_features,):
                    raise InputError(f"BatchNorm.bind({name})", f"{{'{p}': array of shape ({self.n_features},)}}",
                                     describe(a))
        self.params = {"gamma": params["gamma"], "beta": params["beta"]}
        self.grads = {"gamma": grads["gamma"], "beta": grads["beta"]}

    def init_params(self, rng: np.random.Generator) -> None:
        """``gamma = 1``, ``beta = 0``: the identity on normalized inputs."""
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0

    def penalized(self, name: str, array: NDArray) -> NDArray:
        """Neither the scale nor the shift is regularized."""
        return array[:0]

    def _shape(self, x: NDArray) -> tuple[int, ...]:
        return (1, -1) if x.ndim == 2 else (1, -1, 1, 1)

    def forward(self, x: NDArray) -> NDArray:
        x = np.asarray(x)
        axes = _axes(x, self.n_features, "BatchNorm")
        if not self.params:
            raise NotBoundError("BatchNorm has no parameters bound")
        shape = self._shape(x)
        mu = x.mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + self.eps)
        xhat = (x - mu) * inv
        self._cache = (xhat, inv, axes)
        return self.params["gamma"].reshape(shape) * xhat + self.params["beta"].reshape(shape)

    def backward(self, dy: NDArray) -> NDArray:
        xhat, inv, axes = self._grads(dy)
        dy = np.asarray(dy)
        N = dy.size // self.n_features
        dxhat = dy * self.params["gamma"].reshape(self._shape(dy))
        return (N * dxhat - dxhat.sum(axis=axes, keepdims=True)
                - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True)) * inv / N

    def backward_params(self, dy: NDArray) -> None:
        self._grads(dy)

    def _grads(self, dy: NDArray) -> tuple[NDArray, NDArray, tuple[int, ...]]:
        if self._cache is None:
            raise NotForwardedError("BatchNorm.backward was called before BatchNorm.forward: there are no statistics")
        xhat, inv, axes = self._cache
        dy = np.asarray(dy)
        if dy.shape != xhat.shape:
            raise InputError("BatchNorm.backward(dy)", f"shape {xhat.shape} (the last output's)", describe(dy))
        self.grads["gamma"][...] = (dy * xhat).sum(axis=axes)
        self.grads["beta"][...] = dy.sum(axis=axes)
        return self._cache

    def __repr__(self) -> str:
        return f"BatchNorm({self.n_features})"


class Dropout:
    """Inverted dropout: each unit kept with probability ``p`` and scaled by ``1/p``; the identity in
    evaluation mode (:meth:`eval`, for ``predict``).

    **One fixed mask.**  The mask is drawn from ``seed`` once for each input shape and kept, so ``forward`` is a
    deterministic function of its input and a gradient check is one of that mask's network (a check says so in
    its notes).  :meth:`resample` draws a new mask (a training loop calls it between steps); the layer's
    random stream is its own, seeded, and a check puts it back where it found it.
    """

    batch_coupled = True
    param_shapes: dict[str, tuple[int, ...]] = {}

    def __init__(self, p: float, seed: int = 0) -> None:
        if not (isinstance(p, (int, float)) and 0 < p <= 1):
            raise InputError("p", "the probability of keeping a unit, in (0, 1]", describe(p))
        self.p = float(p)
        self.seed = seed
        self.training = True
        self.params: dict[str, NDArray] = {}
        self.grads: dict[str, NDArray] = {}
        self._rng = np.random.default_rng(seed)
        self._masks: dict[tuple[int, ...], NDArray] = {}
        self._mask: NDArray | None = None

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        pass

    def train(self) -> Dropout:
        """Training mode: the mask applies (the default)."""
        self.training = True
        return self

    def eval(self) -> Dropout:
        """Evaluation mode: the identity."""
        self.training = False
        return self

    def resample(self) -> None:
        """Forget the masks: the next ``forward`` of each shape draws a new one."""
        self._masks = {}

    def mask(self, shape: tuple[int, ...]) -> NDArray:
        """The fixed mask for inputs of ``shape``: 0 or ``1/p``."""
        found = self._masks.get(shape)
        if found is None:
            found = (self._rng.random(shape) < self.p) / self.p
            self._masks[shape] = found
        return found

    def forward(self, x: NDArray) -> NDArray:
        x = np.asarray(x)
        if not self.training:
            self._mask = None
            return x
        self._mask = self.mask(x.shape).astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
        return x * self._mask

    def backward(self, dy: NDArray) -> NDArray:
        if self._mask is None:
            if self.training:
                raise NotForwardedError("Dropout.backward was called before Dropout.forward: there is no mask")
            return np.asarray(dy)
        return np.asarray(dy) * self._mask

    def __repr__(self) -> str:
        return f"Dropout({self.p:g}, seed={self.seed})"
