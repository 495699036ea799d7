"""CS231n-style layer functions -- ``forward(...) -> (out, cache)`` and ``backward(dout, cache) -> grads`` --
each checked with ``layerkit.check_backward``; one with the classic batch-sum slip, whose report names it, and
the classic slips of the convolution, max pooling and batchnorm, each named by its finding code.

    python examples/layer_functions.py
"""

from __future__ import annotations

import functools

import numpy as np

import layerkit


def affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return (dout @ w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T @ dout, dout.sum(axis=0)


def affine_backward_mean(dout, cache):  # the planted bug: db averaged over the batch instead of summed
    dx, dw, _ = affine_backward(dout, cache)
    return dx, dw, dout.mean(axis=0)


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache):
    return (dout * (cache > 0),)


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Ho, Wo = 1 + (H + 2 * p - HH) // s, 1 + (W + 2 * p - WW) // s
    out = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, w))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, f, i, j] = np.sum(xp[n, :, i * s:i * s + HH, j * s:j * s + WW] * w[f]) + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param["stride"], conv_param["pad"]
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    N, _, Ho, Wo = dout.shape
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * s:i * s + HH, j * s:j * s + WW]
                    dw[f] += dout[n, f, i, j] * window
                    dxp[n, :, i * s:i * s + HH, j * s:j * s + WW] += dout[n, f, i, j] * w[f]
    return dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]], dw, dout.sum(axis=(0, 2, 3))


def conv_backward_kernel_flipped(dout, cache):  # a planted bug: dx uses the kernel rotated by 180 degrees
    x, w, b, conv_param = cache
    _, dw, db = conv_backward_naive(dout, cache)
    flipped = (x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, conv_param)
    return conv_backward_naive(dout, flipped)[0], dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    N, C, Ho, Wo = dout.shape
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, c, i * s:i * s + ph, j * s:j * s + pw]
                    r, q = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, i * s + r, j * s + q] += dout[n, c, i, j]
    return (dx,)


def max_pool_backward_spread(dout, cache):  # a planted bug: dout spread over the window, not routed to its max
    x, pool_param = cache
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            dx[:, :, i * s:i * s + ph, j * s:j * s + pw] += dout[:, :, i:i + 1, j:j + 1] / (ph * pw)
    return (dx,)


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, (xhat, gamma, var + eps)


def batchnorm_backward(dout, cache):
    xhat, gamma, v = cache
    N = dout.shape[0]
    dxhat = dout * gamma
    dx = (N * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0)) / (N * np.sqrt(v))
    return dx, (dout * xhat).sum(0), dout.sum(0)


def batchnorm_backward_constant_statistics(dout, cache):  # a planted bug: mean and variance taken as constants
    xhat, gamma, v = cache
    _, dgamma, dbeta = batchnorm_backward(dout, cache)
    return dout * gamma / np.sqrt(v), dgamma, dbeta


def dropout_forward(x, dropout_param):
    p, rng = dropout_param["p"], np.random.default_rng(dropout_param["seed"])
    mask = (rng.random(x.shape) < p) / p
    return x * mask, mask


def dropout_backward(dout, mask):
    return (dout * mask,)


def main() -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6, 6))
    checks = {
        "affine": (affine_forward, affine_backward,
                   {"x": rng.standard_normal((5, 2, 3)), "w": rng.standard_normal((6, 4)), "b": rng.standard_normal(4)}),
        "relu": (relu_forward, relu_backward, {"x": rng.standard_normal((5, 4)) + 0.1}),
        "conv": (functools.partial(conv_forward_naive, conv_param={"stride": 2, "pad": 1}), conv_backward_naive,
                 {"x": x, "w": rng.standard_normal((2, 3, 3, 3)), "b": rng.standard_normal(2)}),
        "max_pool": (functools.partial(max_pool_forward_naive,
                                       pool_param={"pool_height": 2, "pool_width": 2, "stride": 2}),
                     max_pool_backward_naive, {"x": x}),
        "batchnorm": (batchnorm_forward, batchnorm_backward,
                      {"x": rng.standard_normal((8, 5)), "gamma": rng.standard_normal(5), "beta": rng.standard_normal(5)}),
        "dropout": (functools.partial(dropout_forward, dropout_param={"p": 0.7, "seed": 3}), dropout_backward,
                    {"x": rng.standard_normal((6, 5))}),
    }
    results = {}
    for name, (forward, backward, inputs) in checks.items():
        report = layerkit.check_backward(forward, backward, inputs)
        results[name] = report.passed
        print(f"{name:10s} {report.verdict}")
    planted = layerkit.check_backward(affine_forward, affine_backward_mean, checks["affine"][2])
    print("\naffine with db averaged instead of summed:")
    print(planted)
    results["planted"] = [f.code for f in planted.findings]
    slips = {"conv with dx from the kernel rotated by 180 degrees": ("conv", conv_backward_kernel_flipped),
             "max_pool with dout spread over each window": ("max_pool", max_pool_backward_spread),
             "batchnorm with the batch mean and variance taken as constants": (
                 "batchnorm", batchnorm_backward_constant_statistics)}
    print("\nthe classic slips of the other layers:")
    results["slips"] = {}
    for what, (name, wrong) in slips.items():
        forward, _, inputs = checks[name]
        report = layerkit.check_backward(forward, wrong, inputs)
        results["slips"][name] = [f.code for f in report.findings]
        print(f"{what}:\n  {report.verdict}")
        for finding in report.findings:
            print(f"  {finding.code} [{', '.join(finding.blocks)}]: {finding.message}")
    return results


if __name__ == "__main__":
    main()
