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
