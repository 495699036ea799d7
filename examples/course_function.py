"""A course cost function as it is written, with nothing else: ``layerkit check`` builds the course's own
gradient-check problem for it (the 3-5-3 debug network, m = 5), at lambda = 0 and 3.

Its bug is the forum's classic: Theta1's gradient is never divided by m.  The signature is the forum's own
(parameters recognised by name, in any order)::

    layerkit check examples/course_function.py:nnCost
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def nnCost(nn_params, X, y, lambda_, input_layer_size, hidden_layer_size, num_labels):  # noqa: N802
    """Cost and gradient of the exercise's network; parameters unrolled in Fortran order, labels 1..K."""
    split = hidden_layer_size * (input_layer_size + 1)
    Theta1 = nn_params[:split].reshape((hidden_layer_size, input_layer_size + 1), order="F")
    Theta2 = nn_params[split:].reshape((num_labels, hidden_layer_size + 1), order="F")
    m = X.shape[0]
    Y = np.eye(num_labels)[np.asarray(y).reshape(-1) - 1]
    a1 = np.hstack([np.ones((m, 1)), X])
    z2 = a1 @ Theta1.T
    a2 = np.hstack([np.ones((m, 1)), sigmoid(z2)])
    h = sigmoid(a2 @ Theta2.T)
    J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / m
    J += lambda_ / (2 * m) * (np.sum(Theta1[:, 1:] ** 2) + np.sum(Theta2[:, 1:] ** 2))
    d3 = h - Y
    d2 = (d3 @ Theta2[:, 1:]) * sigmoid(z2) * (1 - sigmoid(z2))
    Theta1_grad = d2.T @ a1            # BUG: should be d2.T @ a1 / m
    Theta2_grad = d3.T @ a2 / m
    Theta1_grad[:, 1:] += lambda_ / m * Theta1[:, 1:]
    Theta2_grad[:, 1:] += lambda_ / m * Theta2[:, 1:]
    return J, np.concatenate([Theta1_grad.ravel(order="F"), Theta2_grad.ravel(order="F")])
