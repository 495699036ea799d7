"""Confirm layerkit's rules against a layer's own ``forward`` before the engine relies on them.

A rule (``propagate``, ``series``, ``param_inputs``, ``param_change``, ``direction_change``) restates a layer's
math for the engine (:mod:`layerkit.fast.rules`): only layerkit's own rules do, for layerkit's own math.  On
an instance of exactly a rule's class they are used as they are (their tests compare them with ``forward``).
On anything else -- a subclass that inherits the math, a parameterless layer's batched ``forward``
(:class:`~layerkit.fast.forward_rule.ForwardRule`), an Elementwise layer's ``fn``
(:class:`~layerkit.fast.fn_rule.FnRule`) -- :class:`Rules` compares, the first time a rule is asked for, its
prediction with the layer's own ``forward`` on **every** example, under a dense random change that moves
every unit at once (a change confined to one unit, one example or one batch is caught as surely as one
spread over all), and with column, rank-one and column-range changes.  A rule that disagrees is not used, and
a note says so; the engine then takes a path that calls ``forward`` itself.

The change moves every input or parameter by 10% of its size (plus 0.1), so that a rule that says something
else than ``forward`` differs from it by a sizeable fraction of the change, while the rounding of forming
``forward(x + D) - forward(x)`` (at most ``eps`` times the sum of the magnitudes a layer adds up, typically a
few hundred ``eps`` of the change) stays far below ``sqrt(eps)`` of it: the comparison allows ``sqrt(eps)``
of the largest change (1.5e-8 in float64, 3.5e-4 in float32), plus ``AGREEMENT eps`` of each value, and for
``series`` the truncation after 4 terms at ``tau = 1e-3``, about ``1e-12`` of the change (a series of linear
pieces, with ``kink_distance``, on the entries whose change stays on its piece).  A series whose coefficients
were derived numerically from ``fn`` or ``forward`` at complex points (which is not what ``forward``
computes on real input) is also compared at a finite difference's scale, entry by entry, to ``forward``'s own
rounding (:meth:`Rules._derived_closely`): ``sqrt(eps)`` of the largest change would let through a coefficient
``1e-8`` off, which a check resolves.  Parameters are
moved in the network's own buffer and put back (the caller holds :meth:`~layerkit.Network.preserved`).

A rule here is layerkit's own code describing layerkit's own math, so a first comparison on every example
is all it needs; nothing a user writes about derivatives is a rule (the cost is the only truth).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from ..numerics import AGREEMENT, least_precise, machine_eps
from .changes import ColumnChange, ColumnsChange, DenseChange, RankOneChange, SeriesChange, matrix_shape
from .fn_rule import Unavailable
from .rules import BoundRule, registration_for, rule_for

#: The relative size of the changes at which a derived series is compared with ``forward`` entry by entry
#: (:meth:`Rules._derived_closely`), that of a finite difference's, and the powers summed there.
CLOSE_STEP = 1e-4
CLOSE_TERMS = 5
#: The change grows with ``|x|`` up to this many times the step: a function's length scale need not grow with
#: its input (``sin`` at ``x = 60``), and past it the powers summed would not describe the change.
CLOSE_CAP = 4.0
#: A sum of ``m`` terms of random signs exceeds this many times its root sum of squares with probability
#: below ``2 exp(-SIGNS^2 / 2)``, 3e-14 (Hoeffding): beyond it the terms share a sign.
SIGNS = 8.0

#: The members each rule consists of (``param_change`` comes with ``param_inputs`` or ``feature_inputs``,
#: which say what it moves; :func:`_has`).
MEMBERS = {"propagate": ("propagate",), "series": ("series", "series_bound"),
           "param_inputs": ("param_inputs",), "param_change": ("param_change",),
           "direction_change": ("direction_change",)}


def _has(impl: BoundRule, rule: str) -> bool:
    """Whether a layer's rule members include everything ``rule`` consists of."""
    if not impl.has(*MEMBERS[rule]):
        return False
    return rule != "param_change" or impl.has("param_inputs") or impl.has("feature_inputs")


