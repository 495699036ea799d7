"""Shared fixtures.  The tests import the *installed* layerkit; tests/ and examples/ are put on sys.path so
that helpers and example scripts can be imported by module name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import layerkit

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests", ROOT / "examples"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture
def debug_problem():
    """The course's 3-5-3 debug network (m = 5) with its inputs and 0-based labels."""
    net = layerkit.Network.from_sizes([3, 5, 3], init="debug")
    X, y = layerkit.debug_data(5, 3)
    return net, X, y
