"""Reference implementations shared by several test modules."""

from __future__ import annotations

import numpy as np

RNG = np.random.default_rng(42)
A = RNG.standard_normal((6, 6))
Q = A @ A.T + np.eye(6)
B = RNG.standard_normal(6)
XL = RNG.standard_normal((30, 5))
YL = (RNG.random(30) < 0.5).astype(float)


def quadratic(x):
    return 0.5 * x @ Q @ x - B @ x, Q @ x - B


def reference_cost(thetas, X, Y, lam):
    """Cost of a sigmoid network from scratch, with plain log(), for small well-conditioned cases."""
    m = X.shape[0]
    a = X
    for T in thetas:
        a = 1 / (1 + np.exp(-(np.hstack([np.ones((m, 1)), a]) @ T.T)))
    J = np.sum(-Y * np.log(a) - (1 - Y) * np.log(1 - a)) / m
    return J + lam / (2 * m) * sum(np.sum(T[:, 1:] ** 2) for T in thetas)


def rosen_pair(x):
    """Rosenbrock cost and gradient; a module-level function, so process pools can pickle it."""
    from scipy.optimize import rosen, rosen_der

    return rosen(x), rosen_der(x)


def course_cost(theta, X, Y, lam, sizes, bug=None):
    """A course-style cost of a Dense/Sigmoid network with an optional deliberate bug.

    bug: None, "bias2" (the last layer's bias column penalized in the cost only) or "scale1" (the first
    block's gradient twice too large).
    """
    m = X.shape[0]
    thetas, start = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        size = n_out * (n_in + 1)
        thetas.append(theta[start:start + size].reshape(n_out, n_in + 1))
        start += size
    acts, a = [], X
    for T in thetas:
        a1 = np.hstack([np.ones((m, 1)), a])
        acts.append(a1)
        a = 1 / (1 + np.exp(-(a1 @ T.T)))
    J = np.sum(-Y * np.log(a) - (1 - Y) * np.log(1 - a)) / m
    J += lam / (2 * m) * sum(np.sum(T[:, 1:] ** 2) for T in thetas)
    if bug == "bias2":
        J += lam / (2 * m) * np.sum(thetas[-1][:, 0] ** 2)
    d = a - Y
    grads = []
    for T, a1 in zip(reversed(thetas), reversed(acts)):
        G = d.T @ a1 / m
        G[:, 1:] += lam / m * T[:, 1:]
        grads.append(G)
        s = a1[:, 1:]
        d = (d @ T[:, 1:]) * s * (1 - s)
    grads = grads[::-1]
    if bug == "scale1":
        grads[0] = 2 * grads[0]
    return J, np.concatenate([G.ravel() for G in grads])


class CourseCost:
    """Picklable ``theta -> (cost, grad)`` of :func:`course_cost` with fixed data."""

    def __init__(self, X, Y, lam, sizes, bug=None, delay=0.0):
        self.X, self.Y, self.lam, self.sizes, self.bug, self.delay = X, Y, lam, sizes, bug, delay

    def __call__(self, theta):
        if self.delay:
            import time

            time.sleep(self.delay)
        return course_cost(theta, self.X, self.Y, self.lam, self.sizes, self.bug)


class PlainTanh:
    """``tanh`` written without layerkit's help: no base class, no rule, no error of its own before forward."""

    param_shapes: dict = {}
    params: dict = {}
    grads: dict = {}

    def bind(self, params, grads):
        pass

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy):
        return dy * (1 - self._y**2)
