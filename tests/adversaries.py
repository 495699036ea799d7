"""Layers, networks and costs written to break a check, shared by the tests that use them and the golden corpus
(tests/golden.py): each is wrong in a way a rule, a sample or a step could hide, or right in a way a check
could mistake for wrong."""

from __future__ import annotations

import numpy as np
from helpers import PlainTanh

from layerkit import Dense, Network, ReLU, Sigmoid, Tanh
from layerkit.fast.changes import ColumnChange, DenseChange, SeriesChange
from layerkit.fast.layer_rules import SigmoidRule


# ---------------------------------------------------------------------- networks and layers
class Elastic(Network):
    """A subclass with its own cost: an elastic term whose gradient is 34% off."""

    def cost(self, X, y, lambda_=0.0):
        return super().cost(X, y, lambda_) + 0.5 * float(np.sum(self.params ** 2))

    def cost_and_gradient(self, X, y, lambda_=0.0):
        J, g = super().cost_and_gradient(X, y, lambda_)
        return J + 0.5 * float(np.sum(self.params ** 2)), g + 0.66 * self.params


class TiedDecoder:
    """Uses another layer's weights, transposed, and forgets their gradient."""

    param_shapes, params, grads = {}, {}, {}

    def __init__(self, other):
        self.other = other

    def __repr__(self):
        return "TiedDecoder()"

    def bind(self, params, grads):
        pass

    def forward(self, x):
        return x @ self.other.Theta[:, 1:]

    def backward(self, dy):
        return dy @ self.other.Theta[:, 1:].T


class ScaledSigmoid(Sigmoid):
    """A wrong backward, and fast-path rules made wrong the same way: the engine would agree with it."""

    def backward(self, dy):
        return super().backward(dy) * 1.3

    def propagate(self, x, y, change):
        return DenseChange(SigmoidRule(self).propagate(x, y, change).dense(x.shape) * 1.3)

    def series(self, x, y, change):
        out = SigmoidRule(self).series(x, y, change)
        return SeriesChange(out.coeffs * 1.3, out.cols, out.v)


class Steep(Sigmoid):
    """A last layer with its own forward (twice as steep) and the parent's backward: wrong by a factor 2."""

    def forward(self, x):
        return super().forward(2 * x)


class TinyChangeShortcut(Sigmoid):
    """Exact rules for the large changes rules are confirmed with; for the small changes of a finite difference a
    first-order shortcut with the same wrong slope as its backward (forward and backward disagree)."""

    def backward(self, dy):
        return 1.5 * super().backward(dy)

    def propagate(self, x, y, change):
        exact = SigmoidRule(self).propagate(x, y, change)
        d = change.dense(x.shape)
        if np.max(np.abs(d), initial=0.0) < 1e-3:
            return DenseChange(1.5 * d * y * (1 - y))
        return exact

    def series(self, x, y, change):
        raise NotImplementedError  # no tables: the exact path


class BatchBlind(Sigmoid):
    """A propagate rule right for one change at a time and wrong for a batch (it reads the first only)."""

    def propagate(self, x, y, change):
        d = change.dense(x.shape)
        out = SigmoidRule(self).propagate(x, y, DenseChange(np.repeat(d[:1], d.shape[0], axis=0)))
        return DenseChange(out.dense(x.shape))


class Accumulating(Dense):
    """A backward that adds into its gradient buffers instead of writing them."""

    def backward_params(self, dy):
        g = self.grads["Theta"]
        g[:, 0] += dy.sum(axis=0)
        g[:, 1:] += dy.T @ self._x


class CancellingTanh(PlainTanh):
    """A correct layer whose propagate rule differences two outputs: it cancels."""

    def __repr__(self):
        return "CancellingTanh()"

    def propagate(self, x, y, change):
        d = change.dense(x.shape)
        return DenseChange(np.tanh(x + d) - np.tanh(x))


