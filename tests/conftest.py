"""Shared fixtures and reference implementations for the tests."""

from __future__ import annotations

import numpy as np
import pytest

import layerkit


@pytest.fixture
def debug_problem():
    """The course's 3-5-3 debug network (m = 5) with its inputs and 0-based labels."""
    net = layerkit.Network.from_sizes([3, 5, 3], init="debug")
    X, y = layerkit.debug_data(5, 3)
    return net, X, y


def reference_cost(thetas, X, Y, lam):
    """Cost of a sigmoid network from scratch, with plain log(), for small well-conditioned cases."""
    m = X.shape[0]
    a = X
    for T in thetas:
        a = 1 / (1 + np.exp(-(np.hstack([np.ones((m, 1)), a]) @ T.T)))
    J = np.sum(-Y * np.log(a) - (1 - Y) * np.log(1 - a)) / m
    return J + lam / (2 * m) * sum(np.sum(T[:, 1:] ** 2) for T in thetas)
