"""Confirm a layer's fast-path rules against its own ``forward`` before, and while, the engine relies on them.

A rule (``propagate``, ``series``, ``param_inputs``, ``param_change``, ``direction_change``) restates a layer's
math for the engine.  If it does not say what ``forward`` computes -- a subclass changed ``forward`` and not
the rule, ``forward`` was replaced on the instance, a user's rule is simply wrong -- the engine would check the
rule instead of the layer.  :class:`Rules` answers "may the engine use rule R of layer k?" by comparing, the
first time it is asked, the rule's prediction with the layer's own ``forward`` under a dense random change
that moves every unit at once (a change confined to one unit is caught as surely as one spread over all),
on a random subset of at most :data:`SUBSET` examples (layers act on examples one by one).

The change moves every input or parameter by 10% of its size (plus 0.1), so that a rule that says something
else than ``forward`` differs from it by a sizeable fraction of the change, while the rounding of forming
``forward(x + D) - forward(x)`` (at most ``eps`` times the sum of the magnitudes a layer adds up, typically a
few hundred ``eps`` of the change) stays far below ``sqrt(eps)`` of it: the comparison allows ``sqrt(eps)``
of the largest change (1.5e-8 in float64, 3.5e-4 in float32), plus ``AGREEMENT eps`` of each value, and for
``series`` the truncation after 4 terms at ``tau = 1e-3``, about ``1e-12`` of the change.
A rule that disagrees is not used, and a note says so; the engine then takes a path that calls ``forward``.
Parameters are moved in the network's own buffer and put back (the caller holds
:meth:`~layerkit.Network.preserved`).

A first comparison cannot cover every change a check will make (a rule may be right for the large changes it
is confirmed with and wrong for the tiny ones of a finite difference, right for one change at a time and
wrong for a batch, right for every unit but one).  So every call the engine makes to a ``propagate`` rule of
a layer that is not layerkit's own is spot-checked as it happens (:meth:`Rules.propagate`): each batch item
of the very change it was given, on :data:`SPOT` random examples, against ``forward`` of the changed input,
within ``AGREEMENT eps`` of the values and of their column's largest (the changes are small there, so no
``sqrt(eps)`` allowance).  A
disagreement raises :class:`RuleMismatch`; the engine then drops the rule and computes again without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from ..numerics import AGREEMENT
from .changes import ColumnChange, ColumnsChange, DenseChange, RankOneChange, SeriesChange
from .rules import BoundRule, registered, rule_for

#: Examples a rule is confirmed on (a random subset when there are more).
SUBSET = 256
#: Examples each engine call to a user's ``propagate`` is spot-checked on.
SPOT = 16

#: The members each rule consists of.
MEMBERS = {"propagate": ("propagate",), "series": ("series", "series_bound"),
           "param_inputs": ("param_inputs",), "param_change": ("param_change", "param_inputs"),
           "direction_change": ("direction_change",)}


def _close(predicted: NDArray, actual: NDArray, scale: NDArray, eps: float) -> bool:
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64))
        allowed = AGREEMENT * eps * np.asarray(scale, dtype=np.float64) \
            + np.sqrt(eps) * float(np.max(np.abs(actual), initial=0.0))
    return bool(np.all(np.isfinite(diff)) and np.all(diff <= allowed))


class RuleMismatch(Exception):
    """A rule disagreed with its layer's forward on a change the engine gave it (see :meth:`Rules.propagate`)."""

    def __init__(self, k: int, rule: str, difference: float) -> None:
        super().__init__(f"the {rule} rule of layer {k} disagreed with its forward by {difference:.2e}")
        self.k, self.rule, self.difference = k, rule, difference


class EngineRefused(Exception):
    """A rule an engine relies on disagreed with its layer's forward during a check, and the engine has no way
    to go on without it: the check starts over with the subject's own cost (the message says which rule)."""


T = TypeVar("T")