class SlyTanh(PlainTanh):
    """A wrong backward (1 - y, not 1 - y^2), and a propagate rule that follows the same wrong slope only
    where a first confirmation would not look: for batches of ``batch`` or more changes, or for one unit."""

    def __init__(self, batch=None, unit=None):
        self.batch, self.unit = batch, unit

    def __repr__(self):
        return f"SlyTanh(batch={self.batch}, unit={self.unit})"

    def backward(self, dy):
        return dy * (1 - self._y)

    def propagate(self, x, y, change):
        if isinstance(change, ColumnChange):
            c = change.col
            if (self.batch is not None and change.batch >= self.batch) or c == self.unit:
                return ColumnChange(c, change.delta * (1 - y[:, c])[None, :])
            return ColumnChange(c, np.tanh(x[:, c][None, :] + change.delta) - y[:, c][None, :])
        return DenseChange(np.tanh(x[None] + change.dense(x.shape)) - y[None])


class WrongTanh(Tanh):
    """``1 - y`` for ``1 - y^2``."""

    def derivative(self, x, y):
        return 1 - y


class OneEverywhere(ReLU):
    """A ReLU whose derivative is 1 everywhere."""

    def derivative(self, x, y):
        return np.ones_like(x)


class WrongSide(ReLU):
    """A ReLU whose step is on the wrong side of 0."""

    def derivative(self, x, y):
        return (x < 0).astype(x.dtype)


class AtZero(ReLU):
    """1 at exactly 0: a subgradient, not an error."""

    def derivative(self, x, y):
        return (x >= 0).astype(x.dtype)


class HalfAtZero(ReLU):
    """1/2 at exactly 0: the mean of the slopes, which a central difference across the kink reproduces."""

    def derivative(self, x, y):
        return ((x > 0) + 0.5 * (x == 0)).astype(x.dtype)


# ---------------------------------------------------------------------- costs finite differences cannot read
def quantized(scale):
    """A float32 cost at float64 points: a staircase of float32 rounding under a smooth cost."""
    x0 = np.random.default_rng(0).standard_normal(20) * 1e-2

    def fun(x):
        return float(np.float32(1e4) + np.float32(0.5 * x @ x)), scale * x
    return fun, x0


def saturated_logistic(seed=6, zscale=30.0):
    """Logistic regression written as in a course, at a point where one example reaches z = 30: there
    ``log(1 - h)`` is a staircase (``1 + exp(-z)`` rounds to a grid 2e-3 wide in z), flat at the steps of any
    finite difference, so that example's slope is lost to them.  ``cost(t, wrong)`` scales the gradient."""
    rng = np.random.default_rng(seed)
    m, n = 100, 5
    X = np.hstack([np.ones((m, 1)), rng.standard_normal((m, n - 1))])
    t0 = rng.standard_normal(n)
    t0 *= zscale / np.max(np.abs(X @ t0))
    y = (rng.uniform(size=m) < 0.5).astype(float)

    def cost(t, wrong=1.0):
        h = 1 / (1 + np.exp(-X @ t))
        return -(y @ np.log(h) + (1 - y) @ np.log(1 - h)) / m, wrong * X.T @ (h - y) / m
    return cost, t0


def noisy_logistic():
    """The classic regularized logistic regression on ex2data2-like data (degree-6 features of points within
    radius 1.2), at theta = ones: z reaches 14, where log(1 - sigmoid(z)) cancels."""
    rng = np.random.default_rng(1)
    m = 118
    angle, radius = rng.uniform(0, 2 * np.pi, m), 1.2 * np.sqrt(rng.uniform(0, 1, m))
    u, v = radius * np.cos(angle), radius * np.sin(angle)
    X = np.stack([u ** (i - j) * v ** j for i in range(7) for j in range(i + 1)], axis=1)
    y = (u ** 2 + v ** 2 < 0.5).astype(float)

    def cost(t, lam=10.0):
        h = 1 / (1 + np.exp(-X @ t))
        J = -(y @ np.log(h) + (1 - y) @ np.log(1 - h)) / m + lam / (2 * m) * np.sum(t[1:] ** 2)
        g = X.T @ (h - y) / m
        g[1:] += lam / m * t[1:]
        return J, g

    return cost, np.ones(X.shape[1])
