"""Directional checks, localization by group testing, and the Taylor-remainder verdict.

``mode="directional"`` compares ``u . g`` with the finite-difference derivative of the cost along a few
seeded random unit directions ``u`` (2 evaluations per direction with central differences) instead of
checking every entry.  When that fails, the wrong entries are found without a full check:

1. one directional check restricted to each block tells the failing blocks;
2. inside a failing block, contiguous ranges of entries are bisected: a range is guilty when a directional
   check restricted to it fails.  Down at single entries the check *is* the coordinate check, so the wrong
   entries are reported with their block, index, numerical and analytical values, as a full check would.
   One wrong entry costs ``~4 log2(P)`` evaluations.  When more than ``MAX_SPREAD`` ranges are guilty at
   once (a whole block is wrong) bisection stops and says so; a few directions restricted to that block
   then give the doctor its block-level evidence (a common factor, a sign, zeros, a penalty).

3. The Taylor remainder ``r(h) = |J(x + h u) - J(x) - h g.u|`` along a failing direction shrinks like
   ``h^2`` when the gradient is right and like ``h`` when it is wrong; its fitted slope is a verdict that
   needs no tolerance.

Evaluation engines
------------------
* :class:`FunctionDirections` re-evaluates the cost (any target; optionally spread over an executor).
  Roundoff of a cost difference is ``~ eps (|J(x)| + |J(x + h u)|)``.
* :class:`NetworkDirections` propagates the change of a direction through a Network's layers exactly
  (``Dense.direction_change``, ``propagate``) and sums the changed loss terms with the identity
  ``log1p(s expm1(d)) - y d``: differences carry a rounding of only ``eps sum|terms|``, which the probe
  reports, so the step can be tiny (``sqrt(eps)``) and truncation negligible.

Tolerance of one directional derivative (the error model of :mod:`layerkit.check.methods`, with the probe's own
roundoff): ``rtol max(|n|, |a|) + 16 (noise / h + h^p M)`` with ``M = max(|J|, |a|)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from .._validate import describe, positive_int
from ..fast.changes import ColumnsChange
from ..errors import InputError
from ..nn.layers import provides
from .probes import as_scalar_cost
from .report import BlockSummary, Entry, Report, relative_difference
from .subjects import Target

#: Default number of random directions of the first, whole-vector check.
DEFAULT_DIRECTIONS = 2
#: Guilty ranges at one bisection level beyond which the mismatch counts as spread over the block.
MAX_SPREAD = 32
SAFETY = 16.0


@frozen(eq=False)
class Direction:
    """A unit direction supported on the flat range ``[lo, hi)``: ``u`` has ``hi - lo`` entries."""

    lo: int
    hi: int
    u: NDArray


@frozen(eq=False)
class DirectionalTest:
    """One directional derivative: numerical ``n`` (finite differences), analytical ``a = g . u``."""

    direction: Direction
    numerical: float
    analytical: float
    tolerance: float
    step: float

    @property
    def error(self) -> float:
        return abs(self.numerical - self.analytical)

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)


# ---------------------------------------------------------------------- engines
def _cost_along(cost: Callable[[NDArray], Any], x0: NDArray, lo: int, hi: int, u: NDArray, s: float) -> Any:
    """``cost(x0 + s u)`` for ``u`` supported on ``[lo, hi)``; a picklable worker for executors."""
    x = np.array(x0, copy=True)
    x[lo:hi] += (s * u).astype(x.dtype)
    return as_scalar_cost(cost(x), "along a direction")


class FunctionDirections:
    """Cost differences along directions by re-evaluating ``cost`` (optionally over an executor)."""

    exact = False

    def __init__(self, cost: Callable[[NDArray], Any], x0: NDArray, f0: float,
                 executor: Executor | None = None) -> None:
        self.cost, self.x0, self.f0, self.executor = cost, x0, float(np.real(f0)), executor
        self.dtype = x0.dtype
        self.n_evals = 0

    def delta(self, dirs: Sequence[Direction], steps: NDArray) -> tuple[NDArray, NDArray]:
        """``J(x0 + steps[s, k] u_k) - J(x0)`` and its rounding bound, both of shape ``(S, len(dirs))``."""
        S = steps.shape[0]
        jobs = [(d.lo, d.hi, d.u, float(steps[s, k])) for s in range(S) for k, d in enumerate(dirs)]
        self.n_evals += len(jobs)
        with np.errstate(all="ignore"):
            if self.executor is None:
                costs = [_cost_along(self.cost, self.x0, *job) for job in jobs]
            else:
                futures = [self.executor.submit(_cost_along, self.cost, self.x0, *job) for job in jobs]
                costs = [f.result() for f in futures]
        c = np.asarray([float(np.real(v)) for v in costs]).reshape(S, len(dirs))
        eps = float(np.finfo(self.dtype).eps)
        return c - self.f0, eps * (np.abs(c) + abs(self.f0))


class NetworkDirections:
    """Exact cost differences along directions for a Network of layers with ``direction_change``."""

    exact = True

    def __init__(self, target: Target, f0: float) -> None:
        from ..fast.probe import NetworkState

        state = NetworkState.at(target.objective, target.x0)
        self.x0, self.f0, self.dtype = target.x0, float(f0), target.x0.dtype
        self.net, self.layers, self.acts, self.Y = state.net, state.layers, state.acts, state.Y
        self.loss, self.m, self.lambda_, self.penalized = state.loss, state.m, state.lambda_, state.penalized
        self.S = state.loss.S
        # (layer index, param name, block) in flat order
        self.owner: list[tuple[int, str, Any]] = [(i, p, self.net.layout[b]) for i, p, b in self.net._names]
        self.n_evals = 0

    @staticmethod
    def supports(target: Target) -> bool:
        net = target.network
        if net is None or not net._fused_sigmoid:
            return False
        layers = net.layers[:-1]
        with_params = [layer for layer in layers if layer.param_shapes]
        return (all(provides(layer, "direction_change") and len(layer.param_shapes) == 1 for layer in with_params)
                and all(provides(layer, "propagate") for layer in layers)
                and all(len(s) == 2 for layer in with_params for s in layer.param_shapes.values()))

    def _batch(self, dirs: Sequence[Direction], steps: NDArray) -> tuple[NDArray, NDArray]:
        """Cost changes for directions sharing one support ``[lo, hi)``; ``steps`` is ``(S, k)``.  Returns
        ``(S, k)`` changes and rounding bounds.  The batch axis is ``b = s k + j``."""
        lo0, hi0 = dirs[0].lo, dirs[0].hi
        S, k = steps.shape
        flat_steps = steps.reshape(-1)
        U = np.stack([d.u for d in dirs])  # (k, hi - lo)
        change = None
        touched = {}
        for i, _, b in self.owner:
            lo, hi = max(lo0, b.start), min(hi0, b.stop)
            if lo >= hi:
                continue
            unit = np.zeros((k, b.size), dtype=np.result_type(self.dtype, U))
            unit[:, lo - b.start: hi - b.start] = U[:, lo - lo0: hi - lo0]
            cols = b.shape[1]
            rows = slice((lo - b.start) // cols, (hi - 1 - b.start) // cols + 1)
            touched[i] = (unit.reshape((k,) + b.shape), rows)
        for li, layer in enumerate(self.layers):
            if li in touched:
                unit, rows = touched[li]
                if change is None:  # linear in the step: one product per direction, then scaled
                    base = layer.direction_change(self.acts[li], None, unit, rows).delta  # (k, m, c)
                    change = ColumnsChange(rows, (steps[:, :, None, None] * base[None]).reshape((S * k,) + base.shape[1:]))
                else:
                    dth = (steps[:, :, None, None] * unit[None]).reshape((S * k,) + unit.shape[1:])
                    change = layer.direction_change(self.acts[li], change, dth, rows)
            elif change is not None:
                change = layer.propagate(self.acts[li], self.acts[li + 1], change)
        total, noise = self.loss.dense(change.dense(self.S.shape), with_noise=True)
        total, noise = total / self.m, noise / self.m
        if self.lambda_:
            pen = self.penalized[lo0:hi0]
            th = self.x0[lo0:hi0][pen].astype(np.float64)
            su = flat_steps[:, None] * np.repeat(U[:, pen][None], S, axis=0).reshape(S * k, -1)
            pterms = (self.lambda_ / (2 * self.m)) * su * (2 * th[None, :] + su)
            total = total + pterms.sum(axis=1)
            noise = noise + 4 * float(np.finfo(self.dtype).eps) * np.abs(pterms).sum(axis=1)
        return total.reshape(S, k), noise.reshape(S, k)

    def delta(self, dirs: Sequence[Direction], steps: NDArray) -> tuple[NDArray, NDArray]:
        """``J(x0 + steps[s, k] u_k) - J(x0)`` (exact propagation) and its rounding bound, ``(S, len(dirs))``;
        directions with the same support are evaluated as one batch."""
        out = np.empty(steps.shape)
        noise = np.empty(steps.shape)
        groups: dict[tuple[int, int], list[int]] = {}
        for j, d in enumerate(dirs):
            groups.setdefault((d.lo, d.hi), []).append(j)
        with np.errstate(all="ignore"):
            for idx in groups.values():
                out[:, idx], noise[:, idx] = self._batch([dirs[j] for j in idx], steps[:, idx].astype(np.float64))
        self.n_evals += steps.size
        return out, noise


def taylor_remainder(probe: Any, x: NDArray, grad: NDArray, d: Direction) -> dict[str, Any]:
    """Slope of ``r(h) = |J(x + h u) - J(x) - h g.u|`` against ``h`` along ``d``, and its verdict.

    ``h`` runs over 13 values from ``1e-1`` to ``1e-7`` (times ``max(1, |x|)`` on the support); values whose
    remainder is within 100 times the probe's rounding bound are dropped, and the slope is fitted on the
    four smallest remaining steps (the asymptotic regime): about 2 for a right gradient, 1 for a wrong one.
    """
    eps = float(np.finfo(x.dtype).eps)
    scale = max(1.0, float(np.max(np.abs(x[d.lo:d.hi]))))
    hs = scale * np.logspace(-1, -7, 13)
    dj, noise = probe.delta([d], hs[:, None])
    a = float(grad[d.lo:d.hi] @ d.u)
    r = np.abs(dj[:, 0] - hs * a)
    usable = r > 100 * (noise[:, 0] + eps * abs(a) * hs)
    idx = np.flatnonzero(usable)
    base = {"all_h": hs.tolist(), "all_remainder": r.tolist()}
    if idx.size < 3:
        return {**base, "slope": float("nan"), "h": [], "remainder": [],
                "verdict": "the Taylor test is inconclusive: the remainder is lost in roundoff"}
    tail = idx[-4:]
    slope = float(np.polyfit(np.log(hs[tail]), np.log(r[tail]), 1)[0])
    if slope < 1.5:
        verdict = (f"the Taylor remainder shrinks like h^{slope:.2f} along a failing direction (a right gradient "
                   "gives h^2): the gradient is wrong, whatever the step")
    else:
        verdict = (f"the Taylor remainder shrinks like h^{slope:.2f} (h^2 expected of a right gradient): the "
                   "gradient looks right along this direction; the mismatch may be the step's or the precision's")
    return {**base, "slope": slope, "verdict": verdict, "h": hs[tail].tolist(), "remainder": r[tail].tolist()}


def direction_probe(target: Target, f0: float, executor: Executor | None = None) -> Any:
    """The exact network probe when the target allows it, else re-evaluation of the cost."""
    if target.kind == "network" and NetworkDirections.supports(target):
        return NetworkDirections(target, f0)
    return FunctionDirections(target.cost, target.x0, f0, executor)


# ---------------------------------------------------------------------- the directional check
class _Directional:
    def __init__(self, target: Target, strategy: Any, n_directions: int, seed: int,
                 executor: Executor | None) -> None:
        if not hasattr(strategy, "plan"):
            raise InputError("method", "a finite-difference method with a stencil (forward, central, or a "
                             "FiniteDifference) for mode='directional'", repr(getattr(strategy, "name", strategy)))
        self.target, self.strategy = target, strategy
        self.n_directions = positive_int(n_directions, "n_directions")
        self.rng = np.random.default_rng(seed)
        self.t0 = time.perf_counter()
        self.f0, self.a = target.evaluate()
        self.f0 = float(np.real(self.f0))
        self.x = target.x0
        self.layout = target.layout
        self.eps = float(np.finfo(self.x.dtype).eps)
        self.probe: Any = direction_probe(target, self.f0, executor)
        self.rtol = strategy.tolerances(self.x.dtype, self.f0, 1.0, np.ones(1))[0]
        self.evals = {"analytic": 1}

    def direction(self, lo: int, hi: int) -> Direction:
        u = self.rng.standard_normal(hi - lo)
        return Direction(lo, hi, u / np.linalg.norm(u))

    def step(self, d: Direction) -> float:
        scale = max(1.0, float(np.max(np.abs(self.x[d.lo:d.hi]))))
        if self.probe.exact:  # roundoff ~ eps sum|terms| does not grow as h shrinks: take h small
            return math.sqrt(self.eps) * scale
        return self.strategy.base_step(self.x.dtype) * scale if self.strategy.step == "auto" \
            else float(self.strategy.step)

    def run_tests(self, dirs: list[Direction], stage: str) -> list[DirectionalTest]:
        hs = np.array([self.step(d) for d in dirs])
        steps, finish = self.strategy.plan(_Axes(hs), hs)
        d, noise = self.probe.delta(dirs, steps)
        n = finish(d)
        weights = np.sum(np.abs(steps), axis=0) / hs  # sum |c_s| of the stencil
        noise_term = np.max(noise, axis=0) * weights / hs
        order = getattr(self.strategy, "order", 2)
        out = []
        for k, di in enumerate(dirs):
            a = float(self.a[di.lo:di.hi] @ di.u)
            M = max(abs(self.f0), abs(a))
            trunc = hs[k] ** order * M
            tol = self.rtol * max(abs(n[k]), abs(a)) + SAFETY * (noise_term[k] + trunc)
            out.append(DirectionalTest(di, float(n[k]), a, float(tol), float(hs[k])))
        self.evals[stage] = self.evals.get(stage, 0) + steps.size
        return out

    # -- group testing -------------------------------------------------------------------------------
    def bisect(self, lo: int, hi: int) -> tuple[list[DirectionalTest], bool]:
        """Guilty single entries in ``[lo, hi)`` and whether the search stopped because of spread."""
        level = [(lo, hi)]
        leaves: list[DirectionalTest] = []
        while level:
            halves = []
            for a, b in level:
                mid = (a + b) // 2
                halves += [(a, mid), (mid, b)]
            tests = self.run_tests([self.direction(a, b) for a, b in halves], "localize")
            guilty = [t for t in tests if not t.passed]
            leaves += [t for t in guilty if t.direction.hi - t.direction.lo == 1]
            level = [(t.direction.lo, t.direction.hi) for t in guilty if t.direction.hi - t.direction.lo > 1]
            if len(level) + len(leaves) > MAX_SPREAD:
                return leaves, True
        return leaves, False

    def taylor(self, d: Direction) -> dict[str, Any]:
        """Fit the slope of the Taylor remainder along ``d`` (see :func:`taylor_remainder`)."""
        out = taylor_remainder(self.probe, self.x, self.a, d)
        self.evals["taylor"] = self.evals.get("taylor", 0) + len(out["all_h"])
        return out

    # -- assembly --------------------------------------------------------------------------------------
    def run(self, top: int) -> Report:
        P = self.x.size
        first = self.run_tests([self.direction(0, P) for _ in range(self.n_directions)], "directions")
        block_tests: dict[str, list[DirectionalTest]] = {}
        leaves: list[DirectionalTest] = []
        spread: list[str] = []
        passed = all(t.passed for t in first)
        taylor: dict[str, Any] | None = None
        if not passed:
            per_block = self.run_tests([self.direction(b.start, b.stop) for b in self.layout.blocks], "blocks")
            for b, t in zip(self.layout.blocks, per_block):
                block_tests[b.name] = [t]
            failing = [b for b, t in zip(self.layout.blocks, per_block) if not t.passed]
            for b in failing:
                if b.size == 1:
                    leaves += [t for t in block_tests[b.name]]
                    continue
                found, stopped = self.bisect(b.start, b.stop)
                leaves += found
                if stopped:
                    spread.append(b.name)
                    block_tests[b.name] += self.run_tests([self.direction(b.start, b.stop) for _ in range(3)],
                                                          "blocks")
            # The Taylor verdict along the direction where the mismatch stands out most: a localized entry,
            # else the worst block-restricted direction, else the worst whole-vector one.
            ratio = lambda t: t.error / max(t.tolerance, 1e-300)  # noqa: E731
            candidates = leaves or [t for tests in block_tests.values() for t in tests if not t.passed] or first
            taylor = self.taylor(max(candidates, key=ratio).direction)
        return self.report(first, block_tests, leaves, spread, taylor, passed, top)

    def report(self, first: list[DirectionalTest], block_tests: dict[str, list[DirectionalTest]],
               leaves: list[DirectionalTest], spread: list[str], taylor: dict[str, Any] | None, passed: bool,
               top: int) -> Report:
        P = self.x.size
        numerical = np.full(P, np.nan)
        tolerance = np.full(P, np.nan)
        measured = np.zeros(P, dtype=bool)
        for t in leaves:
            j, u = t.direction.lo, float(t.direction.u[0])
            numerical[j], tolerance[j], measured[j] = t.numerical / u, t.tolerance, True
        analytical = self.a.astype(np.float64)
        blocks = []
        for b in self.layout.blocks:
            tests = block_tests.get(b.name)
            ok = True if tests is None else all(t.passed for t in tests)
            nb = np.array([t.numerical for t in tests]) if tests else np.zeros(0)
            ab = np.array([t.analytical for t in tests]) if tests else np.zeros(0)
            n_bad = int(np.sum(measured[b.slice])) if not ok else 0
            blocks.append(BlockSummary(b.name, b.shape, relative_difference(nb, ab) if tests else 0.0,
                                       float(np.max(np.abs(nb - ab), initial=0.0)), n_bad, ok))
        order = sorted(leaves, key=lambda t: -t.error / max(t.tolerance, 1e-300))[:top]
        worst = tuple(Entry(*self.layout.locate(t.direction.lo), t.direction.lo,
                            float(numerical[t.direction.lo]), float(analytical[t.direction.lo]),
                            abs(float(numerical[t.direction.lo]) - float(analytical[t.direction.lo])),
                            float(tolerance[t.direction.lo])) for t in order)
        nf = np.array([t.numerical for t in first])
        af = np.array([t.analytical for t in first])
        err = np.abs(nf - af)
        context: dict[str, Any] = {
            "target": self.target.kind, **self.target.context, "mode": "directional",
            "n_directions": len(first), "evaluations": dict(self.evals),
            "directional": [{"numerical": t.numerical, "analytical": t.analytical, "tolerance": t.tolerance,
                             "passed": t.passed} for t in first],
            "localized": [self.layout.label(t.direction.lo) for t in leaves],
            "spread_blocks": spread,
        }
        if taylor is not None:
            context["taylor"] = taylor
        evidence = {name: [{"numerical": t.numerical, "analytical": t.analytical, "tolerance": t.tolerance,
                            "u_dot_x": float(t.direction.u @ self.x[t.direction.lo:t.direction.hi])}
                           for t in tests] for name, tests in block_tests.items()}
        context["block_directions"] = evidence
        h0 = float(np.median([t.step for t in first]))
        return Report(
            method=self.strategy.name, step=h0, step_rule="auto" if self.strategy.step == "auto" else "fixed",
            dtype=str(self.x.dtype), passed=passed, relative_difference=relative_difference(nf, af),
            max_abs_error=float(err.max(initial=0.0)),
            max_rel_error=float(np.max(err / np.maximum(np.maximum(np.abs(nf), np.abs(af)), 1e-300), initial=0.0)),
            numerical=numerical, analytical=analytical, tolerance=tolerance, error_estimate=None, rtol=self.rtol,
            blocks=tuple(blocks), worst=worst, n_evals=sum(self.evals.values()),
            seconds=time.perf_counter() - self.t0, layout=self.layout, x=np.array(self.x, copy=True),
            cost=self.f0, context=context, measured=measured)


class _Axes:
    """The minimal probe a stencil's ``plan`` needs along directions: steps are not snapped."""

    def __init__(self, h: NDArray) -> None:
        self.n_axes = h.size
        self.dtype = h.dtype
        self.real_dtype = h.dtype

    def snap(self, h: NDArray) -> NDArray:
        return h


def run_directional(target: Target, strategy: Any, *, n_directions: int = DEFAULT_DIRECTIONS, seed: int = 0,
                    executor: Executor | None = None, top: int = 5) -> Report:
    """The directional check of ``target`` (see the module docstring); returns a Report whose
    ``context["mode"]`` is ``"directional"`` and whose ``measured`` mask marks the localized entries."""
    if isinstance(n_directions, bool) or not isinstance(n_directions, int):
        raise InputError("n_directions", "a positive integer", describe(n_directions))
    return _Directional(target, strategy, n_directions, seed, executor).run(top)
