"""Pinpointing one wrong entry from the directional mismatches (layerkit.check.pinpoint)."""

import numpy as np
import pytest
from attrs import frozen

from layerkit import check_function
from layerkit.check.pinpoint import explains, narrow
from layerkit.numerics import Direction


@frozen
class _Test:
    direction: Direction
    numerical: float
    analytical: float
    tolerance: float


def _measured(rng, e, lo, hi, noise):
    """A test along a random direction on ``[lo, hi)`` of an error vector ``e``, its error within ``noise``."""
    u = rng.standard_normal(hi - lo)
    u /= np.linalg.norm(u)
    m = float(e[lo:hi] @ u)
    tau = noise * (1 + abs(m)) if noise else 1e-300
    return _Test(Direction(lo, hi, u), m + tau * rng.uniform(-1, 1), 0.0, tau)


@pytest.mark.parametrize("seed", range(20))
def test_the_wrong_entry_always_survives_when_every_error_is_within_its_tolerance(seed):
    rng = np.random.default_rng(seed)
    P = int(rng.integers(2, 5000))
    e = np.zeros(P)
    j = int(rng.integers(P))
    e[j] = rng.choice([-1, 1]) * 10.0 ** rng.uniform(-6, 2)
    tests = [_measured(rng, e, 0, P, 10.0 ** rng.uniform(-9, -1)) for _ in range(2)]
    lo = int(rng.integers(0, j + 1))
    tests.append(_measured(rng, e, lo, int(rng.integers(j + 1, P + 1)), 1e-3))  # one restricted to a range
    entries, low, high = narrow(tests, (np.arange(P), np.full(P, -np.inf), np.full(P, np.inf)))
    assert j in entries
    k = int(np.flatnonzero(entries == j)[0])
    assert low[k] <= e[j] <= high[k]


def test_narrowing_keeps_few_entries_of_a_large_vector():
    rng = np.random.default_rng(3)
    P = 100_000
    e = np.zeros(P)
    e[777] = 0.5
    tests = [_measured(rng, e, 0, P, 1e-9) for _ in range(2)]
    entries, _, _ = narrow(tests, (np.arange(P), np.full(P, -np.inf), np.full(P, np.inf)))
    assert 777 in entries and entries.size < 50  # the ratio u_2j / u_1j alone singles it out


def test_a_second_wrong_entry_is_not_explained_away():
    rng = np.random.default_rng(0)
    P = 1000
    e = np.zeros(P)
    e[10], e[900] = 1.0, 0.5
    tests = [_measured(rng, e, 0, P, 1e-8) for _ in range(2)]
    leaf = _Test(Direction(10, 11, np.ones(1)), 1.0, 0.0, 1e-8)
    assert not explains([leaf], tests)
    other = _Test(Direction(900, 901, np.ones(1)), 0.5, 0.0, 1e-8)
    assert explains([leaf, other], tests)


def _quadratic(P, wrong, factor=1.01):
    rng = np.random.default_rng(1)
    d = rng.uniform(0.5, 2.0, P)
    x0 = rng.standard_normal(P)

    def fun(x):
        g = d * x + 1.0
        g[wrong] *= factor
        return 0.5 * float(np.sum(d * x * x)) + float(np.sum(x)), g

    return fun, x0


def test_one_wrong_entry_among_many_is_pinned_in_a_few_evaluations():
    fun, x0 = _quadratic(200_000, [123_456], factor=1.5)
    report = check_function(fun, x0, mode="directional")
    assert not report.passed
    assert [e.flat_index for e in report.worst] == [123_456]
    assert report.context["localized"] == ["x[123456]"]
    ev = report.context["evaluations"]
    assert "blocks" not in ev and ev["localize"] <= 24  # group testing would spend about 4 log2(P) = 70
    assert report.context["taylor"]["slope"] < 1.3 and "wrong" in report.step_verdict


def test_two_wrong_entries_are_left_to_group_testing_and_both_found():
    fun, x0 = _quadratic(4000, [17, 3210], factor=1.2)
    report = check_function(fun, x0, mode="directional")
    assert not report.passed
    assert sorted(e.flat_index for e in report.worst) == [17, 3210]
    assert "blocks" in report.context["evaluations"]  # the pin was not confirmed: the long way


def test_a_correct_gradient_still_passes_and_spends_nothing_on_a_search():
    fun, x0 = _quadratic(5000, [])
    report = check_function(fun, x0, mode="directional")
    assert report.passed and "localize" not in report.context["evaluations"]
