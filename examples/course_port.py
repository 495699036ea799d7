"""A course port as people write it: Octave style, at the course's size, with the classic bug.

``nnCostFunction`` below is written the way ports of the classic course's exercise 4 are: the parameters come
unrolled in Fortran order (``[Theta1(:); Theta2(:)]``), the cost is a (1, 1) matrix, the gradient a column,
and ``lambda`` is an argument.  Its bug: the penalty includes the bias column of Theta2, which the
gradient (rightly) leaves out.  The network is 400-25-10 with m = 5000 random examples: a plain function,
10,285 parameters, about 20 ms per evaluation, so a full check would take about 7 minutes; layerkit's
default mode notices and checks directions instead, then localizes by rows and columns.

    layerkit check examples/course_port.py:problem                 # lambda = 1
    layerkit check examples/course_port.py:problem --lambda 0      # the bug disappears with lambda = 0
"""

from __future__ import annotations

import numpy as np

import layerkit

INPUT, HIDDEN, LABELS, M = 400, 25, 10, 5000


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def nnCostFunction(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_):  # noqa: N802
    """The exercise's cost and gradient; parameters unrolled in Fortran (column-major) order."""
    nn_params = np.asarray(nn_params).reshape(-1)
    split = hidden_layer_size * (input_layer_size + 1)
    Theta1 = nn_params[:split].reshape((hidden_layer_size, input_layer_size + 1), order="F")
    Theta2 = nn_params[split:].reshape((num_labels, hidden_layer_size + 1), order="F")
    m = X.shape[0]
    Y = np.eye(num_labels)[y]

    a1 = np.hstack([np.ones((m, 1)), X])
    z2 = a1 @ Theta1.T
    a2 = np.hstack([np.ones((m, 1)), sigmoid(z2)])
    h = sigmoid(a2 @ Theta2.T)

    J = (1 / m) * np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h))
    # BUG: Theta2's bias column is penalized too; it should be np.sum(Theta2[:, 1:] ** 2)
    J = J + lambda_ / (2 * m) * (np.sum(Theta1[:, 1:] ** 2) + np.sum(Theta2 ** 2))

    d3 = h - Y
    d2 = (d3 @ Theta2[:, 1:]) * sigmoid(z2) * (1 - sigmoid(z2))
    Theta1_grad = d2.T @ a1 / m
    Theta2_grad = d3.T @ a2 / m
    Theta1_grad[:, 1:] += lambda_ / m * Theta1[:, 1:]
    Theta2_grad[:, 1:] += lambda_ / m * Theta2[:, 1:]
    grad = np.concatenate([Theta1_grad.ravel(order="F"), Theta2_grad.ravel(order="F")])
    return np.array([[J]]), grad.reshape(-1, 1)


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.random((M, INPUT))
    y = rng.integers(0, LABELS, M)
    theta = layerkit.Network.from_sizes([INPUT, HIDDEN, LABELS], seed=seed).get_params(order="F")
    return X, y, theta


def problem(lambda_: float = 1.0) -> layerkit.Problem:
    """The check, with the two-line wrapper every port needs; ``--lambda`` sets ``lambda_``."""
    X, y, theta = data()
    return layerkit.Problem.from_function(
        lambda t: nnCostFunction(t, INPUT, HIDDEN, LABELS, X, y, lambda_), theta,
        blocks={"Theta1": (HIDDEN, INPUT + 1), "Theta2": (LABELS, HIDDEN + 1)}, order="F",
        lambda_=lambda_, m=M, name=f"course port, Octave order (lambda = {lambda_:g})")
