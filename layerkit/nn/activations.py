"""Numerically stable elementwise functions on real and complex arrays.

They take real arrays (float32 or float64, dtype preserved) and complex arrays (used by the complex-step
check).  Branches are chosen by the sign of the real part so that ``exp`` is only ever taken of a number
with non-positive real part: no overflow for any finite input.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit


def sigmoid(z: NDArray) -> NDArray:
    """Logistic function ``1 / (1 + exp(-z))``, stable for every finite ``z``; same dtype and shape as ``z``."""
    z = np.asarray(z)
    if not np.iscomplexobj(z):
        return expit(z)
    out = np.empty_like(z)
    pos = z.real >= 0
    e = np.exp(-z[pos])
    out[pos] = 1.0 / (1.0 + e)
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softplus(z: NDArray) -> NDArray:
    """``log(1 + exp(z))`` without overflow: ``max(z, 0) + log1p(exp(-|z|))``; same dtype as ``z``.

    Notes
    -----
    The sigmoid cross-entropy of a logit ``z`` against a target ``y`` is ``softplus(z) - y z``, since
    ``-log(sigmoid(z)) = softplus(-z) = softplus(z) - z``.  Working from ``z`` keeps it finite when the
    sigmoid saturates to exactly 0 or 1 in floating point.
    """
    z = np.asarray(z)
    if not np.iscomplexobj(z):
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    out = np.empty_like(z)
    pos = z.real > 0
    zp = z[pos]
    out[pos] = zp + np.log1p(np.exp(-zp))
    out[~pos] = np.log1p(np.exp(z[~pos]))
    return out
