"""A hand-written course-style cost function with a classic regularization bug, and layerkit's diagnosis.

The network is the course's 3-5-3 debug network (m = 5 examples, lambda = 3).  The penalty must leave both
bias columns out, but this cost penalizes the second layer's bias column too -- the gradient, correctly,
does not.  The symptoms are the ones that cost people days:

* the mismatch appears only when lambda > 0, and only in column 0 of Theta2;
* there, numerical - analytical = (lambda/m) * Theta2[:, 0], exactly;
* shrinking the step changes nothing (central differences with h = 1e-4 agree to ~1e-11 elsewhere).

(A cost that subtracts the *difference* of the two bias norms, ``-(|b1|^2 - |b2|^2)``, where it should
subtract their sum has the same symptoms with twice the factor, 2 lambda/m.)

Run:  python examples/forum_bug.py
"""

from __future__ import annotations

import numpy as np

import layerkit

LAMBDA = 3.0
SIZES = (3, 5, 3)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def make_problem():
    """The course's debug data and weights: X (5, 3), 0-based labels y, unrolled [Theta1(:); Theta2(:)] in C order."""
    X, y = layerkit.debug_data(m=5, n_features=SIZES[0])
    net = layerkit.Network.from_sizes(SIZES, init="debug")
    return X, y, net.get_params()


def nn_cost_function(nn_params, X, y, lam):
    """Cost and gradient of the two-layer sigmoid network, written as in the course (with the bug)."""
    n_in, n_hid, n_out = SIZES
    m = X.shape[0]
    Theta1 = nn_params[: n_hid * (n_in + 1)].reshape(n_hid, n_in + 1)
    Theta2 = nn_params[n_hid * (n_in + 1):].reshape(n_out, n_hid + 1)
    Y = np.eye(n_out)[y]

    a1 = np.hstack([np.ones((m, 1)), X])
    z2 = a1 @ Theta1.T
    a2 = np.hstack([np.ones((m, 1)), sigmoid(z2)])
    h = sigmoid(a2 @ Theta2.T)

    J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / m
    # BUG: Theta2's bias column is penalized; it should be np.sum(Theta2[:, 1:] ** 2)
    J += lam / (2 * m) * (np.sum(Theta1[:, 1:] ** 2) + np.sum(Theta2 ** 2))

    d3 = h - Y
    d2 = (d3 @ Theta2[:, 1:]) * sigmoid(z2) * (1 - sigmoid(z2))
    Theta1_grad = d2.T @ a1 / m
    Theta2_grad = d3.T @ a2 / m
    Theta1_grad[:, 1:] += lam / m * Theta1[:, 1:]
    Theta2_grad[:, 1:] += lam / m * Theta2[:, 1:]
    return J, np.concatenate([Theta1_grad.ravel(), Theta2_grad.ravel()])


def problem():
    """The check as a :class:`layerkit.Problem`, for ``layerkit check examples/forum_bug.py:problem``."""
    X, y, theta = make_problem()
    return layerkit.Problem.from_function(
        lambda t: nn_cost_function(t, X, y, LAMBDA), theta,
        blocks={"Theta1": (SIZES[1], SIZES[0] + 1), "Theta2": (SIZES[2], SIZES[1] + 1)},
        lambda_=LAMBDA, m=X.shape[0], name="forum bug (lambda = 3)")


def main() -> layerkit.Report:
    X, y, theta = make_problem()
    blocks = {"Theta1": (SIZES[1], SIZES[0] + 1), "Theta2": (SIZES[2], SIZES[1] + 1)}
    for lam in (0.0, LAMBDA):
        report = layerkit.check_function(lambda t: nn_cost_function(t, X, y, lam), theta, blocks=blocks,
                                         step=1e-4, lambda_=lam, m=X.shape[0])
        print(f"--- lambda = {lam:g}")
        print(report)
    return report


if __name__ == "__main__":
    main()
