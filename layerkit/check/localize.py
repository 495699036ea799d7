"""Localization by group testing: the wrong entries of a directional check found without a full check.

A range of entries is *guilty* when a directional test restricted to it fails.  Inside a failing block:

* a 2-D block is searched by lines first (:func:`locate`): a wrong gradient is typically wrong along whole
  columns (the bias column, an input) or rows (one unit), so the columns are bisected with directions spanning
  every row, then the rows (when more than :data:`LINES` column ranges are guilty at once, the error is not
  confined to a few columns); the entries of each guilty line are then measured one by one, or the line is
  bisected when it is longer than :data:`LINE`.  Ten wrong entries in one column cost about
  ``2 log2(cols) + 10`` tests;
* anything else is bisected over contiguous ranges (:func:`bisect`): one wrong entry costs ``~4 log2(P)``
  evaluations.  Down at single entries the test *is* the coordinate check, so the wrong entries are reported
  with their block, index, numerical and analytical values, as a full check would.

When more than :data:`MAX_SPREAD` ranges are guilty at once (a whole block is wrong) the search stops and
says so; so it does when the next round would not fit the evaluation budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.layout import Block
from ..numerics import Direction

#: Guilty ranges at one bisection level beyond which the mismatch counts as spread over the block.
MAX_SPREAD = 32
#: A failing row or column of at most this many entries is measured entry by entry (see :func:`locate`).
LINE = 64
#: Most guilty ranges of columns (or rows) at one level before the search by lines gives up (:func:`locate`).
LINES = 4

#: A search's result: the guilty single entries' tests, and whether it stopped (spread, or the budget).
Found = tuple[list[Any], bool]


def locate(tester: Any, block: Block) -> Found:
    """The guilty single entries of a failing block (module docstring); ``tester`` runs directional tests
    (``tests(dirs, stage)``, ``on_entries(flat)``, ``direction(lo, hi)``, ``affordable(n)``, ``over_budget``)."""
    if not (len(block.shape) == 2 and min(block.shape) > 1):
        return bisect(tester, block.start, block.stop)
    grid = block.grid() + block.start
    for axis in (1, 0):
        lines = guilty_lines(tester, grid, axis)
        if lines is None:
            if tester.over_budget:
                return [], True
            continue
        leaves: list[Any] = []
        for k in lines:
            entries = grid[:, k] if axis == 1 else grid[k, :]
            found, stopped = bisect_entries(tester, np.sort(entries))
            leaves += found
            if stopped:
                return leaves, True
        return leaves, False
    return bisect(tester, block.start, block.stop)


def guilty_lines(tester: Any, grid: NDArray, axis: int) -> list[int] | None:
    """The columns (``axis=1``) or rows (``axis=0``) of a block whose directions fail, by bisection over
    ranges of them (each test spans the whole other axis); None when more than :data:`LINES` ranges are
    guilty at once, or the budget ends the search."""
    n = grid.shape[axis]
    level, found = [(0, n)], []
    while level:
        halves = []
        for a, b in level:
            if b - a == 1:
                found.append(a)
                continue
            mid = (a + b) // 2
            halves += [(a, mid), (mid, b)]
        if not halves:
            break
        if not tester.affordable(len(halves)):
            return None
        dirs = [tester.on_entries((grid[:, a:b] if axis == 1 else grid[a:b, :]).ravel()) for a, b in halves]
        tests = tester.tests(dirs, "localize")
        level = [h for h, t in zip(halves, tests) if not t.passed]
        if len(level) > LINES:
            return None
    return found


def _halves(level: list[NDArray], dense: bool) -> list[NDArray]:
    """The next level of a bisection over sets of entries: each set halved, or, once every half of the last
    level failed and at most :data:`LINE` entries remain (``dense``), every entry on its own."""
    if dense and sum(g.size for g in level) <= LINE:
        return [g[k:k + 1] for g in level for k in range(g.size)]
    return [part for group in level for part in (group[: group.size // 2], group[group.size // 2:]) if part.size]


def bisect_entries(tester: Any, entries: NDArray) -> Found:
    """Bisection over a sorted set of flat entries (a row or column that fails).  When every half of a level
    fails (the error fills the line: the bias column) and at most :data:`LINE` entries remain, they are
    measured one by one, which costs less than bisecting on."""
    level = [entries]
    leaves: list[Any] = []
    dense = False
    while level:
        halves = _halves(level, dense)
        if not tester.affordable(len(halves)):
            return leaves, True
        dirs = [Direction(int(h[0]), int(h[0]) + 1, np.ones(1)) if h.size == 1 else tester.on_entries(h)
                for h in halves]
        tests = tester.tests(dirs, "localize")
        leaves += [t for t, h in zip(tests, halves) if not t.passed and h.size == 1]
        level = [h for t, h in zip(tests, halves) if not t.passed and h.size > 1]
        dense = len(halves) > 1 and all(not t.passed for t in tests)
        if len(level) > MAX_SPREAD:
            return leaves, True
    return leaves, False


def bisect(tester: Any, lo: int, hi: int) -> Found:
    """Guilty single entries in ``[lo, hi)`` by bisection over contiguous ranges."""
    level = [(lo, hi)]
    leaves: list[Any] = []
    while level:
        halves = []
        for a, b in level:
            mid = (a + b) // 2
            halves += [(a, mid), (mid, b)]
        halves = [(a, b) for a, b in halves if b > a]
        if not tester.affordable(len(halves)):
            return leaves, True
        tests = tester.tests([tester.direction(a, b) for a, b in halves], "localize")
        guilty = [t for t in tests if not t.passed]
        leaves += [t for t in guilty if t.direction.hi - t.direction.lo == 1]
        level = [(t.direction.lo, t.direction.hi) for t in guilty if t.direction.hi - t.direction.lo > 1]
        if len(level) > MAX_SPREAD:  # too many guilty ranges at once: spread (found entries stay found)
            return leaves, True
    return leaves, False
