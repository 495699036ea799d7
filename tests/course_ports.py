"""Course ports as people write them, for the zero-code course checks (tests/test_course.py and the CLI)."""

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _network(nn_params, n_in, n_hidden, n_labels, X, y, lam, order="F", base=1, bug=None):
    nn_params = np.asarray(nn_params).reshape(-1)
    split = n_hidden * (n_in + 1)
    T1 = nn_params[:split].reshape((n_hidden, n_in + 1), order=order)
    T2 = nn_params[split:].reshape((n_labels, n_hidden + 1), order=order)
    m = X.shape[0]
    Y = np.eye(n_labels)[np.asarray(y).reshape(-1).astype(int) - base]
    a1 = np.hstack([np.ones((m, 1)), X])
    z2 = a1 @ T1.T
    a2 = np.hstack([np.ones((m, 1)), _sigmoid(z2)])
    h = _sigmoid(a2 @ T2.T)
    J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / m
    J += lam / (2 * m) * (np.sum(T1[:, 1:] ** 2) + np.sum(T2[:, 1:] ** 2))
    d3 = h - Y
    d2 = (d3 @ T2[:, 1:]) * _sigmoid(z2) * (1 - _sigmoid(z2))
    G1 = d2.T @ a1 / (1 if bug == "no-1-over-m" else m)
    G2 = d3.T @ a2 / m
    G1[:, 1:] += lam / m * T1[:, 1:]
    G2[:, 1:] += lam / m * T2[:, 1:]
    return J, np.concatenate([G1.ravel(order=order), G2.ravel(order=order)])


def nnCost(nn_params, X, y, lambda_, input_layer_size, hidden_layer_size, num_labels):  # noqa: N802
    """The forum's port: Fortran order, 1-based labels, Theta1's gradient without its 1/m."""
    return _network(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_, bug="no-1-over-m")


def nnCostFunction(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_):  # noqa: N802
    """A correct Octave-order port (the course's own signature)."""
    return _network(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_)


def nn_cost_c_order(params, input_layer_size, hidden_layer_size, num_labels, X, y, lam):
    """A correct Python port: C order, 0-based labels."""
    return _network(params, input_layer_size, hidden_layer_size, num_labels, X, y, lam, order="C", base=0)


def nn_cost_column(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lmbda):
    """A correct port returning MATLAB shapes: a (1, 1) cost and a column gradient."""
    J, g = _network(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lmbda)
    return np.array([[J]]), g.reshape(-1, 1)


def costFunctionReg(theta, X, y, lambda_):  # noqa: N802
    """ex2's regularized logistic regression, with theta[0] regularized in the gradient (the bug)."""
    m = y.size
    h = _sigmoid(X @ theta)
    J = -(y @ np.log(h) + (1 - y) @ np.log(1 - h)) / m + lambda_ / (2 * m) * np.sum(theta[1:] ** 2)
    return J, X.T @ (h - y) / m + lambda_ / m * theta


def linearRegCostFunction(X, y, theta, lam):  # noqa: N802
    """ex5's regularized linear regression, correct, in its own argument order."""
    m = y.size
    r = X @ theta - y
    g = X.T @ r / m
    g[1:] += lam / m * theta[1:]
    return r @ r / (2 * m) + lam / (2 * m) * np.sum(theta[1:] ** 2), g


def cost_with_extras(theta, X, y, lambda_, alpha):
    """Not a course signature: an argument no role names."""
    return costFunctionReg(theta, X, y, lambda_)


REGRESSION_BUGS = ("cost-reg-intercept", "grad-reg-intercept", "no-1-over-m", "penalty-halved", "sign-flip",
                   "data-missing", "penalty-missing", "times-2", "penalty-over-2m", "bias-offset")


def regression_port(bug=None):
    """ex2's ``costFunctionReg(theta, X, y, lambda_)`` with one of :data:`REGRESSION_BUGS` (None: correct)."""
    def costFunctionReg(theta, X, y, lambda_):  # noqa: N802
        m = y.size
        h = _sigmoid(X @ theta)
        pen = np.sum(theta ** 2) if bug == "cost-reg-intercept" else np.sum(theta[1:] ** 2)
        J = -(y @ np.log(h) + (1 - y) @ np.log(1 - h)) / m + lambda_ / (2 * m) * pen
        data, k = X.T @ (h - y) / m, lambda_ / m
        reg = k * theta if bug == "grad-reg-intercept" else np.r_[0.0, k * theta[1:]]
        data = {"no-1-over-m": m * data, "sign-flip": -data, "data-missing": 0 * data, "times-2": 2 * data}.get(bug, data)
        reg = {"penalty-halved": reg / 2, "penalty-missing": 0 * reg, "times-2": 2 * reg,
               "penalty-over-2m": reg / (2 * m), "bias-offset": reg + np.r_[k, np.zeros(theta.size - 1)]}.get(bug, reg)
        return J, data + reg
    return costFunctionReg