def _close(predicted: NDArray, actual: NDArray, scale: NDArray, eps: float) -> bool:
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64))
        allowed = AGREEMENT * eps * np.asarray(scale, dtype=np.float64) \
            + np.sqrt(eps) * float(np.max(np.abs(actual), initial=0.0))
    return bool(np.all(np.isfinite(diff)) and np.all(diff <= allowed))


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
        self.layers, self.acts, self.params, self.layout = layers, acts, params, layout
        self.impl: list[BoundRule] = [rule_for(layer) for layer in layers]
        self.bindings: dict[int, list[Any]] = {}
        for b in bindings:
            self.bindings.setdefault(b.index, []).append(b)
        self.rng = np.random.default_rng(seed)
        self._known: dict[tuple[int, str], bool] = {}
        self.notes: list[str] = []

    def trusted(self, k: int, rule: str) -> bool:
        """Whether layer ``k``'s ``rule`` is layerkit's own, on an instance of exactly its class with nothing
        of the layer's math set on the instance (see :class:`~layerkit.fast.rules.BoundRule`)."""
        return 0 <= k < len(self.impl) and self.impl[k].trusted and _has(self.impl[k], rule)

    def rule(self, k: int) -> BoundRule:
        """The rule members of layer ``k``, for the engine; use :meth:`ok` first."""
        return self.impl[k]

    def param_change(self, k: int, name: str, row: int, cols: Any, steps: NDArray, x: NDArray, width: int) -> Any:
        """``layers[k].param_change(...)`` (a rule :meth:`ok` confirmed)."""
        return self.impl[k].param_change(name, row, cols, steps, x)

    def propagate(self, k: int, x: NDArray, y: NDArray, change: Any) -> Any:
        """``layers[k].propagate(x, y, change)`` (a rule :meth:`ok` confirmed)."""
        return self.impl[k].propagate(x, y, change)

    def confirm(self, k: int, rule: str) -> bool:
        """Compare layer ``k``'s ``rule`` with its ``forward`` now, whoever wrote it (a layer's contract test
        uses it on layerkit's own rules too); False when the layer has no such rule."""
        if not (0 <= k < len(self.impl) and _has(self.impl[k], rule)):
            return False
        with np.errstate(all="ignore"):
            return bool(getattr(self, "_" + rule)(k, self.impl[k]))

    def ok(self, k: int, rule: str) -> bool:
        """Whether layer ``k`` has rule ``rule`` and it agrees with the layer's ``forward``."""
        key = (k, rule)
        if key not in self._known:
            layer = self.layers[k] if 0 <= k < len(self.layers) else None
            agrees = layer is not None and _has(self.impl[k], rule)
            if agrees and self.trusted(k, rule):
                self._known[key] = True
                return True
            if not agrees and layer is not None and "forward" in getattr(layer, "__dict__", {}) \
                    and registration_for(_class_only(layer)) is not None:
                self.notes.append(f"layer {k} ({layer!r}) has a forward of its own, set on the instance: its "
                                  f"class's {rule} rule is not used; the engine calls that forward instead")
            if agrees:
                try:
                    with np.errstate(all="ignore"):
                        agrees = getattr(self, "_" + rule)(k, self.impl[k])
                except Unavailable:  # an fn without a derived series: its exact path is used, nothing to say
                    agrees = False
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
        """The layer's input and output on every example (the arrays themselves), and the eps of the less
        precise of the two (a float64 layer fed float32 rounds its input change like float32)."""
        x, y = self.acts[k], self.acts[k + 1]
        return x, y, machine_eps(least_precise(np.result_type(y.dtype, np.float32), x))

    def _forward(self, rule: BoundRule, x: NDArray) -> NDArray:
        return np.asarray(rule.layer.forward(np.ascontiguousarray(x)))

    def _change(self, x: NDArray) -> NDArray:
        """A dense change of ``x``: about a tenth of ``1 + |x|`` per entry, of random size and sign (uniform
        with the spread of a standard normal, which is five times slower to draw for a large input)."""
        u = self.rng.random(x.shape)
        u -= 0.5
        u *= 0.2 * np.sqrt(12.0)
        return (u * (1 + np.abs(x))).astype(x.dtype)

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
        n = x.shape[1]
        D = self._change(x)
        c = int(self.rng.integers(n))
        u = D[:, c].copy()
        column = np.zeros_like(D)
        column[:, c] = u
        changes = [(DenseChange(D[None].copy()), D), (ColumnChange(c, u[None].copy()), column)]
        if x.ndim == 2:  # rank-one and column-range changes arise on (m, n) activations only
            v = np.asarray(self.rng.standard_normal(n)).astype(x.dtype)
            cols = slice(0, max(1, n // 2))
            changes += [
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
        distance = np.asarray(layer.kink_distance(x), dtype=np.float64) if layer.has("kink_distance") else None
        for change, dense in variants:
            out = layer.series(x, y, change)
            predicted = np.tensordot(powers, out_dense(out, y.shape), axes=1)
            D = np.tensordot(powers, dense, axes=1).astype(x.dtype)
            after = self._forward(layer, x + D)
            actual, scale = after - y, np.abs(after) + np.abs(y)
            if distance is not None:  # a series of pieces claims nothing where the change may reach a kink
                on = np.abs(D.astype(np.float64)) < distance
                predicted, actual, scale = predicted[on], actual[on], scale[on]
            if not _close(predicted, actual, scale, eps):
                return False
        return not layer.derived or self._derived_closely(layer, x, y, eps)

    def _derived_closely(self, layer: Any, x: NDArray, y: NDArray, eps: float) -> bool:
        """A series whose coefficients were derived numerically (:attr:`~layerkit.fast.rules.BoundRule.derived`:
        from ``fn`` or ``forward`` at complex points, which is not what ``forward`` computes on real input)
        against ``forward`` at the scale of a finite difference's changes, to the rounding of ``forward``
        itself.  A dense change ``D`` of ``h min(1 + |x|, CLOSE_CAP)`` per entry (``h``: :data:`CLOSE_STEP`, or ``eps^(1/3)``
        where that is larger, a central difference's step in float32), with ``x + D`` formed first so that the
        change ``forward`` sees is known exactly, summed over :data:`CLOSE_TERMS` powers (the rest, ``T_6 D^6``,
        is below rounding).  ``forward(x + D) - forward(x)`` rounds to about ``eps (|forward(x + D)| +
        |forward(x)|)``, and the comparison is made twice:

        * entry by entry, within that rounding or ``sqrt(eps)`` of the entry's own change (a forward that
          subtracts large intermediates, ``exp(x) - exp(-x)``, rounds to more than ``eps |f|``);
        * per unit, summed over the examples with the signs of ``D``: the roundings then add like random
          signs, while a coefficient that misreads ``forward`` by ``delta`` adds ``delta |D|`` on every example.
          The sum is allowed ``AGREEMENT`` times the root sum of squares of the modelled roundings, or
          :data:`SIGNS` times that of the differences themselves (a forward that rounds to more than the model
          says): a misreading above both, on most of a unit's examples, is caught, which is what a check's
          numerical gradient, a sum over the same examples, would carry beyond its own rounding.

        The comparison at ``tau = 1e-3`` before allows ``sqrt(eps)`` of the largest change anywhere."""
        h = max(CLOSE_STEP, eps ** (1 / 3))
        D = (h * np.minimum(1 + np.abs(x), CLOSE_CAP) * self.rng.standard_normal(x.shape)).astype(x.dtype)
        xd = np.asarray(x + D, dtype=x.dtype)
        exact = xd.astype(np.float64) - x.astype(np.float64)  # the change forward sees (exact: close values)
        coeffs = np.zeros((CLOSE_TERMS, 1) + x.shape, dtype=x.dtype)
        coeffs[0, 0] = exact.astype(x.dtype)
        out = out_dense(layer.series(x, y, SeriesChange(coeffs)), y.shape).astype(np.float64).sum(axis=0)
        after = self._forward(layer, xd).astype(np.float64)
        actual = after - y.astype(np.float64)
        if out.shape != actual.shape:
            return False
        rounding = eps * (np.abs(after) + np.abs(y.astype(np.float64)) + np.abs(out))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = out - actual
            each = np.all(np.abs(diff) <= AGREEMENT * rounding + np.sqrt(eps) * np.abs(actual))
            summed = np.abs(np.sum(diff * np.sign(exact), axis=0))
            allowed = np.maximum(AGREEMENT * np.sqrt(np.sum(rounding * rounding, axis=0)),
                                 SIGNS * np.sqrt(np.sum(diff * diff, axis=0)))
            return bool(each and np.all(summed <= allowed))

    def _perturbed(self, k: int, layer: Any, dtheta: NDArray, x: NDArray, b: Any = None) -> NDArray:
        """``forward(x)`` with the layer's parameter ``b`` (its only one by default) moved by ``dtheta``, then
        put back."""
        b = self.bindings[k][0] if b is None else b
        block = self.layout[b.block]
        view = self.params[block.slice]
        old = view.copy()
        view += dtheta.ravel().astype(view.dtype)
        try:
            return self._forward(layer, x)
        finally:
            view[...] = old

    def _param_inputs(self, k: int, layer: Any) -> bool:
        """Every parameter of the layer moved at once, ``F dtheta^T`` against ``forward``, one parameter at a
        time (``dtheta`` as the matrix of :func:`~layerkit.fast.changes.matrix_shape`, output columns or
        channels first)."""
        if k not in self.bindings:
            return False
        x, y, eps = self._io(k)
        for b in self.bindings[k]:
            shape = self.layout[b.block].shape
            if not shape:
                return False
            theta = self.params[self.layout[b.block].slice].reshape(shape)
            dtheta = (0.1 * (1 + np.abs(theta)) * self.rng.standard_normal(shape)).astype(theta.dtype)
            F = layer.param_inputs(b.param, x)
            dmat = dtheta.reshape(shape[0], -1).astype(np.float64)
            cols = F.columns(0, F.shape[1], np.float64)
            if cols.shape[1] != dmat.shape[1]:
                return False
            predicted = np.moveaxis(np.tensordot(cols, dmat, axes=([1], [1])), -1, 1)
            after = self._perturbed(k, layer, dtheta, x, b)
            if predicted.shape != after.shape or not _close(predicted, after - y, np.abs(after) + np.abs(y), eps):
                return False
        return True

    def _param_change(self, k: int, layer: Any) -> bool:
        if not layer.has("param_inputs"):
            return self._feature_change(k, layer)
        if not self._param_inputs(k, layer):
            return False
        x, y, eps = self._io(k)
        for b in self.bindings[k]:
            rows, cols = matrix_shape(self.layout[b.block].shape)
            r = int(self.rng.integers(rows))
            idx = np.sort(self.rng.choice(cols, size=min(cols, 8), replace=False))
            steps = (0.1 * self.rng.standard_normal(idx.size)).astype(y.dtype)
            change = layer.param_change(b.param, r, idx, steps, x)
            F = layer.param_inputs(b.param, x)
            expect = np.stack([steps[i] * F.columns(int(c), int(c) + 1, np.float64)[:, 0]
                               for i, c in enumerate(idx)])
            got = change.dense(y.shape)[:, :, r]
            if got.shape != expect.shape or not _close(got, expect, np.abs(expect), eps):
                return False
        return True

    def _feature_change(self, k: int, layer: Any) -> bool:
        """``param_change`` of per-feature vectors against ``forward``: each entry of the vector moved on its
        own (every feature's, up to 8), one change per entry, against the output it makes; every other feature
        must stay put.  Also ``feature_inputs``, whose column ``r`` is that change per unit step."""
        if k not in self.bindings:
            return False
        x, y, eps = self._io(k)
        for b in self.bindings[k]:
            shape = self.layout[b.block].shape
            if len(shape) != 1 or y.ndim < 2 or y.shape[1] != shape[0]:
                return False
            theta = self.params[self.layout[b.block].slice]
            rows = np.sort(self.rng.choice(shape[0], size=min(shape[0], 8), replace=False))
            steps = (0.1 * (1 + np.abs(theta[rows])) * self.rng.standard_normal(rows.size)).astype(theta.dtype)
            G = np.asarray(layer.feature_inputs(b.param, x), dtype=np.float64)
            if G.shape != y.shape:
                return False
            for r, t in zip(rows, steps):
                change = layer.param_change(b.param, int(r), np.zeros(1, dtype=np.int64), np.array([t]), x)
                dtheta = np.zeros(shape, dtype=theta.dtype)
                dtheta[r] = t
                after = self._perturbed(k, layer, dtheta, x, b)
                scale = np.abs(after) + np.abs(y)
                moved = change.dense(y.shape)
                if moved.shape != (1,) + y.shape or not _close(moved[0], after - y, scale, eps) \
                        or not _close(float(t) * G[:, r], (after - y)[:, r], scale[:, r], eps):
                    return False
        return True

    def _direction_change(self, k: int, layer: Any) -> bool:
        if k not in self.bindings:
            return False
        x, y, eps = self._io(k)
        if len(self.bindings[k]) != 1:
            return False
        b = self.bindings[k][0]
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


class _Bare:
    """An object of a layer's class with nothing set on it (to ask whether the class itself has a rule)."""


def _class_only(layer: Any) -> Any:
    bare = _Bare()
    bare.__class__ = type(layer)
    return bare
