"""The sigmoid (one-vs-all) cross-entropy and its L2 penalty, as pure functions of arrays.

Shapes: logits ``z`` and targets ``Y`` are ``(m, K)``; ``m`` is the number of examples.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .activations import sigmoid, softplus


def cross_entropy_from_logits(z: NDArray, Y: NDArray) -> tuple[NDArray, NDArray]:
    """Summed cross-entropy and its gradient with respect to the logits, both *not* divided by ``m``.

    Returns
    -------
    total : scalar array
        ``sum_ik [ -Y log s - (1 - Y) log(1 - s) ]`` with ``s = sigmoid(z)``, computed as
        ``sum_ik [ Y softplus(-z) + (1 - Y) softplus(z) ]``: finite when ``s`` rounds to 0 or 1, and without
        the cancellation of the equal ``softplus(z) - Y z``, which for ``z = 13``, ``Y = 1`` subtracts two
        numbers near 13 to get 2e-6 and keeps only a few bits of it in float32.
    dz : NDArray, shape (m, K)
        ``sigmoid(z) - Y``, formed as ``(1 - Y) sigmoid(z) - Y sigmoid(-z)``: for 0/1 targets one term is
        zero and the other is computed to full relative accuracy, where ``sigmoid(z) - 1`` would keep only the
        rounding of ``sigmoid(z)`` near 1.
    """
    total = np.sum(Y * softplus(-z) + (1 - Y) * softplus(z))
    return total, (1 - Y) * sigmoid(z) - Y * sigmoid(-z)


def cross_entropy_from_probabilities(h: NDArray, Y: NDArray) -> tuple[NDArray, NDArray]:
    """As :func:`cross_entropy_from_logits`, for outputs ``h`` that are already probabilities in (0, 1).

    Used when the network does not end with a ``Sigmoid``; it is only as stable as ``h`` is far from 0 and 1.
    Returns the summed loss and ``dL/dh = (h - Y) / (h (1 - h))``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        total = -np.sum(Y * np.log(h) + (1 - Y) * np.log(1 - h))
        dh = (h - Y) / (h * (1 - h))
    return total, dh
