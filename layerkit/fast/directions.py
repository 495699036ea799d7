"""Exact cost changes of a network along directions, for directional checks.

A direction ``u`` (supported on a flat range ``[lo, hi)``) moves the parameters of several layers at once.
The change it makes to the first layer it touches is ``Dense.direction_change`` (exact: the layer is
linear), and from there it is carried through the layers with their ``propagate`` rules, layers it touches
adding their own parameter change; the changed loss terms are summed with the cancellation-free identity
``log1p(s expm1(d)) - y d``, so each difference carries a rounding of only ``eps sum |terms|``, which
:meth:`NetworkDirections.delta` reports.  :meth:`NetworkDirections.verify` compares the predictions with the
network's own cost before a check relies on them.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.losses import L2
from ..nn.network import Network
from ..numerics import Direction
from .changes import ColumnsChange
from .confirm import Prediction, Rules
from .loss_rules import has_loss_rule
from .rules import rule_for
from .state import NetworkState


class NetworkDirections:
    """Exact cost differences along directions for a network of layers with ``direction_change``.

    ``noise_floor`` is a measured noise level of the engine itself, which ``delta`` reports when it exceeds
    the rounding bound (a user's ``propagate`` written as ``f(x + d) - f(x)`` cancels): 0 until the check has
    measured it (:meth:`with_noise_floor`).
    """

    exact = True

    def __init__(self, state: NetworkState, x0: NDArray, f0: float) -> None:
        self.x0, self.f0, self.dtype = x0, float(np.real(f0)), x0.dtype
        self.eps = max(float(np.finfo(self.dtype).eps), state.eps)
        #: As :attr:`~layerkit.fast.probe.NetworkProbe.noise_excess`.
        self.noise_excess = self.eps / float(np.finfo(self.dtype).eps)
        self.net, self.layers, self.acts, self.Y = state.net, state.layers, state.acts, state.Y
        self.loss, self.m, self.lambda_, self.penalized = state.loss, state.m, state.lambda_, state.penalized
        self.owner: list[tuple[int, str, Any]] = [(b.index, b.param, self.net.layout[b.block])
                                                  for b in state.bindings]
        self.n_evals = 0
        self.noise_floor = 0.0
        self._bases: dict[tuple[int, int, int, bytes], NDArray] = {}
        self.rules = Rules(self.layers, self.acts, state.bindings, self.net.params, self.net.layout)

    def with_noise_floor(self, level: float) -> NetworkDirections:
        """This engine (its rules, refusals and caches shared) reporting at least ``level`` of noise."""
        twin = copy.copy(self)
        twin.noise_floor = float(level)
        return twin

    def confirmed(self) -> bool:
        """Whether every rule the propagation uses agrees with its layer's forward (see
        :mod:`layerkit.fast.confirm`); ``rules.notes`` says which does not."""
        return all(self.rules.ok(k, "direction_change" if layer.param_shapes else "propagate")
                   for k, layer in enumerate(self.layers))

    @staticmethod
    def supports(net: Network) -> bool:
        if not has_loss_rule(net):
            return False
        layers = list(net.body)
        with_params = [layer for layer in layers if layer.param_shapes]
        return (all(rule_for(layer).has("direction_change") and len(layer.param_shapes) == 1 for layer in with_params)
                and all(rule_for(layer).has("propagate") for layer in layers)
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
                    base = self._unit_changes(li, layer, dirs, unit, rows)  # (k, m, c)
                    change = ColumnsChange(rows, (steps[:, :, None, None] * base[None]).reshape(
                        (S * k,) + base.shape[1:]))
                else:
                    dth = (steps[:, :, None, None] * unit[None]).reshape((S * k,) + unit.shape[1:])
                    change = self.rules.rule(li).direction_change(self.acts[li], change, dth, rows)
            elif change is not None:
                change = self.rules.propagate(li, self.acts[li], self.acts[li + 1], change)
        assert change is not None  # a direction moves at least one block
        total, noise = self.loss.dense(change.dense(self.loss.Z.shape), with_noise=True)
        total, noise = total / self.m, noise / self.m
        if self.lambda_:
            pen = self.penalized[lo0:hi0]
            th = self.x0[lo0:hi0][pen].astype(np.float64)
            su = flat_steps[:, None] * np.repeat(U[:, pen][None], S, axis=0).reshape(S * k, -1)
            pterms = L2.change(self.lambda_, self.m, th[None, :], su)
            total = total + pterms.sum(axis=1)
            noise = noise + 4 * self.eps * np.abs(pterms).sum(axis=1)
        return total.reshape(S, k), noise.reshape(S, k)

    def _group(self, dirs: Sequence[Direction], idx: list[int], steps: NDArray) -> tuple[NDArray, NDArray]:
        return self._batch([dirs[j] for j in idx], steps[:, idx].astype(np.float64))

    def _unit_changes(self, li: int, layer: Any, dirs: Sequence[Direction], unit: NDArray, rows: slice) -> NDArray:
        """The first touched layer's output change for a unit step along each direction, ``(k, m, c)``:
        linear in the step, so computed once per direction (kept by the direction's content) and scaled."""
        keys = [(li, d.lo, d.hi, hashlib.blake2b(np.ascontiguousarray(d.u).tobytes(), digest_size=16).digest())
                for d in dirs]
        missing = [j for j, key in enumerate(keys) if key not in self._bases]
        if missing:
            fresh = self.rules.rule(li).direction_change(self.acts[li], None, unit[missing], rows).delta
            for j, row in zip(missing, fresh):
                self._bases[keys[j]] = row
        return np.stack([self._bases[key] for key in keys])

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
                out[:, idx], noise[:, idx] = self._group(dirs, idx, steps)
        self.n_evals += steps.size
        return out, np.maximum(noise, 2 * self.noise_floor)

    def predictions(self, seed: int = 0, small_steps: bool = True) -> list[Prediction]:
        """What the check compares with the network's own cost before it relies on the engine: the change
        along a random whole-vector direction at a step that moves the pre-activations noticeably (module
        docstring), and with ``small_steps`` (a network with rules that are not layerkit's own) two more,
        computed as one batch, at the small steps directional checks take (``sqrt(eps)`` and ``eps^(1/3)``
        times ``max(1, max |x|)``): a rule that behaves differently for tiny changes, or for a batch, shows
        there."""
        rng = np.random.default_rng(seed)
        P = self.x0.size
        dirs = []
        for _ in range(3):
            u = rng.standard_normal(P)
            dirs.append(Direction(0, P, u / np.linalg.norm(u)))
        length = max(1.0, float(np.max(np.abs(self.x0))))
        eps = float(np.finfo(self.dtype).eps)
        big = 1e-2 * length
        small = np.array([[np.sqrt(eps) * length, eps ** (1 / 3) * length]])
        predicted, noise = self.delta(dirs[:1], np.array([[big]]))
        cases = [(dirs[0], big, predicted[0, 0], noise[0, 0], "along a random direction")]
        if small_steps:
            p_small, n_small = self.delta(dirs[1:], small)
            cases += [(dirs[1], small[0, 0], p_small[0, 0], n_small[0, 0], "at a small step"),
                      (dirs[2], small[0, 1], p_small[0, 1], n_small[0, 1], "at a small step")]
        self.n_evals -= len(cases)  # not part of the check's own evaluations
        out = []
        for d, t, pred, pn, what in cases:
            theta = np.array(self.x0, copy=True)
            theta += (t * d.u).astype(self.dtype)
            out.append(Prediction("every block", t, theta, t * d.u, float(pred), float(pn), what))
        return out
