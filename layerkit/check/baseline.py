"""The first step of every check: the analytic gradient at ``x0``, twice, and what that says on its own.

The gradient is evaluated through fresh buffers, then through the buffers the first call left: a
difference is a ``stateful-gradient`` finding (it fails the check), and two different costs at the same
point a ``nondeterministic-cost`` one.  A network of layerkit's own layers is stateless by construction and
is evaluated once.  The time the evaluations took is kept for auto mode.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from ..numerics import least_precise, machine_eps
from .ledger import Ledger
from .subjects import Subject
from .verdicts import nondeterministic_cost, stateful_gradient


@frozen(eq=False)
class Baseline:
    """What the analytic side says at ``x0``.

    Attributes
    ----------
    f0 : scalar
        The cost at ``x0`` (as the subject returned it).
    a : NDArray, shape (P,)
        The analytic gradient, in the dtype the subject returned it (float32 or float64).
    f1 : float
        The cost of the second evaluation (``f0`` when there was none).
    seconds_per_eval : float
        Time of one evaluation of cost and gradient.
    started : float
        ``time.perf_counter()`` when the check started (its reports' ``seconds`` count from it).
    precision : numpy.dtype
        The dtype the subject's arithmetic rounds like (:attr:`~layerkit.check.subjects.Subject.precision`).
    """

    f0: Any
    a: NDArray
    f1: float
    seconds_per_eval: float
    started: float
    precision: np.dtype = np.dtype(np.float64)

    @property
    def cost(self) -> float:
        return float(np.real(self.f0))

    @property
    def deterministic(self) -> bool:
        return self.f1 == self.f0

    def rounding_dtype(self, x_dtype: Any) -> np.dtype:
        """The dtype the analytic gradient's rounding is judged in: the least precise of the parameters', the
        gradient's own and the subject's arithmetic (a float32 gradient of a float64 cost, or a gradient
        through a float32 activation, carries float32 rounding)."""
        x = np.dtype(x_dtype)
        if x.kind != "f" or self.a.dtype.kind != "f":
            return x
        return least_precise(x, self.a.dtype, self.precision)


def same_gradient(a: NDArray, b: NDArray) -> bool:
    """Equal up to the rounding a repeated evaluation may show (multithreaded sums): ``8 eps max |a|``."""
    if a.shape != b.shape:
        return False
    with np.errstate(invalid="ignore"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0))
    finite = np.isfinite(a) == np.isfinite(b)
    return bool(finite.all() and np.all(diff[np.isfinite(diff)] <= 8 * machine_eps(a.dtype) * scale))


def baseline(subject: Subject, ledger: Ledger) -> Baseline:
    """The analytic gradient at ``x0`` (module docstring); the evaluations are counted as ``analytic``."""
    t = time.perf_counter()
    f0, a = subject.evaluate(fresh=True)
    if subject.known_stateless:
        ledger.count("analytic", 1)
        return Baseline(f0, a, float(np.real(f0)), time.perf_counter() - t, t, subject.precision)
    f1, a1 = subject.evaluate(fresh=False)
    ledger.count("analytic", 2)
    per_eval = (time.perf_counter() - t) / 2
    first, again = float(np.real(f0)), float(np.real(f1))
    if abs(again - first) > 4 * machine_eps(subject.x0.dtype) * abs(first):
        ledger.fail(nondeterministic_cost(first, again))
    if not same_gradient(a, a1):
        ledger.fail(stateful_gradient(subject.layout, a, a1))
    return Baseline(f0, a, again, per_eval, t, subject.precision)

