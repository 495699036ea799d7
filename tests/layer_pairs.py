"""CS231n-style layer functions, correct and with the classic slips, for tests/test_backward.py."""

import numpy as np


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def affine_backward_db_not_summed(dout, cache):
    dx, dw, _ = affine_backward(dout, cache)
    return dx, dw, dout


def affine_backward_db_mean(dout, cache):
    dx, dw, _ = affine_backward(dout, cache)
    return dx, dw, dout.mean(axis=0)


def affine_backward_dw_transposed(dout, cache):
    dx, dw, db = affine_backward(dout, cache)
    return dx, dw.T, db


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache):
    return (dout * (cache > 0),)


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, (xhat, gamma, var, eps)


def batchnorm_backward(dout, cache):
    xhat, gamma, var, eps = cache
    m = dout.shape[0]
    dxhat = dout * gamma
    dx = (m * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0)) / (m * np.sqrt(var + eps))
    return {"x": dx, "gamma": (dout * xhat).sum(0), "beta": dout.sum(0)}


def batchnorm_backward_no_mean_terms(dout, cache):
    xhat, gamma, var, eps = cache
    grads = batchnorm_backward(dout, cache)
    grads["x"] = dout * gamma / np.sqrt(var + eps)  # as if mean and variance were constants
    return grads
