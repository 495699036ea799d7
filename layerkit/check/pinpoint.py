"""Pinpointing one wrong entry from the mismatches of directional tests, before any group testing.

A directional test along ``v`` measures ``m = n - a`` (numerical minus analytic derivative along ``v``) to
within its tolerance ``tau``: ``|m - e . v| <= tau``, with ``e`` the gradient's error per entry.  When a single
entry ``j`` is wrong, ``m = e_j v_j`` for every test, so each test leaves every candidate ``j`` an interval of
values its error can take::

    (m - tau) / v_j  <=  e_j  <=  (m + tau) / v_j      (bounds swapped where v_j < 0; |m| <= tau where v_j = 0)

A candidate survives while the intersection of its intervals is not empty (:func:`narrow`).  Two random
whole-vector directions keep only the entries whose ratio ``u_2j / u_1j`` matches the measured one; each
further test, along a random direction over the survivors, keeps a fraction of about ``4 tau / |m|`` of them,
and ``|m| / tau`` grows as they shrink (``|v_j| ~ 1 / sqrt(survivors)``).  One wrong entry among a million is
pinned in about five such tests, against some twenty of bisection.  The search stops when a test keeps more
than half of the survivors twice in a row (the mismatch is too weak against the tolerances to beat
bisection) or after :data:`MAX_ROUNDS` tests.

A pin is confirmed by the cost alone: the coordinate test of each surviving entry (at most :data:`FEW`) must
fail, with every safeguard of a test that carries a verdict, and the errors ``e_j`` measured there must
explain every whole-vector test, ``|m_k - sum_j e_j u_kj| <= tau_k + sum_j tau_j |u_kj|`` (:func:`explains`):
no other entry then has an error those tests could see, which is what a passing check promises of every
entry.  Anything else -- two wrong entries (no candidate survives), an error spread over a block, a test
whose model misjudged its error -- ends the search without a result and group testing
(:mod:`layerkit.check.localize`) takes over.  The search itself never names an entry; only a coordinate
test does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..numerics import Direction

#: Most tests the search spends before it gives up on pinning.
MAX_ROUNDS = 12
#: Survivors measured one by one (a coordinate test each).
FEW = 3

#: Candidates with the interval of values their error can take: ``(entries, low, high)``.
Candidates = tuple[NDArray, NDArray, NDArray]


def narrow(tests: list[Any], candidates: Candidates) -> Candidates:
    """The candidates consistent with ``tests`` (each with ``direction``, ``numerical``, ``analytical``,
    ``tolerance``) under the hypothesis that one entry alone is wrong (module docstring).  A test whose
    mismatch or tolerance is not finite constrains nothing."""
    entries, low, high = candidates
    low, high = low.copy(), high.copy()
    for t in tests:
        m, tau = t.numerical - t.analytical, t.tolerance
        if not (math.isfinite(m) and math.isfinite(tau)):
            continue
        d = t.direction
        v = np.zeros(entries.size)
        inside = (entries >= d.lo) & (entries < d.hi)
        v[inside] = np.asarray(d.u, dtype=np.float64)[entries[inside] - d.lo]
        zero = v == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (m - tau) / v, (m + tau) / v
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        unmoved = abs(m) <= tau  # an entry the test does not move can be wrong only if the test passes
        lo[zero], hi[zero] = (-np.inf, np.inf) if unmoved else (np.inf, -np.inf)
        np.maximum(low, lo, out=low)
        np.minimum(high, hi, out=high)
        keep = low <= high
        entries, low, high = entries[keep], low[keep], high[keep]
    return entries, low, high


def explains(leaves: list[Any], tests: list[Any]) -> bool:
    """Whether the coordinate tests ``leaves`` account for every test of ``tests``: the mismatch left once
    their errors are taken out is within the test's tolerance plus theirs (module docstring)."""
    for t in tests:
        d = t.direction
        rest, slack = t.numerical - t.analytical, t.tolerance
        for leaf in leaves:
            j = leaf.direction.lo
            if d.lo <= j < d.hi:
                w = float(d.u[j - d.lo])
                rest -= (leaf.numerical - leaf.analytical) * w
                slack += leaf.tolerance * abs(w)
        if not abs(rest) <= slack:
            return False
    return True


def pinpoint(tester: Any, first: list[Any]) -> list[Any] | None:
    """The wrong entries' coordinate tests when one entry explains the whole-vector ``first`` tests (module
    docstring), else None.  ``tester`` runs tests: ``measurements(dirs, stage)`` (raw estimates),
    ``tests(dirs, stage, screen=False)`` (with every safeguard), ``on_entries(flat, rng)`` with its
    ``search_rng``, ``affordable(n)``."""
    size = tester.x.size
    candidates = narrow(first, (np.arange(size), np.full(size, -np.inf), np.full(size, np.inf)))
    rounds = slow = 0
    while FEW < candidates[0].size:
        if rounds == MAX_ROUNDS or slow == 2 or not tester.affordable(1):
            return None
        before = candidates[0].size
        d = tester.on_entries(candidates[0], tester.search_rng)
        candidates = narrow(tester.measurements([d], "localize"), candidates)
        rounds += 1
        slow = slow + 1 if 2 * candidates[0].size > before else 0
    if not candidates[0].size or not tester.affordable(candidates[0].size):
        return None
    leaves = tester.tests([Direction(int(j), int(j) + 1, np.ones(1)) for j in candidates[0]], "localize",
                          screen=False)
    wrong = [t for t in leaves if not t.passed]
    return wrong if wrong and explains(wrong, first) else None
