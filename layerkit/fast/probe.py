"""Structured full checks of a :class:`~layerkit.Network`: evaluate only what a perturbation changes.

Perturbing entry ``(r, c)`` of a Dense layer's ``Theta`` by ``t`` adds ``t x1[:, c]`` to pre-activation
column ``r`` and leaves every activation before the layer unchanged.  The probe caches one forward pass and
has two exact ways to evaluate the cost change ``J(x + t e_rc) - J(x)`` from there.

**Taylor tables** (:class:`SeriesBlock`, used whenever the layers after the block support ``series``).
Each example's loss depends on its own ``tau_i = t x1[i, c]`` alone, so it is a univariate function whose
Taylor coefficients ``G_k[r, i]`` can be propagated through the downstream layers once per unit ``r``
(Taylor-mode recurrences: a column series, then rank one, then dense).  All entries of the block then come
from ``K`` matrix products ``T_k = G_k @ x1^k``, and any step of any stencil is
``sum_k t^k T_k[r, c]``.  The truncation is certified by Cauchy's estimate with bounds propagated for
complex ``tau`` (``series_bound``), and ``K`` is chosen so that it is ten times below the rounding of the
summed cost, the same criterion as below; entries it cannot certify go to the exact path.

**Exact per-perturbation path** (user layers with ``propagate``, or entries the tables cannot certify),
batches of perturbations carried as structured changes (see :mod:`layerkit.fast.changes`):

* ``Dense.param_change``: ``Theta[r, c] += s`` moves only output column ``r``, by ``s x1[:, c]``;
* ``Dense.propagate``: a column change becomes rank one, ``outer(delta, W[:, r])``, and stays rank one;
* ``Sigmoid.propagate``: ``sigmoid(z + d) - sigmoid(z)`` from an identity without cancellation.

The cost change is then computed from the changed terms alone:

* a single changed logit column ``k``: ``sum_i log1p(s_ik expm1(d_i)) - Y_ik d_i`` (an identity for
  ``softplus(z + d) - softplus(z)``; no subtraction of two large nearly equal costs);
* a rank-one or dense change of the logits: the Taylor expansion of the (fixed, smooth) cross-entropy in
  the logit change ``d``, with the fewest terms ``N <= 4`` whose remainder (at most ``|d|^(N+1) / (4 (N+1)!)``
  per term) summed over all terms is below ``0.1 eps`` times the summed cost, i.e. ten times below the
  rounding of the cost itself; when even four terms are not enough the exact identity is used
  (:mod:`layerkit.fast.loss_rules`; the softmax cross-entropy and the squared error have exact identities).
  Layers are always evaluated exactly; only the final, built-in loss is expanded.

The penalty change is exact too: ``lambda/(2m) s (2 theta + s)`` on penalized entries.

Layers without any structured members (a user's own) get the generic path: their parameters are perturbed
in a private clone and the layers from ``L`` on are re-run on the cached input.  A layer's structured
members are used only when they are defined as far down its class hierarchy as its ``forward``
(see :mod:`layerkit.fast.rules`).

Work is split in batches bounded by ``MAX_BATCH_ELEMENTS`` per temporary (cache-sized, so memory stays a
small multiple of one forward pass, never ``P x m x K``); the exact path spreads its batches over a
two-thread pool (numpy releases the GIL in its kernels), the tables use the BLAS's threads.

The tables live in :mod:`layerkit.fast.series`, the exact path in :mod:`layerkit.fast.exact`, what both read
off the forward pass in :mod:`layerkit.fast.state`.  The probe never evaluates the network's own cost: it
*predicts* changes for the check to compare with it (:meth:`NetworkProbe.predictions`, compared in
:mod:`layerkit.check.engine`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..nn.buffer import Binding
from ..nn.losses import L2
from ..nn.network import Network, evaluation_overrides
from ..numerics import AGREEMENT, NOISE_C, scaled
from .changes import Change, ColumnChange, ColumnMaxima, ColumnsChange, matrix_shape
from .confirm import Prediction
from .exact import ExactPath
from .loss_rules import has_loss_rule
from .rules import rule_for
from .series import SeriesBlock, available
from .state import ForwardPass, NetworkState, block_rounding


class NetworkProbe:
    """A :class:`~layerkit.check.probes.Probe` over the coordinates of a network's regularized cost, computing
    each cost change from the perturbation's effect alone (module docstring).

    Built from a :class:`~layerkit.fast.state.NetworkState` of the caller's own network; its generic path
    perturbs that network's buffer in place and restores every entry (the caller holds
    :meth:`~layerkit.Network.preserved`).  ``noise(steps)`` bounds each change's rounding: ``4 eps |t| R_j``
    (see :func:`~layerkit.fast.state.magnitudes`) for the table and exact paths, plus the cancellation
    ``4 eps sum |l'(z)| |z| / m`` of the generic path.
    """

    cheap = True

    def __init__(self, state: NetworkState, x0: NDArray, f0: float, workers: int | None = None,
                 axis_scale: NDArray | None = None, maxima: ColumnMaxima | None = None) -> None:
        self.state = state
        self.axis_scale = axis_scale
        self.maxima = maxima
        self.x = np.array(x0, copy=True)
        self.f0 = f0
        self.dtype = self.x.dtype
        self.real_dtype = self.dtype
        self.n_axes = self.x.size
        self.n_evals = 0
        self.axes = np.arange(self.x.size)
        self.workers = workers or min(2, os.cpu_count() or 1)
        self.net, self.layers, self.acts, self.Y = state.net, state.layers, state.acts, state.Y
        self.loss, self.m, self.lambda_, self.penalized = state.loss, state.m, state.lambda_, state.penalized
        self.Z = state.acts[-1]
        self.eps = max(float(np.finfo(self.dtype).eps), state.eps)
        #: The roundoff the network's arithmetic carries in units of the parameters' dtype's (above 1 when a
        #: layer computes in a less precise dtype): automatic steps grow with it.
        self.noise_excess = self.eps / float(np.finfo(self.dtype).eps)
        self.fp = ForwardPass.of(state)
        self.rules, self.magnitude = self.fp.rules, self.fp.magnitude
        self.exact = ExactPath(self.fp, self.eps)
        self.R = np.full(self.x.size, np.nan)
        self._rounded: set[str] = set()
        self._series: dict[tuple[int, str], SeriesBlock | None] = {}
        self._noise: tuple[NDArray, NDArray] | None = None
        self._notes: list[str] = []
        self._limited = False  # whether smooth_reach shortened a step (and said so in a note)

    @property
    def notes(self) -> list[str]:
        """What the engine refused to use, and why."""
        return self.rules.notes + self._notes

    # ------------------------------------------------------------------ probe protocol
    def scale(self) -> NDArray:
        return scaled(np.abs(self.x), self.axis_scale).astype(self.real_dtype)

    def snap(self, h: NDArray) -> NDArray:
        return ((self.x + h.astype(self.dtype)) - self.x).astype(self.dtype)

    def imag(self, h: NDArray) -> NDArray:
        raise InputError("method", "a real finite-difference method for the structured probe", "complex-step")

    def subset(self, axes: Any) -> NetworkSubset:
        """The probe restricted to the coordinates ``axes``."""
        return NetworkSubset(self, np.asarray(axes, dtype=np.int64))

    def noise(self, steps: NDArray, axes: NDArray | None = None) -> NDArray:
        cached = self._noise
        if cached is not None and cached[0] is steps:
            return cached[1]
        self.delta(steps, axes)
        assert self._noise is not None
        return self._noise[1]

    def delta(self, steps: NDArray, axes: NDArray | None = None) -> NDArray:
        """``J(x + steps[s, k] e_{axes[k]}) - J(x)`` for all coordinates (``axes=None``) or the given ones
        (NaN or inf where a change overflows: huge steps)."""
        with np.errstate(all="ignore"):
            return self._delta(steps, axes)

    def smooth_reach(self, widest: NDArray) -> NDArray:
        """Per coordinate, how far (in ``|t|``) its change certainly keeps every example on the pieces of the
        piecewise-linear layers after its block: ``widest`` (shape (P,), the stencil's widest step) where
        the tables certify that, else the step at which the nearest example may reach a kink
        (:meth:`~layerkit.fast.series.SeriesBlock.piece_radius`, never above ``widest``); ``widest`` for
        blocks without kinks after them or without tables."""
        out = np.abs(np.asarray(widest, dtype=np.float64))
        for b in self.state.bindings:
            block = self.net.layout[b.block]
            series = self._series_block(b.index, b.param, block)
            if series is None or series.kink is None:
                continue
            part = out[block.start:block.stop]
            np.minimum(part, series.piece_radius(part), out=part)
        return out

    def table_reach(self, widest: NDArray) -> NDArray:
        """Per coordinate, ``widest`` (shape (P,), the stencil's widest step) or, where smaller, the step up to
        which two Taylor tables certify its change (:meth:`~layerkit.fast.series.SeriesBlock.table_reach`):
        automatic steps stay within it (:func:`~layerkit.check.methods.table_steps`).  Not for a block with a
        layer after it whose series are derived from its ``fn``: those tables carry a subtraction's rounding,
        which does not shrink with the step."""
        out = np.abs(np.asarray(widest, dtype=np.float64))
        for b in self.state.bindings:
            block = self.net.layout[b.block]
            series = self._series_block(b.index, b.param, block)
            if series is None or self._derived_after(b):
                continue
            part = out[block.start:block.stop]
            np.minimum(part, series.table_reach(self.loss.budget()), out=part)
        return out

    def shortened(self, axes: NDArray) -> None:
        """Say, once, that the automatic steps of the coordinates ``axes`` were shortened to stay on their
        pieces (:func:`~layerkit.check.methods.smooth_steps`)."""
        if self._limited or not len(axes):
            return
        self._limited = True
        n = len(axes)
        names = ", ".join(self.net.layout.label(int(j)) for j in axes[:4])
        self._notes.append(
            f"the automatic step of {n} entr{'y' if n == 1 else 'ies'} ({names}{', ...' if n > 4 else ''}) would "
            "carry an example across a kink of a piecewise-linear layer: "
            + ("it was" if n == 1 else "they were")
            + " shortened to half the distance to the nearest kink, where the cost is smooth (the engine's "
            "rounding is proportional to the step, so that costs no accuracy)")

    def aside(self, steps: NDArray, axes: NDArray) -> tuple[NDArray, NDArray]:
        """``delta`` and its rounding bound for a request that is not part of the check's own evaluations
        (a verification): not counted, and the noise of the check's last request kept."""
        n_evals, cached = self.n_evals, self._noise
        values = self.delta(steps, axes)
        assert self._noise is not None
        noise = self._noise[1]
        self.n_evals, self._noise = n_evals, cached
        return values, noise

    def _delta(self, steps: NDArray, axes: NDArray | None) -> NDArray:
        given = steps
        steps = np.atleast_2d(np.asarray(steps, dtype=self.dtype))
        positions = self.axes if axes is None else np.asarray(axes, dtype=np.int64)
        out = np.empty((steps.shape[0], positions.size), dtype=np.float64)
        noise = np.empty((steps.shape[0], positions.size), dtype=np.float64)
        jobs = [job for b in self.state.bindings
                if (job := self._read_tables(b, steps, positions, axes is None, out, noise)) is not None]
        self._run_exact(jobs, out, noise)
        self.n_evals += steps.size
        if self.lambda_:
            pen = self.penalized[positions]
            th = self.x[positions][pen].astype(np.float64)
            for s in range(steps.shape[0]):  # a row at a time: temporaries of P entries, not S x P
                out[s, pen] += L2.change(self.lambda_, self.m, th, steps[s, pen].astype(np.float64))
        self._noise = (given, noise)
        return out

    def _read_tables(self, b: Binding, steps: NDArray, positions: NDArray, every: bool, out: NDArray,
                     noise: NDArray) -> tuple[Any, ...] | None:
        """Write one block's changes that its Taylor tables certify into ``out``, every entry's rounding bound
        into ``noise``, and return the exact path's job for the rest (None: nothing left, or no entry of the
        block among ``positions``; ``every``: positions are all the coordinates)."""
        block = self.net.layout[b.block]
        if every:
            cols_out = np.arange(block.start, block.stop)
        else:
            cols_out = np.flatnonzero((positions >= block.start) & (positions < block.stop))
            if not cols_out.size:
                return None
        local = positions[cols_out] - block.start
        st = steps[:, cols_out]
        series = self._series_block(b.index, b.param, block)
        rest = local
        if series is not None:
            if every:
                ok = series.evaluate(st, self.loss.budget(), out[:, block.start:block.stop])
            else:
                vals, ok = series.evaluate_entries(st, local, self.loss.budget())
                out[:, cols_out] = vals
            out[:, cols_out] /= self.m
            rest = local[:0] if ok.all() else local[~ok]
            if not self._tables_agree(series, b, block, st[:, ok], local[ok], out[:, cols_out[ok]]):
                rest = local
        R = self.rounding(b, block)[local]
        noise[:, cols_out] = NOISE_C * self.eps * np.abs(st.astype(np.float64)) * np.nan_to_num(R, nan=0.0)
        if (rest.size and self.exact.structured(b.index, block)) or (series is not None and self._derived_after(b)):
            noise[:, cols_out] += self.exact.cancellation(b, block)[local]
        if not rest.size:
            return None
        where = cols_out if rest.size == local.size else cols_out[np.isin(local, rest)]
        return b, block, rest, steps[:, where], where

    def _derived_after(self, b: Binding) -> bool:
        """Whether a layer after the block reads series coefficients derived from its ``fn``
        (:attr:`~layerkit.fast.rules.BoundRule.derived`): its tables carry that layer's subtraction rounding."""
        return any(self.rules.rule(k).derived for k in range(b.index + 1, len(self.layers)))

    def _run_exact(self, jobs: list[tuple[Any, ...]], out: NDArray, noise: NDArray) -> None:
        """The exact path for what the tables left: the generic path first (it writes into the network's
        buffer), then the structured one (threads)."""
        tasks = []
        for b, block, rest, st, where in jobs:
            if self.exact.structured(b.index, block):
                tasks += self.exact.tasks(b, block, rest, st, out, where)
            else:
                out[:, where] = self.exact.generic(b, block, rest, st)
                noise[:, where] += self.exact.generic_noise
        if self.workers > 1 and len(tasks) > 1 and self.Z.shape[0] * self.x.size > 1 << 20:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(lambda t: t(), tasks))
        else:
            for t in tasks:
                t()

    def rounding(self, b: Binding, block: Any) -> NDArray:
        """The rounding scale ``R_j`` of the block's entries (see :func:`~layerkit.fast.state.block_rounding`);
        NaN where unknown."""
        if b.block not in self._rounded:
            series = self._series.get((b.index, b.param))
            if series is not None and series.R is not None:
                self.R[block.slice] = series.R
            else:
                A = self.magnitude[b.index] if b.index < len(self.magnitude) else None
                rule = self.rules.rule(b.index) if b.index < len(self.layers) else None
                scale = block_rounding(A, rule, b.param, self.acts[b.index], block, self.m)
                if scale is not None:
                    self.R[block.slice] = scale
            self._rounded.add(b.block)
        return self.R[block.slice]

    # ------------------------------------------------------------------ verification
    def _tables_agree(self, series: SeriesBlock, b: Binding, block: Any, st: NDArray, local: NDArray,
                      values: NDArray) -> bool:
        """Compare the tables with the exact path on a few of the entries they certified (``local``, whose
        table values are ``values``), at the same steps (once per block); on disagreement the block's tables are
        dropped and a note says so."""
        key = (b.index, b.param)
        if series.confirmed or not local.size:
            return True
        rng = np.random.default_rng(block.start)
        cols = block.shape[1]
        # eight entries: four in each of two random rows, so that the exact path moves each row's four
        # entries (at every step) as one batch
        rows = local // cols
        present = np.unique(rows)
        groups = [rng.choice(np.flatnonzero(rows == r), size=min(4, int(np.sum(rows == r))), replace=False)
                  for r in rng.choice(present, size=min(2, present.size), replace=False)]
        pick = np.concatenate(groups)
        exact = np.empty((st.shape[0], pick.size))
        if self.exact.structured(b.index, block):
            F = self.rules.rule(b.index).param_inputs(b.param, self.acts[b.index])
            S, at = st.shape[0], 0
            for sel in groups:
                inputs = np.stack([F.columns(int(j % cols), int(j % cols) + 1)[:, 0] for j in local[sel]])
                delta = (st[:, sel].T[:, :, None] * inputs[:, None, :]).reshape(sel.size * S, -1)
                change = ColumnChange(int(rows[sel[0]]), delta)  # item e S + s: entry sel[e] at step s
                exact[:, at:at + sel.size] = (self.exact.finish(change, b.index + 1) / self.m).reshape(sel.size, S).T
                at += sel.size
        else:
            exact[...] = self.exact.generic(b, block, local[pick], st[:, pick])
        tnoise = NOISE_C * self.eps * np.abs(st[:, pick]).astype(np.float64) * np.nan_to_num(
            self.rounding(b, block)[local[pick]], nan=0.0)
        allowed = AGREEMENT * (2 * tnoise + self.loss.budget() / self.m) + 1e-300
        if not self.exact.structured(b.index, block):
            allowed = allowed + AGREEMENT * self.exact.generic_noise
        else:  # the exact path's own subtractions
            allowed = allowed + AGREEMENT * 2 * self.exact.cancellation(b, block)[local[pick]]
        if np.all(np.abs(exact - values[:, pick]) <= allowed):
            series.confirmed = True
            return True
        self._series[key] = None
        self._notes.append(f"the Taylor tables of {b.block} disagreed with the exact path of the same engine "
                          f"(by {float(np.max(np.abs(exact - values[:, pick]))):.2e}): its layers' series and "
                          "propagate rules are not consistent; the exact path was used")
        return False

    def predict(self, flat: NDArray, values: NDArray) -> tuple[float, float]:
        """The engine's cost change for ``theta[flat] += values`` (entries of one block, in one row of a
        Dense-like block when the structured path is used), and a bound on its rounding."""
        b = next(bd for bd in self.state.bindings if self.net.layout[bd.block].start <= flat[0]
                 < self.net.layout[bd.block].stop)
        block = self.net.layout[b.block]
        local = flat - block.start
        vals = np.asarray(values, dtype=np.float64)
        cols = matrix_shape(block.shape)[1]
        one_row = np.unique(local // cols).size == 1
        if one_row and self.exact.structured(b.index, block):
            row = int(local[0] // cols)
            change: Change
            if self.rules.rule(b.index).has("param_inputs"):
                F = self.rules.rule(b.index).param_inputs(b.param, self.acts[b.index])
                s = np.zeros(cols, dtype=self.dtype)
                s[local % cols] = vals
                change = ColumnChange(row, F.matvec(s)[None])
            else:  # one change per entry of the row, summed (the layer is linear in the parameter)
                each = self.rules.param_change(b.index, b.param, row, local % cols, vals.astype(self.dtype),
                                               self.acts[b.index], self.acts[b.index + 1].shape[1])
                change = ColumnChange(row, each.delta.sum(axis=0, keepdims=True))
            for k in range(b.index + 1, len(self.layers)):
                change = self.rules.propagate(k, self.acts[k], self.acts[k + 1], change)
            total, rounding = self.loss.dense(change.dense(self.Z.shape), with_noise=True)
            data, noise = float(total[0]) / self.m, float(rounding[0]) / self.m
        else:
            data = self.exact.perturbed_loss(b, block, local, vals.astype(self.dtype))
            noise = self.exact.generic_noise + NOISE_C * self.eps * abs(data)
        if self.lambda_:
            pen = self.penalized[flat]
            th = self.x[flat][pen].astype(np.float64)
            data += float(np.sum(L2.change(self.lambda_, self.m, th, vals[pen])))
        return data, noise

    def predict_rows(self, moves: dict[int, tuple[NDArray, int]], first: Change | None = None) -> tuple[float, float]:
        """The engine's cost change when, for each layer ``k`` in ``moves``, row ``r`` of its (Dense-like,
        one parameter) block moves by ``values`` (``moves[k] = (values, r)``), all at once, and a bound on its
        rounding.  Each moved layer adds its own parameter change to the change reaching it
        (``direction_change``, exact); the layers in between carry it (``propagate``).  ``first``: the first
        moved layer's output change, when the caller has already formed it (``F`` times the row's move)."""
        change: Change | None = None
        for k in range(min(moves), len(self.layers)):
            rule = self.rules.rule(k)
            if k in moves and change is None and first is not None:
                change = first
            elif k in moves:
                values, r = moves[k]
                b = next(bd for bd in self.state.bindings if bd.index == k)
                dtheta = np.zeros((1,) + tuple(self.net.layout[b.block].shape))
                dtheta[0, r] = values
                change = rule.direction_change(self.acts[k], change, dtheta, slice(r, r + 1))
            else:
                assert change is not None
                change = self.rules.propagate(k, self.acts[k], self.acts[k + 1], change)
        assert change is not None
        total, rounding = self.loss.dense(change.dense(self.Z.shape), with_noise=True)
        data, noise = float(total[0]) / self.m, float(rounding[0]) / self.m
        if self.lambda_:
            for k, (values, r) in moves.items():
                b = next(bd for bd in self.state.bindings if bd.index == k)
                block = self.net.layout[b.block]
                cols = block.shape[1]
                flat = block.start + r * cols + np.arange(cols)
                pen = self.penalized[flat]
                th = self.x[flat][pen].astype(np.float64)
                data += float(np.sum(L2.change(self.lambda_, self.m, th, np.asarray(values, np.float64)[pen])))
        return data, noise

    def predictions(self, seed: int = 0, steps: NDArray | None = None,
                    own_from: int | None = None) -> list[Prediction]:
        """What the check compares with the network's own cost before it relies on the engine
        (:func:`predictions`)."""
        return predictions(self, seed, steps, own_from)

    # ------------------------------------------------------------------ the tables
    def _series_block(self, i: int, p: str, b: Any) -> SeriesBlock | None:
        """The Taylor tables of a block, when its layer and every layer after it support series."""
        if (i, p) not in self._series:
            ok = (available() and i < len(self.layers) and len(b.shape) == 2
                  and hasattr(self.loss, "series") and hasattr(self.loss, "series_bound")
                  and self.rules.ok(i, "param_inputs")
                  and all(self.rules.ok(k, "series") for k in range(i + 1, len(self.layers))))
            self._series[i, p] = SeriesBlock(self.fp, i, p, b.shape, self.maxima) if ok else None
        return self._series[i, p]


# ---------------------------------------------------------------------- verification
def predictions(probe: NetworkProbe, seed: int = 0, steps: NDArray | None = None,
                own_from: int | None = None) -> list[Prediction]:
    """What the check compares with the network's own cost before it relies on the engine.

    Per block, the change along a random direction in one row, at a step that moves the pre-activations
    by at most 0.1, so that a different model (another cost, another layer's math, a tie the engine does
    not see) shows far above the noise.  When every layer is layerkit's own (``own_from == 0``) and the
    blocks are Dense-like, those rows move at once, one prediction and one real cost for the network
    (:func:`_every_block`).  With ``steps`` (shape (P,), the check's own per-entry steps),
    also two entries of one row moved by their own step, computed as one batch by the path the check
    itself takes: a rule that behaves differently for the small changes of a finite difference, or for a
    batch of changes, shows there.  Only blocks of layers before ``own_from`` (None: every block) get those:
    from there on every layer is layerkit's own with its own rule (exact identities, tested against
    ``forward``), and a block's change passes through its own layer and the later ones alone."""
    rng = np.random.default_rng(seed)
    if own_from == 0 and _rows_move_together(probe):
        return [_every_block(probe, rng)]
    out = []
    for b in probe.state.bindings:
        block = probe.net.layout[b.block]
        if len(block.shape) == 2 or (len(block.shape) and _dense_like(probe, b)):
            rows, cols = matrix_shape(block.shape)
            r = int(rng.integers(rows))
            local = r * cols + np.arange(cols)
        else:
            local = np.sort(rng.choice(block.size, size=min(64, block.size), replace=False))
        flat = block.start + local
        u = rng.standard_normal(local.size)
        u /= np.linalg.norm(u)
        t, _ = _verification_step(probe, b, block, local, u)
        s = (t * u).astype(probe.dtype)
        predicted, pnoise = probe.predict(flat, s)
        theta = np.array(probe.x, copy=True)
        theta[flat] += s
        direction = np.zeros(probe.x.size)
        direction[flat] = s
        out.append(Prediction(b.block, t, theta, direction, predicted, pnoise))
        if steps is not None and (own_from is None or b.index < own_from):
            out += _step_predictions(probe, b.block, np.sort(rng.choice(flat, size=min(2, flat.size),
                                                                      replace=False)), steps)
    return out


def _rows_move_together(probe: NetworkProbe) -> bool:
    """Whether one change can move a row of every block at once: each block is the one 2-D parameter of
    its layer, whose rule has ``direction_change`` and ``param_inputs``, and the layers in between
    ``propagate``."""
    bound = {b.index for b in probe.state.bindings}
    if len(bound) != len(probe.state.bindings):
        return False
    for b in probe.state.bindings:
        if len(probe.net.layout[b.block].shape) != 2 or not (
                b.index < len(probe.layers) and probe.rules.rule(b.index).has("direction_change")
                and _dense_like(probe, b)):
            return False
    return all(probe.rules.rule(k).has("propagate") for k in range(min(bound), len(probe.layers))
               if k not in bound)


def _every_block(probe: NetworkProbe, rng: np.random.Generator) -> Prediction:
    """One prediction for the whole network, when every layer is layerkit's own: in every block, a random
    direction in one random row at the step :func:`predictions` takes for that block alone, all moved at
    once and compared with one real cost (a disagreement in any block shows, unless the blocks' differences
    cancel exactly, which random directions make a null event)."""
    theta = np.array(probe.x, copy=True)
    direction = np.zeros(probe.x.size)
    moves = {}
    first: Change | None = None
    for b in sorted(probe.state.bindings, key=lambda bd: bd.index):
        block = probe.net.layout[b.block]
        rows, cols = matrix_shape(block.shape)
        r = int(rng.integers(rows))
        local = r * cols + np.arange(cols)
        u = rng.standard_normal(cols)
        u /= np.linalg.norm(u)
        u = u.astype(probe.dtype)
        t, image = _verification_step(probe, b, block, local, u)
        if first is None and image is not None:
            # the first block's output change, formed once: F s = t (F u) exactly, with t a power of two
            # (s = t u is then exact too, and moves the pre-activations by 0.05 to 0.1)
            t = float(2.0 ** np.floor(np.log2(t)))
            first = ColumnsChange(slice(r, r + 1), (t * image)[None, :, None])
        s = (t * u).astype(probe.dtype)
        theta[block.start + local] += s
        direction[block.start + local] = s
        moves[b.index] = (s.astype(np.float64), r)
    predicted, noise = probe.predict_rows(moves, first)
    return Prediction("one row of every block at once", float(np.linalg.norm(direction)), theta, direction,
                      predicted, noise)


def _step_predictions(probe: NetworkProbe, name: str, flat: NDArray, steps: NDArray) -> list[Prediction]:
    """Entries ``flat`` moved by their own ``steps``, as one batch of the check's own path."""
    h = np.asarray(steps, dtype=np.float64)[flat][None, :]
    predicted, pnoise = probe.aside(h, flat)
    out = []
    for k, j in enumerate(flat):
        theta = np.array(probe.x, copy=True)
        theta[j] += h[0, k].astype(probe.dtype)
        direction = np.zeros(probe.x.size)
        direction[j] = h[0, k]
        out.append(Prediction(name, float(h[0, k]), theta, direction, float(predicted[0, k]),
                              float(pnoise[0, k]), "for one entry moved by the check's own step"))
    return out


def _dense_like(probe: NetworkProbe, b: Binding) -> bool:
    """Whether the block's layer says which inputs each entry multiplies (``param_inputs``)."""
    return b.index < len(probe.layers) and probe.rules.rule(b.index).has("param_inputs")


def _verification_step(probe: NetworkProbe, b: Binding, block: Any, local: NDArray,
                       u: NDArray) -> tuple[float, NDArray | None]:
    """The step ``t`` along the unit direction ``u`` (entries ``local`` of a block) that moves the
    pre-activations by at most 0.1, and their change ``F u`` per unit step (shape (m,), None when the layer is
    not Dense-like): ``1e-2`` times the smallest length scale then."""
    if len(block.shape) and _dense_like(probe, b):
        F = probe.rules.rule(b.index).param_inputs(b.param, probe.acts[b.index])
        cols = matrix_shape(block.shape)[1]
        s = np.zeros(cols)  # float64, as direction_change forms the same product
        s[local % cols] = u
        image = F.matvec(s)
        reach = float(np.max(np.abs(image), initial=0.0))
        if reach > 0:
            return 0.1 / reach, image
    return 1e-2 * float(np.min(probe.scale()[block.start + local])), None


class NetworkSubset:
    """A :class:`NetworkProbe` restricted to some coordinates (the probe protocol over those axes only)."""

    cheap = True

    def __init__(self, parent: NetworkProbe, axes: NDArray) -> None:
        self.parent, self.axes = parent, axes
        self.x = parent.x
        self.dtype, self.real_dtype = parent.dtype, parent.real_dtype
        self.n_axes = int(axes.size)
        self.noise_excess = parent.noise_excess

    @property
    def n_evals(self) -> int:
        return self.parent.n_evals

    def scale(self) -> NDArray:
        return self.parent.scale()[self.axes]

    def snap(self, h: NDArray) -> NDArray:
        x = self.x[self.axes]
        return ((x + h.astype(self.dtype)) - x).astype(self.dtype)

    def delta(self, steps: NDArray) -> NDArray:
        return self.parent.delta(steps, self.axes)

    def table_reach(self, widest: NDArray) -> NDArray:
        """:meth:`NetworkProbe.table_reach` on these coordinates."""
        full = np.full(self.parent.n_axes, np.inf)
        full[self.axes] = widest
        return self.parent.table_reach(full)[self.axes]

    def smooth_reach(self, widest: NDArray) -> NDArray:
        """:meth:`NetworkProbe.smooth_reach` on these coordinates."""
        full = np.zeros(self.parent.n_axes)
        full[self.axes] = np.abs(np.asarray(widest, dtype=np.float64))
        return self.parent.smooth_reach(full)[self.axes]

    def shortened(self, axes: NDArray) -> None:
        self.parent.shortened(self.axes[np.asarray(axes, dtype=np.int64)])

    def noise(self, steps: NDArray) -> NDArray:
        return self.parent.noise(steps, self.axes)

    def imag(self, h: NDArray) -> NDArray:
        return self.parent.imag(h)

    def subset(self, axes: Any) -> NetworkSubset:
        """The parent probe restricted to some of these coordinates (``axes``: positions among them)."""
        return NetworkSubset(self.parent, self.axes[np.asarray(axes, dtype=np.int64)])


def supports_engine(net: Network) -> bool:
    """Whether the engine applies: it has a rule for the network's loss (:mod:`layerkit.fast.loss_rules`: the
    sigmoid cross-entropy with its final Sigmoid fused in, the softmax cross-entropy, the squared error), and
    the network's class does not redefine how the cost is evaluated (see
    :func:`~layerkit.nn.network.evaluation_overrides`), and no layer is batch-coupled (``batch_coupled``:
    perturbed copies stacked along the example axis would mix in its statistics) without one of layerkit's
    rules that keeps each perturbation's batch apart (``batch_aware``: BatchNorm's and Dropout's, see
    :mod:`layerkit.fast.batch_rules`), or opts out (``engine_ready = False``)."""
    return (has_loss_rule(net) and not evaluation_overrides(net)
            and not any((getattr(layer, "batch_coupled", False) and not rule_for(layer).batch_aware)
                        or getattr(layer, "engine_ready", True) is False for layer in net.layers))