def answer(rules: Rules, request: Callable[[], T], without: Callable[[], None] | None) -> T:
    """The one policy for a rule that disagrees with its layer's forward mid-check: the rule is refused (a note
    says so) and ``request`` is answered again without it, after ``without()`` has dropped what was built on
    the rule (the Taylor tables).  An engine with no way to answer without the rule (``without`` None) raises
    :class:`EngineRefused` instead, and the check starts over on the subject's own cost."""
    while True:
        try:
            return request()
        except RuleMismatch as exc:
            rules.refuse(exc)
            if without is None:
                raise EngineRefused(rules.notes[-1]) from None
            without()


@frozen(eq=False)
class Prediction:
    """An engine's cost change for one perturbation of the point, to compare with the network's own cost
    (:mod:`layerkit.check.engine` does): ``point`` is where the real cost is to be evaluated (the perturbed
    parameters, in their dtype), ``direction`` the perturbation in float64 (a noise measurement runs along it
    on disagreement), ``noise`` the prediction's rounding bound, ``what`` how the change was made."""

    block: str
    step: float
    point: NDArray
    direction: NDArray
    predicted: float
    noise: float
    what: str = "along a random direction"


class Rules:
    """Which rules of which layers the engine may use (module docstring); ``notes`` say what was refused."""

    def __init__(self, layers: list[Any], acts: list[NDArray], bindings: Any, params: NDArray, layout: Any,
                 seed: int = 0) -> None:
        """Rules of layerkit's own layers (exactly their classes, nothing set on the instance) are taken as they
        are: their tests compare them with ``forward``.  Everything else is confirmed."""
        self.layers, self.acts, self.params, self.layout = layers, acts, params, layout
        self.impl: list[BoundRule] = [rule_for(layer) for layer in layers]
        self.bindings = {b.index: b for b in bindings}
        self.rng = np.random.default_rng(seed)
        m = acts[0].shape[0]
        self.rows = np.sort(self.rng.choice(m, size=min(m, SUBSET), replace=False))
        self._known: dict[tuple[int, str], bool] = {}
        self.notes: list[str] = []
        self.spot = np.sort(self.rng.choice(m, size=min(m, SPOT), replace=False))
        self._lock = threading.Lock()

    def trusted(self, k: int, rule: str) -> bool:
        """Whether layer ``k``'s ``rule`` is layerkit's own, on an instance of exactly its class with nothing
        of the layer's math set on the instance (see :class:`~layerkit.fast.rules.BoundRule`)."""
        return 0 <= k < len(self.impl) and self.impl[k].trusted and self.impl[k].has(*MEMBERS[rule])

    def rule(self, k: int) -> BoundRule:
        """The rule members of layer ``k``, for the engine; use :meth:`ok` first."""
        return self.impl[k]

    def refuse(self, exc: RuleMismatch) -> None:
        """Stop using a rule that disagreed during a check, with a note."""
        self._known[exc.k, exc.rule] = False
        layer = self.layers[exc.k]
        self.notes.append(f"the {exc.rule} rule of layer {exc.k} ({layer!r}) disagreed with its forward on a "
                          f"change the check made (by {exc.difference:.2e}); the engine calls its forward "
                          "instead")

    def param_change(self, k: int, name: str, row: int, cols: Any, steps: NDArray, x: NDArray,
                     width: int) -> Any:
        """``layers[k].param_change(...)``, spot-checked unless the rule is layerkit's own: every batch item, on
        :data:`SPOT` examples, against ``steps[b] F[:, c_b]`` in output column ``row`` (``F`` from
        ``param_inputs``, itself confirmed against ``forward``); ``width`` is the output's.  Raises
        :class:`RuleMismatch` on disagreement."""
        rule = self.impl[k]
        change = rule.param_change(name, row, cols, steps, x)
        if self.trusted(k, "param_change"):
            return change
        idx = self.spot
        got = np.asarray(change.rows(idx, width), dtype=np.float64)
        F = rule.param_inputs(name, x)
        c = np.arange(F.shape[1])[cols]
        expect = np.zeros_like(got)
        for b, cb in enumerate(c):
            expect[b, :, row] = float(steps[b]) * F.columns(int(cb), int(cb) + 1, np.float64)[idx, 0]
        eps = float(np.finfo(np.result_type(x.dtype, np.float32)).eps)
        diff = np.abs(got - expect)
        if not (np.all(np.isfinite(diff)) and np.all(diff <= AGREEMENT * eps * (np.abs(expect) + np.abs(got)))):
            raise RuleMismatch(k, "param_change", float(np.nanmax(np.where(np.isfinite(diff), diff, np.inf))))
        return change

    def propagate(self, k: int, x: NDArray, y: NDArray, change: Any) -> Any:
        """``layers[k].propagate(x, y, change)``, spot-checked unless the rule is layerkit's own: every batch
        item of ``change`` on :data:`SPOT` examples against ``forward`` (module docstring).  Raises
        :class:`RuleMismatch` on disagreement."""
        layer, rule = self.layers[k], self.impl[k]
        if self.trusted(k, "propagate"):
            return rule.propagate(x, y, change)
        idx = self.spot
        before = change.rows(idx, x.shape[1])  # taken first: a rule may consume the change it is given
        out = rule.propagate(x, y, change)
        got = np.asarray(out.rows(idx, y.shape[1]), dtype=np.float64)
        B, k_rows, n_in = before.shape
        stacked = (x[idx][None] + before).reshape(B * k_rows, n_in).astype(x.dtype)
        with self._lock, np.errstate(all="ignore"):  # forward may keep caches: one caller at a time
            after = np.asarray(layer.forward(np.ascontiguousarray(stacked)), dtype=np.float64)
        if after.shape != (B * k_rows, y.shape[1]):
            raise RuleMismatch(k, "propagate", float("inf"))
        after = after.reshape(B, k_rows, y.shape[1])
        ys = y[idx].astype(np.float64)[None]
        eps = float(np.finfo(np.result_type(y.dtype, np.float32)).eps)
        diff = np.abs(got - (after - ys))
        # forming forward(x + d) - y rounds with the size of the terms a layer sums, which a value near zero
        # hides: the largest value of each column over the examples stands in for them
        size = np.abs(after) + np.abs(ys)
        if rule.has("forward_scale"):  # a sum of large terms can be small: their size is the rounding's
            terms = np.asarray(rule.forward_scale(stacked), dtype=np.float64).reshape(after.shape)
            size = size + terms + np.asarray(rule.forward_scale(x[idx]), dtype=np.float64)[None]
        allowed = AGREEMENT * eps * (size + np.abs(got) + np.max(size, axis=1, keepdims=True))
        if not (np.all(np.isfinite(diff)) and np.all(diff <= allowed)):
            worst = float(np.nanmax(np.where(np.isfinite(diff), diff, np.inf)))
            raise RuleMismatch(k, "propagate", worst)
        return out

    def confirm(self, k: int, rule: str) -> bool:
        """Compare layer ``k``'s ``rule`` with its ``forward`` now, whoever wrote it (a layer's contract test
        uses it on layerkit's own rules too); False when the layer has no such rule."""
        if not (0 <= k < len(self.impl) and self.impl[k].has(*MEMBERS[rule])):
            return False
        with np.errstate(all="ignore"):
            return bool(getattr(self, "_" + rule)(k, self.impl[k]))

    def ok(self, k: int, rule: str) -> bool:
        """Whether layer ``k`` has rule ``rule`` and it agrees with the layer's ``forward``."""
        key = (k, rule)
        if key not in self._known:
            layer = self.layers[k] if 0 <= k < len(self.layers) else None
            agrees = layer is not None and self.impl[k].has(*MEMBERS[rule])
            if agrees and self.trusted(k, rule):
                self._known[key] = True
                return True
            if not agrees and layer is not None and "forward" in getattr(layer, "__dict__", {}) \
                    and (registered(type(layer)) or all(hasattr(type(layer), n) for n in MEMBERS[rule])):
                self.notes.append(f"layer {k} ({layer!r}) has a forward of its own, set on the instance: its "
                                  f"class's {rule} rule is not used; the engine calls that forward instead")
            if agrees:
                try:
                    with np.errstate(all="ignore"):
                        agrees = getattr(self, "_" + rule)(k, self.impl[k])
                except (NotImplementedError, TypeError, ValueError, AttributeError, IndexError) as exc:
                    # a rule that cannot handle a kind of change it may be given is not used; any other
                    # exception is the layer's own failure and reaches the caller
                    agrees = False
                    self.notes.append(f"the {rule} rule of layer {k} ({layer!r}) raised {type(exc).__name__}: "
                                      f"{exc}; the engine calls its forward instead")
                else:
                    if not agrees:
                        self.notes.append(f"the {rule} rule of layer {k} ({layer!r}) does not agree with its "
                                          "forward; the engine calls its forward instead")
            self._known[key] = agrees
        return self._known[key]

    # ------------------------------------------------------------------ one comparison per rule
    def _io(self, k: int) -> tuple[NDArray, NDArray, float]:
        x, y = self.acts[k][self.rows], self.acts[k + 1][self.rows]
        return x, y, float(np.finfo(np.result_type(y.dtype, np.float32)).eps)

    def _forward(self, rule: BoundRule, x: NDArray) -> NDArray:
        return np.asarray(rule.layer.forward(np.ascontiguousarray(x)))

    def _change(self, x: NDArray) -> NDArray:
        return (0.1 * (1 + np.abs(x)) * self.rng.standard_normal(x.shape)).astype(x.dtype)

    def _reads_no_parameters(self, k: int, rule: BoundRule) -> bool:
        """For a layer that declares no parameters: whether its ``forward`` is unchanged when every parameter
        of the network moves (a tied layer reads another's, and a change rule that holds them fixed would
        miss the tie).  The buffer is put back."""
        if getattr(rule.layer, "param_shapes", None) or not self.params.size:
            return True
        x, y, eps = self._io(k)
        old = self.params.copy()
        self.params += (0.1 * (1 + np.abs(old)) * self.rng.standard_normal(old.shape)).astype(old.dtype)
        try:
            after = self._forward(rule, x)
        finally:
            self.params[...] = old
        base = self._forward(rule, x)
        return after.shape == base.shape and _close(after, base, np.abs(base), eps)

    def _propagate(self, k: int, layer: Any) -> bool:
        if not self._reads_no_parameters(k, layer):
            self.notes.append(f"layer {k} ({layer.layer!r}) declares no parameters but its forward changes when "
                              "the network's parameters do (it reads another layer's): the engine re-runs it "
                              "with every change instead")
            return False
        x, y, eps = self._io(k)
        m, n = x.shape
        D = self._change(x)
        c = int(self.rng.integers(n))
        u = D[:, c].copy()
        v = np.asarray(self.rng.standard_normal(n)).astype(x.dtype)
        cols = slice(0, max(1, n // 2))
        changes = [
            (DenseChange(D[None].copy()), D),
            (ColumnChange(c, u[None].copy()), np.where(np.arange(n) == c, u[:, None], 0).astype(x.dtype)),
            (RankOneChange(u[None].copy(), v.copy()), np.outer(u, v).astype(x.dtype)),
            (ColumnsChange(cols, D[None, :, cols].copy()),
             np.where((np.arange(n) >= cols.start) & (np.arange(n) < cols.stop), D, 0).astype(x.dtype)),
        ]
        for change, dense in changes:
            predicted = layer.propagate(x, y, change).dense(y.shape)[0]
            after = self._forward(layer, x + dense)
            if not _close(predicted, after - y, np.abs(after) + np.abs(y), eps):
                return False
        return True

    def _series(self, k: int, layer: Any) -> bool:
        x, y, eps = self._io(k)
        m, n = x.shape
        K, tau = 4, 1e-3
        coeffs = (self.rng.standard_normal((K, 1, m, n)) * (1 + np.abs(x))).astype(x.dtype)
        c = int(self.rng.integers(n))
        v = self.rng.standard_normal((1, n)).astype(x.dtype)
        variants = [
            (SeriesChange(coeffs.copy()), coeffs[:, 0]),
            (SeriesChange(coeffs[:, :, :, c].copy(), np.array([c])),
             np.where(np.arange(n) == c, coeffs[:, 0, :, c][..., None], 0)),
            (SeriesChange(coeffs[:, :, :, c].copy(), v=v.copy()), coeffs[:, 0, :, c][..., None] * v[0]),
        ]
        powers = tau ** np.arange(1, K + 1)
        for change, dense in variants:
            out = layer.series(x, y, change)
            predicted = np.tensordot(powers, out_dense(out, y.shape), axes=1)
            D = np.tensordot(powers, dense, axes=1).astype(x.dtype)
            after = self._forward(layer, x + D)
            if not _close(predicted, after - y, np.abs(after) + np.abs(y), eps):
                return False
        return True

    def _perturbed(self, k: int, layer: Any, dtheta: NDArray, x: NDArray) -> NDArray:
        """``forward(x)`` with the layer's (only Dense-like) parameter moved by ``dtheta``, then put back."""
        b = self.bindings[k]
        block = self.layout[b.block]
        view = self.params[block.slice]
        old = view.copy()
        view += dtheta.ravel().astype(view.dtype)
        try:
            return self._forward(layer, x)
        finally:
            view[...] = old

    def _param_inputs(self, k: int, layer: Any) -> bool:
        if k not in self.bindings:
            return False
        x, y, eps = self._io(k)
        b = self.bindings[k]
        shape = self.layout[b.block].shape
        theta = self.params[self.layout[b.block].slice].reshape(shape)
        dtheta = (0.1 * (1 + np.abs(theta)) * self.rng.standard_normal(shape)).astype(theta.dtype)
        F = layer.param_inputs(b.param, x)
        predicted = F.columns(0, F.shape[1], np.float64) @ dtheta.T.astype(np.float64)
        after = self._perturbed(k, layer, dtheta, x)
        return _close(predicted, after - y, np.abs(after) + np.abs(y), eps)

    def _param_change(self, k: int, layer: Any) -> bool:
        if not self._param_inputs(k, layer):
            return False
        x, y, eps = self._io(k)
        b = self.bindings[k]
        rows, cols = self.layout[b.block].shape
        r = int(self.rng.integers(rows))
        idx = np.sort(self.rng.choice(cols, size=min(cols, 8), replace=False))
        steps = (0.1 * self.rng.standard_normal(idx.size)).astype(y.dtype)
        change = layer.param_change(b.param, r, idx, steps, x)
        F = layer.param_inputs(b.param, x)
        expect = np.stack([steps[i] * F.columns(int(c), int(c) + 1, np.float64)[:, 0] for i, c in enumerate(idx)])
        got = change.dense(y.shape)[:, :, r]
        return _close(got, expect, np.abs(expect), eps)

    def _direction_change(self, k: int, layer: Any) -> bool:
        if k not in self.bindings:
            return False
        x, y, eps = self._io(k)
        b = self.bindings[k]
        shape = self.layout[b.block].shape
        theta = self.params[self.layout[b.block].slice].reshape(shape)
        dtheta = (0.1 * (1 + np.abs(theta)) * self.rng.standard_normal(shape)).astype(theta.dtype)
        D = self._change(x)
        rows = slice(0, shape[0])
        with_input = layer.direction_change(x, DenseChange(D[None].copy()), dtheta[None].copy(), rows)
        alone = layer.direction_change(x, None, dtheta[None].copy(), rows)
        after = self._perturbed(k, layer, dtheta, x + D)
        after_alone = self._perturbed(k, layer, dtheta, x)
        return (_close(with_input.dense(y.shape)[0], after - y, np.abs(after) + np.abs(y), eps)
                and _close(alone.dense(y.shape)[0], after_alone - y, np.abs(after_alone) + np.abs(y), eps))


def out_dense(change: SeriesChange, shape: tuple[int, int]) -> NDArray:
    """The coefficients of a series change as ``(K, m, n)`` arrays (batch item 0)."""
    K = change.coeffs.shape[0]
    if change.cols is not None:
        out = np.zeros((K,) + shape, dtype=change.coeffs.dtype)
        out[:, :, int(change.cols[0])] = change.coeffs[:, 0]
        return out
    if change.v is not None:
        return change.coeffs[:, 0][..., None] * change.v[0]
    return change.coeffs[:, 0]
