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


def conv_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation of ``x`` (N, C, H, W) with ``w`` (F, C, HH, WW), as CS231n's conv_forward_naive."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    out = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, w))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, stride, pad)


def conv_backward(dout, cache, flip=False):
    x, w, b, stride, pad = cache
    F, _, HH, WW = w.shape
    k = w[:, :, ::-1, ::-1] if flip else w  # flip: the input gradient with the kernel not flipped back
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    _, _, Ho, Wo = dout.shape
    for i in range(Ho):
        for j in range(Wo):
            rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
            dw += np.tensordot(dout[:, :, i, j], xp[:, :, rows, cols], axes=([0], [0]))
            dxp[:, :, rows, cols] += np.tensordot(dout[:, :, i, j], k, axes=([1], [0]))
    return dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]], dw, dout.sum(axis=(0, 2, 3))


def conv_backward_flipped(dout, cache):
    return conv_backward(dout, cache, flip=True)


def conv_backward_shifted(dout, cache):
    """Another slip of the input gradient, not a flipped kernel: the padded gradient cropped one pixel off."""
    dx, dw, db = conv_backward(dout, cache)
    return np.roll(dx, 1, axis=3), dw, db


def max_pool_forward(x, size=2, stride=None):
    s = size if stride is None else stride
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - size) // s, 1 + (W - size) // s
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * s:i * s + size, j * s:j * s + size].max(axis=(2, 3))
    return out, (x, size, s)


def max_pool_backward(dout, cache, how="max"):
    x, size, s = cache
    dx = np.zeros_like(x)
    _, _, Ho, Wo = dout.shape
    for i in range(Ho):
        for j in range(Wo):
            window = x[:, :, i * s:i * s + size, j * s:j * s + size]
            g = dout[:, :, i, j][:, :, None, None]
            if how == "max":
                part = (window == window.max(axis=(2, 3), keepdims=True)) * g
            elif how == "spread":  # spread evenly over the window (average pooling's gradient)
                part = np.broadcast_to(g / (size * size), window.shape)
            else:  # "copied": the upstream value given to every entry of the window
                part = np.broadcast_to(g, window.shape)
            dx[:, :, i * s:i * s + size, j * s:j * s + size] += part
    return (dx,)


def max_pool_backward_spread(dout, cache):
    return max_pool_backward(dout, cache, "spread")


def max_pool_backward_copied(dout, cache):
    return max_pool_backward(dout, cache, "copied")


def avg_pool_forward(x, size=2):
    N, C, H, W = x.shape
    out = x[:, :, :H // size * size, :W // size * size].reshape(N, C, H // size, size, W // size, size).mean(axis=(3, 5))
    return out, (x.shape, size)


def avg_pool_backward(dout, cache):
    shape, size = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    Ho, Wo = dout.shape[2], dout.shape[3]
    dx[:, :, :Ho * size, :Wo * size] = np.repeat(np.repeat(dout, size, axis=2), size, axis=3) / (size * size)
    return (dx,)


def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Batch normalization per channel of ``x`` (N, C, H, W), over (N, H, W)."""
    N, C, H, W = x.shape
    out, (xhat, g, var, e) = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, eps)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), (xhat, g, var, e, x.shape)


def spatial_batchnorm_backward(dout, cache, bug=None):
    xhat, gamma, var, eps, shape = cache
    N, C, H, W = shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, C)
    grads = (batchnorm_backward_no_mean_terms if bug else batchnorm_backward)(d, (xhat, gamma, var, eps))
    grads["x"] = grads["x"].reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return grads


def spatial_batchnorm_backward_no_mean_terms(dout, cache):
    return spatial_batchnorm_backward(dout, cache, bug=True)


def batchnorm_backward_no_variance_term(dout, cache):
    """The mean's term kept, the variance's left out."""
    xhat, gamma, var, eps = cache
    grads = batchnorm_backward(dout, cache)
    dxhat = dout * gamma
    grads["x"] = (dxhat - dxhat.mean(0)) / np.sqrt(var + eps)
    return grads


def batchnorm_backward_no_mean_term(dout, cache):
    """The variance's term kept, the mean's left out."""
    xhat, gamma, var, eps = cache
    grads = batchnorm_backward(dout, cache)
    dxhat = dout * gamma
    grads["x"] = (dxhat - xhat * (dxhat * xhat).mean(0)) / np.sqrt(var + eps)
    return grads
