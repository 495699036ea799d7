"""A zoo of hand-written course-style cost functions (exercise 4 ports), correct and with the bugs people
report, in several shapes, orders and lambdas.  ``make(bug, ...)`` returns ``(fun, theta0, blocks, lambda, m,
order)`` for :func:`layerkit.check_function`."""

from __future__ import annotations

import numpy as np

BUGS = ("none", "bias-regularized-in-gradient", "bias-regularized-in-cost", "penalty-on-wrong-columns",
        "penalty-starts-late", "bias-offset", "no-1-over-m", "data-times-2", "gradient-times-2",
        "penalty-halved", "penalty-over-2m-twice", "data-missing", "dropped-example", "sign-flip")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def make(bug: str = "none", sizes=(3, 5, 3), m: int = 7, lam: float = 1.0, order: str = "C", seed: int = 0,
         cost_shape: str = "scalar", dropped: int = 2):
    n_in, n_hid, n_out = sizes
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_in))
    y = rng.integers(0, n_out, m)
    shapes = {"Theta1": (n_hid, n_in + 1), "Theta2": (n_out, n_hid + 1)}
    split = n_hid * (n_in + 1)
    theta0 = rng.uniform(-0.6, 0.6, split + n_out * (n_hid + 1))

    def fun(params):
        p = np.asarray(params).reshape(-1)
        T1 = p[:split].reshape(shapes["Theta1"], order=order)
        T2 = p[split:].reshape(shapes["Theta2"], order=order)
        Y = np.eye(n_out)[y]
        a1 = np.hstack([np.ones((m, 1)), X])
        z2 = a1 @ T1.T
        a2 = np.hstack([np.ones((m, 1)), _sigmoid(z2)])
        h = _sigmoid(a2 @ T2.T)
        J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / m
        pen2 = np.sum(T2 ** 2) if bug == "bias-regularized-in-cost" else np.sum(T2[:, 1:] ** 2)
        J += lam / (2 * m) * (np.sum(T1[:, 1:] ** 2) + pen2)
        d3 = h - Y
        d2 = (d3 @ T2[:, 1:]) * _sigmoid(z2) * (1 - _sigmoid(z2))
        if bug == "dropped-example":  # the loop over examples skips one
            keep = np.arange(m) != dropped
            G1, G2 = d2[keep].T @ a1[keep] / m, d3[keep].T @ a2[keep] / m
        elif bug == "no-1-over-m":
            G1, G2 = d2.T @ a1, d3.T @ a2
        elif bug == "data-missing":
            G1, G2 = np.zeros(shapes["Theta1"]), np.zeros(shapes["Theta2"])
        else:
            G1, G2 = d2.T @ a1 / m, d3.T @ a2 / m
        if bug == "data-times-2":
            G2 = 2 * G2
        k = lam / m
        if bug == "penalty-halved":
            k = lam / (2 * m)
        if bug == "penalty-over-2m-twice":
            k = lam / (2 * m) / (2 * m)
        if bug == "penalty-on-wrong-columns":  # Theta[:, :-1] where Theta[:, 1:] was meant
            G1[:, :-1] += k * T1[:, :-1]
            G2[:, :-1] += k * T2[:, :-1]
        elif bug == "penalty-starts-late":  # Octave's 2:end ported as [:, 2:]
            G1[:, 2:] += k * T1[:, 2:]
            G2[:, 2:] += k * T2[:, 2:]
        else:
            G1[:, 1:] += k * T1[:, 1:]
            G2[:, 1:] += k * T2[:, 1:]
        if bug == "bias-regularized-in-gradient":
            G1[:, 0] += k * T1[:, 0]
        if bug == "bias-offset":
            G2[:, 0] += lam / m
        if bug == "gradient-times-2":
            G2 = 2 * G2
        if bug == "sign-flip":
            G2 = -G2
        grad = np.concatenate([G1.ravel(order=order), G2.ravel(order=order)])
        if cost_shape == "(1,)":
            J = np.array([J])
        elif cost_shape == "(1, 1)":
            J = np.array([[J]])
            grad = grad.reshape(-1, 1)
        return J, grad

    return fun, theta0, shapes, lam, m, order


def gradient_in_c_order(fun, blocks):
    """``fun`` (a port reading theta in Fortran order) with its gradient re-unrolled in C order, block by block:
    the cost and the gradient disagree on the layout."""
    def mixed(t):
        J, g = fun(t)
        out, start = [], 0
        for shape in blocks.values():
            size = shape[0] * shape[1]
            out.append(g[start:start + size].reshape(shape, order="F").ravel(order="C"))
            start += size
        return J, np.concatenate(out)
    return mixed
