"""Benchmark: layerkit's gradient checks against a naive loop, SciPy, numdifftools and PyTorch.

Run by hand (it takes a few minutes on a 2-core machine):

    pip install '.[bench]'            # numdifftools; torch is used when installed, skipped otherwise
    python benchmarks/bench_check.py  # --quick for the small networks only

Every ratio compares times measured in the same run.  Where a full run of a slow baseline would take
minutes, it is timed on a random subset of coordinates and scaled to all P, and the row says so
("scaled from N coords").  Accuracy is ||n - a|| / ||a|| against the exact backprop gradient over the
coordinates computed; peak memory is the numpy allocations traced by tracemalloc during the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import layerkit
from layerkit import Network, check_function, check_network
from layerkit.testing import plant_gradient_error

ROWS: list[dict] = []
MEMORY = True


def measure(fn, repeat=1):
    """(result, median seconds, peak MB) of ``fn()``.

    Times come from runs without tracing (tracemalloc slows every allocation down); the peak comes from
    one more run under tracemalloc, unless ``MEMORY`` is off.
    """
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    peak = float("nan")
    if MEMORY:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result, statistics.median(times), peak


def rel(n, a):
    return float(np.linalg.norm(n - a) / np.linalg.norm(a))


def add(net_name, method, seconds, accuracy, peak, note=""):
    ROWS.append(dict(net=net_name, method=method, seconds=seconds, accuracy=accuracy, peak=peak, note=note))


def problem(sizes, m, seed=0):
    rng = np.random.default_rng(seed)
    net = Network.from_sizes(sizes, seed=seed)
    X = rng.random((m, sizes[0]))
    y = rng.integers(0, sizes[-1], m)
    return net, X, y


# ---------------------------------------------------------------------- baselines
def naive_loop(cost, theta, idx, e=1e-4):
    """The course's computeNumericalGradient: two full cost evaluations per coordinate."""
    num = np.zeros(len(idx))
    perturb = np.zeros_like(theta)
    for k, p in enumerate(idx):
        perturb[p] = e
        loss1 = cost(theta - perturb)
        loss2 = cost(theta + perturb)
        num[k] = (loss2 - loss1) / (2 * e)
        perturb[p] = 0
    return num


def on_subset(cost, theta, idx):
    def f(z):
        x = theta.copy()
        x[idx] = z
        return cost(x)
    return f


def torch_cost(sizes, X, y, lam):
    import torch

    Xt = torch.as_tensor(X)
    Y = torch.nn.functional.one_hot(torch.as_tensor(y), sizes[-1]).double()
    m = X.shape[0]
    shapes = [(o, i + 1) for i, o in zip(sizes[:-1], sizes[1:])]

    def f(theta):
        a, start, J = Xt, 0, 0.0
        for k, (o, i1) in enumerate(shapes):
            T = theta[start:start + o * i1].reshape(o, i1)
            start += o * i1
            z = a @ T[:, 1:].T + T[:, 0]
            if k == len(shapes) - 1:
                J = (torch.nn.functional.softplus(z) - Y * z).sum() / m
            else:
                a = torch.sigmoid(z)
            J = J + lam / (2 * m) * (T[:, 1:] ** 2).sum()
        return J
    return f


# ---------------------------------------------------------------------- one network
def bench_network(name, sizes, m, lam=1.0, subset=None, ndt_subset=40, torch_subset=None, repeat=1):
    net, X, y = problem(sizes, m)
    P = net.size
    objective = net.objective(X, y, lam)  # theta -> (cost, grad), on the network itself, restored after
    exact = net.cost_and_gradient(X, y, lam)[1]
    theta = net.params.copy()
    cost = objective.cost
    print(f"\n## {name}: {'-'.join(map(str, sizes))}, m = {m}, P = {P}", flush=True)

    for method in ("central", "richardson", "forward"):
        # median of at least 7 runs: these are the rows whose ratios the targets compare
        rep, t, peak = measure(lambda: check_network(net, X, y, lam, method, diagnose=False), max(repeat, 7))
        add(name, f"layerkit {method} (full)", t, rel(rep.numerical, exact), peak)
        print(f"  layerkit {method}: {t:.3f} s", flush=True)
    if name == "course":  # the exact per-perturbation path, which user layers with only `propagate` take
        import layerkit.fast.series as inc

        saved, inc.MAX_SERIES_TERMS = inc.MAX_SERIES_TERMS, 0
        try:
            for method in ("central", "richardson"):
                rep, t, peak = measure(lambda: check_network(net, X, y, lam, method, diagnose=False), 3)
                add(name, f"layerkit {method} (per-perturbation path, no tables)", t, rel(rep.numerical, exact), peak)
        finally:
            inc.MAX_SERIES_TERMS = saved
    rep, t, peak = measure(lambda: check_network(net, X, y, lam, mode="directional", diagnose=False), max(repeat, 7))
    add(name, "layerkit directional (fast mode)", t, float("nan"), peak, f"{rep.n_evals} evals, passed={rep.passed}")

    rng = np.random.default_rng(1)
    idx = np.arange(P) if subset is None or subset >= P else np.sort(rng.choice(P, subset, replace=False))
    note = "" if len(idx) == P else f"scaled from {len(idx)} coords"
    scale = P / len(idx)

    num, t, peak = measure(lambda: naive_loop(cost, theta, idx))
    add(name, "naive loop (course style, h=1e-4)", t * scale, rel(num, exact[idx]), peak, note)
    print(f"  naive: {t * scale:.2f} s {note}", flush=True)

    import scipy.optimize as so

    f_sub = on_subset(cost, theta, idx)
    num, t, peak = measure(lambda: so.approx_fprime(theta[idx], f_sub, 1.4901161193847656e-08))
    add(name, "scipy approx_fprime (forward)", t * scale, rel(num, exact[idx]), peak, note)
    if len(idx) == P:
        val, t, peak = measure(lambda: so.check_grad(lambda z: cost(z), lambda z: objective(z)[1], theta))
        add(name, "scipy check_grad", t, val / np.linalg.norm(exact), peak)

    try:
        import numdifftools as nd

        sub = idx if len(idx) <= ndt_subset else np.sort(rng.choice(P, ndt_subset, replace=False))
        num, t, peak = measure(lambda: nd.Gradient(on_subset(cost, theta, sub))(theta[sub]))
        add(name, "numdifftools Gradient", t * P / len(sub), rel(num, exact[sub]), peak,
            "" if len(sub) == P else f"scaled from {len(sub)} coords")
    except ImportError:
        add(name, "numdifftools Gradient", float("nan"), float("nan"), float("nan"), "not installed")

    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        f = torch_cost(sizes, X, y, lam)
        tsub = idx if torch_subset is None or torch_subset >= P else \
            np.sort(rng.choice(P, torch_subset, replace=False))
        base = torch.as_tensor(theta)
        tidx = torch.as_tensor(tsub)

        def fsub(z):
            full = base.clone()
            full[tidx] = z
            return f(full)

        z0 = base[tidx].clone().requires_grad_(True)
        torch.autograd.gradcheck(f, (base.clone().requires_grad_(True),), eps=1e-6, atol=1e-5, rtol=1e-3,
                                 fast_mode=True, raise_exception=False)  # warm-up: torch's first-call costs
        ok, t, _ = measure(lambda: torch.autograd.gradcheck(fsub, (z0,), eps=1e-6, atol=1e-5, rtol=1e-3,
                                                            raise_exception=False))
        add(name, "torch gradcheck (default)", t * P / len(tsub), float("nan"), float("nan"),
            ("" if len(tsub) == P else f"scaled from {len(tsub)} coords; ") + f"passed={ok}")
        full0 = base.clone().requires_grad_(True)
        ok, t, _ = measure(lambda: torch.autograd.gradcheck(f, (full0,), eps=1e-6, atol=1e-5, rtol=1e-3,
                                                            fast_mode=True, raise_exception=False), max(repeat, 3))
        add(name, "torch gradcheck (fast_mode)", t, float("nan"), float("nan"), f"passed={ok}")
    except ImportError:
        add(name, "torch gradcheck", float("nan"), float("nan"), float("nan"), "torch not installed: skipped")
    return net, X, y


def bench_full_big(name, sizes, m, subset=50):
    """Full checks of a network with a million parameters, against the naive loop timed on a subset."""
    net, X, y = problem(sizes, m)
    exact = net.cost_and_gradient(X, y, 1.0)[1]
    for method in ("central", "richardson"):
        rep, t, peak = measure(lambda: check_network(net, X, y, 1.0, method, diagnose=False), 3)
        add(name, f"layerkit {method} (full)", t, rel(rep.numerical, exact), peak)
        print(f"  layerkit {method} on {name}: {t:.3f} s", flush=True)
    idx = np.sort(np.random.default_rng(1).choice(net.size, subset, replace=False))
    num, t, peak = measure(lambda: naive_loop(net.objective(X, y, 1.0).cost, net.params.copy(), idx))
    add(name, "naive loop (course style, h=1e-4)", t * net.size / subset, rel(num, exact[idx]), peak,
        f"scaled from {subset} coords")


def bench_localization(name, sizes, m):
    net, X, y = problem(sizes, m)
    g = net.cost_and_gradient(X, y, 1.0)[1][: net.blocks[0].size]
    entry = int(np.argsort(np.abs(g))[len(g) // 2])  # a typical entry, off by a relative 1e-4
    bad = plant_gradient_error(net, entry, 1e-4)
    rep, t, peak = measure(lambda: check_network(bad, X, y, 1.0, mode="directional", diagnose=False), 3)
    found = [e.flat_index for e in rep.worst] == [entry]
    ev = rep.context["evaluations"]
    add(name, "layerkit localize 1 wrong entry", t, float("nan"), peak,
        f"found={found}; evals {sum(ev.values())} (localize {ev.get('localize', 0)}), P={net.size}")
    print(f"  localization on {name}: {t:.3f} s, found={found}", flush=True)


def bench_exactness(name, sizes, m, n=300):
    """The structured full check against whole-cost loops that compute the same differences.

    (a) At the course's step h = 1e-4, against the course's computeNumericalGradient loop.
    (b) At the automatic steps, against layerkit's own re-evaluation loop (engine="generic").
    Both loops subtract two whole costs, so their own roundoff (~ eps |J| / h per entry) bounds how closely
    anything can agree with them; the accuracy of each side against the exact gradient is shown too, and
    whether the engine's check and the whole-cost check (each with its own error model) give the same verdict.
    """
    from layerkit.check.methods import Central
    from layerkit.check.probes import CoordinateProbe

    net, X, y = problem(sizes, m)
    cost, x0 = net.objective(X, y, 1.0).cost, net.params.copy()
    exact = net.cost_and_gradient(X, y, 1.0)[1]
    idx = np.sort(np.random.default_rng(2).choice(net.size, min(n, net.size), replace=False))
    for label, step in (("h = 1e-4 vs course loop", 1e-4), ("auto steps vs generic loop", None)):
        fast = check_network(net, X, y, 1.0, "central", step=step, diagnose=False)
        if step is None:
            probe = CoordinateProbe(cost, x0, cost(x0), axes=idx)
            loop = Central().estimate(probe).values
        else:
            loop = naive_loop(cost, x0, idx, e=step)
        d = rel(fast.numerical[idx], loop)
        generic = check_network(net, X, y, 1.0, "central", step=step, engine="generic", diagnose=False)
        same = generic.passed == fast.passed  # each judged with its own error model
        add(name, f"exactness: structured, {label}", float("nan"), d, float("nan"),
            f"over {len(idx)} coords; loop vs exact {rel(loop, exact[idx]):.1e}, structured vs exact "
            f"{rel(fast.numerical[idx], exact[idx]):.1e}; same verdict={same}")
        print(f"  exactness on {name} ({label}): {d:.1e}", flush=True)


def bench_trust(name, sizes, m):
    """What trust costs, in the same run: the engine's confirmations (each layer rule against its forward,
    the engine against the network's own cost) switched off and on; and the doctor on a failing check
    against the same check passing (a wrong entry planted at a relative 1e-3)."""
    import layerkit.check.engine as engine
    import layerkit.fast.confirm as confirm

    net, X, y = problem(sizes, m)
    on, t_on, _ = measure(lambda: check_network(net, X, y, 1.0, diagnose=False), 9)
    saved = engine.Evaluators.verified, confirm.Rules.ok
    engine.Evaluators.verified = lambda self, predictions, what: True
    confirm.Rules.ok = lambda self, k, rule: 0 <= k < len(self.impl) and self.impl[k].has(*confirm.MEMBERS[rule])
    try:
        off, t_off, _ = measure(lambda: check_network(net, X, y, 1.0, diagnose=False), 9)
    finally:
        engine.Evaluators.verified, confirm.Rules.ok = saved
    add(name, "layerkit central, engine confirmations off", t_off, float("nan"), float("nan"), "the baseline of the next row")
    add(name, "layerkit central, engine confirmations on", t_on, float("nan"), float("nan"),
        f"overhead {100 * (t_on / t_off - 1):+.0f}%; same values={np.array_equal(on.numerical, off.numerical)}")
    # the same network whose Sigmoid layers are a user's subclass: their rules are confirmed first, every
    # engine call to them is spot-checked against forward, and the engine is compared with the real cost at
    # the check's own steps too
    from layerkit import Sigmoid

    class UserSigmoid(Sigmoid):
        pass

    user = net.clone()  # its own layers and buffers, the same values
    user.layers[:] = [UserSigmoid() if type(layer) is Sigmoid else layer for layer in user.layers]
    mine, t_user, _ = measure(lambda: check_network(user, X, y, 1.0, diagnose=False), 9)
    add(name, "layerkit central, a user's Sigmoid subclass", t_user, float("nan"), float("nan"),
        f"{t_user / t_on:.2f}x the built-in layers (its rules spot-checked); passed={mine.passed}, "
        f"engine={mine.evaluator == 'engine'}")
    g = net.cost_and_gradient(X, y, 1.0)[1][: net.blocks[0].size]
    bad = plant_gradient_error(net, int(np.argsort(np.abs(g))[len(g) // 2]), 1e-3)
    ok, t_pass, _ = measure(lambda: check_network(net, X, y, 1.0), 5)
    fail, t_fail, _ = measure(lambda: check_network(bad, X, y, 1.0), 5)
    add(name, "layerkit central with the doctor, passing", t_pass, float("nan"), float("nan"), f"passed={ok.passed}")
    add(name, "layerkit central with the doctor, failing", t_fail, float("nan"), float("nan"),
        f"{t_fail / t_pass:.2f}x the passing check; findings {','.join(fail.codes())}")


def gradient_units(net, X, y, lam, repeat=5):
    """(report, check seconds, gradient seconds, check / gradient): the full central check and one
    ``cost_and_gradient`` of the same network, timed interleaved (a gradient before and after each check) in
    the same run, medians of each."""
    check_network(net, X, y, lam, diagnose=False)  # warm: first-use costs (imports, rule registration)
    checks, grads, rep = [], [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        net.cost_and_gradient(X, y, lam)
        grads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rep = check_network(net, X, y, lam, diagnose=False)
        checks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        net.cost_and_gradient(X, y, lam)
        grads.append(time.perf_counter() - t0)
    c, g = statistics.median(checks), statistics.median(grads)
    return rep, c, g, c / g


#: Issue 22's targets, in gradient evaluations per full central check (None: no target of its own).
FRAMEWORK_TARGETS = {
    "built-in Sigmoid hidden layer": 4, "built-in Tanh (Elementwise, taylor)": 5, "ReLU hidden layer": 5,
    "ReLU + softmax output": 6, "deep 400-100-50-10 Sigmoid, m = 2000": 5,
}


def bench_framework(sizes=(400, 25, 10), m=5000, subset=40, repeat=5):
    """Custom networks at the course's size, each row in gradient evaluations (the full central check's time
    over one ``cost_and_gradient`` of the same network, medians, interleaved in the same run: see
    :func:`gradient_units`) and against the naive loop on the same network, in the same run (timed on
    ``subset`` coordinates and scaled to all P).  Run with one BLAS thread (``OMP_NUM_THREADS=1
    OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1``) for numbers comparable across machines."""
    from layerkit import Dense, ReLU, Sigmoid, SoftmaxCrossEntropy, Tanh

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from custom_layer import Softplus as HelperSoftplus  # fn and derivative: Taylor tables derived from fn
    from custom_layer import Softsign as HelperSoftsign  # fn and derivative, not analytic: exact changes
    from custom_layer import Tanh as UserTanh  # the documented user layer: no rule, no base class

    rng = np.random.default_rng(0)
    X = rng.random((m, sizes[0]))
    y = rng.integers(0, sizes[-1], m)
    n_in, n_h, n_out = sizes
    cases = [
        ("built-in Sigmoid hidden layer", [Sigmoid()], None),
        ("user Tanh, no rule (examples/custom_layer.py)", [UserTanh()], None),
        ("built-in Tanh (Elementwise, taylor)", [Tanh()], None),
        ("helper Softplus (Elementwise, analytic fn)", [HelperSoftplus()], None),
        ("helper Softsign (Elementwise, fn with abs)", [HelperSoftsign()], None),
        ("ReLU hidden layer", [ReLU()], None),
        ("ReLU + softmax output", [ReLU()], SoftmaxCrossEntropy()),
        ("Tanh + softmax output", [Tanh()], SoftmaxCrossEntropy()),
    ]
    nets = []
    for label, hidden, loss in cases:
        layers = [Dense(n_in, n_h)] + hidden + [Dense(n_h, n_out)] + ([] if loss is not None else [Sigmoid()])
        net = Network(layers, loss=loss)
        net.init_random(0)
        nets.append((label, net, X, y))
    Xd = rng.random((2000, 400))
    yd = rng.integers(0, 10, 2000)
    nets.append(("deep 400-100-50-10 Sigmoid, m = 2000", Network.from_sizes([400, 100, 50, 10], seed=0), Xd, yd))
    for label, net, Xc, yc in nets:
        name = f"400-25-10 {label}" if not label.startswith("deep") else label
        rep, t, t_grad, units = gradient_units(net, Xc, yc, 1.0, repeat)
        exact = net.cost_and_gradient(Xc, yc, 1.0)[1]
        target = FRAMEWORK_TARGETS.get(label)
        add(name, "layerkit central (full)", t, rel(rep.numerical, exact), float("nan"),
            f"{units:.1f} gradient evaluations ({1e3 * t_grad:.1f} ms each)"
            + (f", target <= {target}" if target is not None else "")
            + f"; passed={rep.passed}, evaluator={rep.evaluator}")
        print(f"  {name}: {units:.1f} gradient evaluations", flush=True)
        cost = net.objective(Xc, yc, 1.0).cost
        idx = np.random.default_rng(1).choice(net.size, subset, replace=False)
        t0 = time.perf_counter()
        num = naive_loop(cost, net.params.copy(), idx)
        tn = (time.perf_counter() - t0) * net.size / subset
        add(name, "naive loop (course style, h=1e-4)", tn, rel(num, exact[idx]), float("nan"),
            f"scaled from {subset} coords; {tn / t_grad:.0f} gradient evaluations")


def bench_fn_rules(sizes=(400, 25, 10), m=5000, repeat=3):
    """What deriving an Elementwise layer's rule from its ``fn`` costs: a full central check of a network with a
    user's Softplus (analytic: Taylor coefficients from ``fn`` on circles) and a user's Softsign (``abs``: exact
    changes), each against one gradient evaluation of the same network, in the same run; the built-in Sigmoid
    (layerkit's own rule) as the baseline."""
    from layerkit import Dense, Sigmoid

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from custom_layer import Softplus, Softsign

    rng = np.random.default_rng(0)
    X = rng.random((m, sizes[0]))
    y = rng.integers(0, sizes[-1], m)
    print(f"\nfn-derived rules ({'-'.join(map(str, sizes))}, m = {m}, full central check, median of {repeat}):")
    for label, layer in (("built-in Sigmoid", Sigmoid()), ("user Softplus (analytic fn)", Softplus()),
                         ("user Softsign (fn with abs)", Softsign())):
        net = Network([Dense(sizes[0], sizes[1]), layer, Dense(sizes[1], sizes[2]), Sigmoid()])
        net.init_random(0)
        rep, t_check, _ = measure(lambda: check_network(net, X, y, 1.0, diagnose=False), repeat)
        _, t_grad, _ = measure(lambda: net.cost_and_gradient(X, y, 1.0), repeat)
        add(f"{'-'.join(map(str, sizes))} {label}", "layerkit central (full)", t_check, float("nan"), float("nan"),
            f"{t_check / t_grad:.1f}x one gradient ({t_grad * 1e3:.1f} ms); passed={rep.passed}, "
            f"evaluator={rep.evaluator}")
        print(f"  {label}: check {t_check:.3f} s = {t_check / t_grad:.1f}x one gradient evaluation "
              f"({t_grad * 1e3:.1f} ms), passed={rep.passed}, evaluator={rep.evaluator}")


#: Targets of the layer families beyond the MLP (see :func:`bench_cnn`): gradient evaluations per full central
#: check, and how many times faster than the naive loop.
CNN_TARGETS = {"CNN": (40, 30), "BatchNorm": (150, 10)}


def bench_cnn(repeat=3):
    """The layer families beyond the MLP: a small CNN on 8x8 images (examples/cnn_digits.py's, on 200 digits)
    and a BatchNorm network, each a full central check in gradient evaluations (:func:`gradient_units`) and
    against the naive loop (timed on every entry), in the same run.  Both run on the engine.

    Targets, from what the engine must do (there are no Taylor tables for these blocks):

    * CNN <= 40 gradient evaluations, >= 30x the naive loop.  The 80 kernel entries go through the exact path:
      each of the 4 changes per entry (+-h, +-h/2) moves one output channel of 8 through ReLU, pooling, the
      Dense layer and the loss, about 1/8 of a forward pass, so 40 forward passes, about 25 gradients; the
      Dense block's 1290 entries are read off Taylor tables (about 2 gradients), plus the baseline and the
      verification.
    * BatchNorm <= 150 gradient evaluations, >= 10x the naive loop.  The 2080 entries before the BatchNorm
      cross it on the exact path, 4 changes each of one column of m = 500 values (BatchNorm keeps each
      perturbation's batch apart); at this size a gradient takes 1.6 ms, so the unit is mostly Python
      overhead per batch of columns, and 150 is what 8320 column changes in batches of about 500 cost.
      BatchNorm's own 64 entries each move one feature (``param_change``), a column change like the others."""
    from layerkit import BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, SoftmaxCrossEntropy

    rng = np.random.default_rng(0)
    cases = [
        ("CNN", "CNN 1x8x8 -> conv 8@3x3 -> pool -> dense 10, m = 200",
         Network([Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(128, 10)],
                 loss=SoftmaxCrossEntropy()), rng.random((200, 1, 8, 8)), rng.integers(0, 10, 200)),
        ("BatchNorm", "BatchNorm 64-32-BN-10, m = 500",
         Network([Dense(64, 32), BatchNorm(32), Sigmoid(), Dense(32, 10), Sigmoid()]), rng.random((500, 64)),
         rng.integers(0, 10, 500)),
    ]
    lines = []
    for key, label, net, X, y in cases:
        net.init_random(0)
        rep, t_check, t_grad, units = gradient_units(net, X, y, 1.0, repeat)
        cost = net.objective(X, y, 1.0).cost
        _, t_naive, _ = measure(lambda: naive_loop(cost, net.params.copy(), np.arange(net.size)), 1)
        goal, speed = CNN_TARGETS[key]
        add(label, "layerkit central (full)", t_check, float("nan"), float("nan"),
            f"{units:.1f} gradient evaluations ({1e3 * t_grad:.1f} ms each), target <= {goal}; "
            f"{rep.n_evals} evaluations for {net.size} parameters; passed={rep.passed}, evaluator={rep.evaluator}")
        add(label, "naive loop (course style, h=1e-4)", t_naive, float("nan"), float("nan"),
            f"every entry; {t_naive / t_grad:.0f} gradient evaluations")
        lines.append(f"  {label}: {units:.1f} gradient evaluations (target <= {goal}: "
                     f"{'met' if units <= goal else 'NOT met'}), {t_naive / t_check:.0f}x naive (target >= {speed}x: "
                     f"{'met' if t_naive / t_check >= speed else 'NOT met'})")
        print(f"  {label}: {units:.1f} gradient evaluations", flush=True)
    return lines


def bench_failing_directional(name, sizes, m):
    net, X, y = problem(sizes, m)
    bad = plant_gradient_error(net, 123456 % net.size, 1e-3)
    rep, t, _ = measure(lambda: check_network(bad, X, y, 1.0, mode="directional"), 1)
    add(name, "layerkit directional with the doctor, failing", t, float("nan"), float("nan"),
        f"found={[e.flat_index for e in rep.worst][:1] == [123456 % net.size]}; findings {','.join(rep.codes())}")


def slow_rosen(x):
    time.sleep(0.005)
    from scipy.optimize import rosen, rosen_der

    return rosen(x), rosen_der(x)


def bench_executor():
    x0 = np.linspace(-1, 1, 40)
    serial, t1, _ = measure(lambda: check_function(slow_rosen, x0, diagnose=False))
    with ProcessPoolExecutor(2) as pool:
        check_function(slow_rosen, x0[:2], diagnose=False, executor=pool)  # start the workers
        par, t2, _ = measure(lambda: check_function(slow_rosen, x0, diagnose=False, executor=pool))
    same = np.array_equal(serial.numerical, par.numerical)
    add("slow function (5 ms/call, P=40)", "serial", t1, float("nan"), float("nan"))
    add("slow function (5 ms/call, P=40)", "ProcessPoolExecutor(2)", t2, float("nan"), float("nan"),
        f"speedup {t1 / t2:.2f}x, identical={same}")
    try:
        import distributed
    except ImportError:
        add("slow function (5 ms/call, P=40)", "Dask LocalCluster", float("nan"), float("nan"), float("nan"),
            "distributed not installed: skipped (pip install 'layerkit[dask]')")
        return
    for processes in (False, True):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            pool = client.get_executor()
            check_function(slow_rosen, x0[:2], diagnose=False, executor=pool)  # warm the workers
            dist, t3, _ = measure(lambda: check_function(slow_rosen, x0, diagnose=False, executor=pool))
            directional = check_function(slow_rosen, x0, diagnose=False, executor=pool, mode="directional")
        alone = check_function(slow_rosen, x0, diagnose=False, mode="directional")
        what = "processes" if processes else "threads"
        add("slow function (5 ms/call, P=40)", f"Dask LocalCluster, 2 workers ({what})", t3, float("nan"),
            float("nan"), f"speedup {t1 / t3:.2f}x, identical={np.array_equal(serial.numerical, dist.numerical)}, "
            f"directional identical={np.array_equal(alone.numerical, directional.numerical, equal_nan=True)}")


# ---------------------------------------------------------------------- report
def print_table():
    print("\n| network | method | time (s) | vs naive | accuracy | peak MB | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    naive = {r["net"]: r["seconds"] for r in ROWS if r["method"].startswith("naive")}
    for r in ROWS:
        base = naive.get(r["net"])
        ratio = f"{base / r['seconds']:.1f}x" if base and r["seconds"] == r["seconds"] else ""
        acc = "" if r["accuracy"] != r["accuracy"] else f"{r['accuracy']:.1e}"
        peak = "" if r["peak"] != r["peak"] else f"{r['peak']:.1f}"
        t = "" if r["seconds"] != r["seconds"] else f"{r['seconds']:.4f}"
        print(f"| {r['net']} | {r['method']} | {t} | {ratio} | {acc} | {peak} | {r['note']} |")


def targets():
    def t(net, method):
        for r in ROWS:
            if r["net"] == net and r["method"].startswith(method):
                return r["seconds"]
        return float("nan")

    print("\ntargets:")
    c, n = t("course", "layerkit central"), t("course", "naive")
    print(f"  400-25-10 full central vs naive: {n / c:.1f}x (target >= 30x)")
    print(f"  400-25-10 richardson / central: {t('course', 'layerkit richardson') / c:.2f} (target <= 2)")
    print(f"  400-100-50-10 full central vs naive: {t('deep', 'naive') / t('deep', 'layerkit central'):.1f}x "
          "(target >= 5x)")
    print("  debug net: " + ", ".join(f"{mth} {1e3 * t('debug', 'layerkit ' + mth):.1f} ms"
                                      for mth in ("central", "richardson", "forward", "directional"))
          + " (target < 20 ms)")
    print(f"  400-25-10 directional: {1e3 * t('course', 'layerkit directional'):.1f} ms (target <= 50 ms)")
    for net in ("course", "big"):
        print(f"  localization ({net}): {t(net, 'layerkit localize'):.3f} s")
    print(f"  1000-1000-10 full central: {t('big', 'layerkit central'):.2f} s, "
          f"{t('big', 'naive') / t('big', 'layerkit central'):.0f}x the naive loop")
    on, off = t("course", "layerkit central, engine confirmations on"), t("course", "layerkit central, engine confirmations off")
    print(f"  400-25-10 engine confirmations: {100 * (on / off - 1):+.0f}% (target <= +20%); with a user's "
          f"Sigmoid subclass {t('course', 'layerkit central, a user') / on:.2f}x the built-in layers' check")
    fail, ok = t("course", "layerkit central with the doctor, failing"), t("course", "layerkit central with the doctor, passing")
    print(f"  400-25-10 failing / passing check with the doctor: {fail / ok:.2f}x (target <= 3x)")
    print(f"  1000-1000-10 failing directional check with the doctor: "
          f"{t('big', 'layerkit directional with the doctor'):.2f} s (target < 10 s)")


def bench_blackbox():
    """The course-size forum cost as a black box (examples/course_port.py: 400-25-10, m = 5000, lambda = 1,
    Octave order, Theta2's bias regularized in the cost only), checked in the default (auto) mode, against
    the naive loop on the same function (timed on 20 coordinates, scaled to all P)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import course_port

    problem = course_port.problem(1.0)
    rep, t, _ = measure(lambda: problem.check(), 1)
    found = next((f for f in rep.findings if f.code == "regularization-mismatch"), None)
    add("course port (black box)", "layerkit auto mode (default)", t, float("nan"), float("nan"),
        f"{rep.n_evals} evaluations, mode={rep.mode}; finding: "
        + (f"{found.code} [{', '.join(found.blocks)}] k = {found.evidence.get('factor_name')}" if found else "none"))
    fun, theta = problem.fun, np.asarray(problem.x0, dtype=np.float64)
    idx = np.random.default_rng(0).choice(theta.size, 20, replace=False)
    t0 = time.perf_counter()
    naive_loop(lambda th: float(np.asarray(fun(th)[0]).reshape(-1)[0]), theta, idx)
    add("course port (black box)", "naive loop (course style, h=1e-4)", (time.perf_counter() - t0) * theta.size / 20,
        float("nan"), float("nan"), "scaled from 20 coords")


def bench_wrong_entry(sizes=(1000, 1000, 10), m=256, entry=123456, repeat=1):
    """One wrong entry (``g[j] *= 1.01``) in a plain ``fun(theta) -> (cost, grad)`` of a 1000-1000-10 network
    (1,011,010 parameters), checked in directional mode, against the same function with its gradient right:
    evaluations by stage, and the failing check over the passing one in evaluations and in time."""
    net, X, y = problem(list(sizes), m)
    theta0 = net.params.copy()

    calls = [0]

    def fun_for(wrong):
        def fun(theta):
            calls[0] += 1
            net.params[:] = theta
            c, g = net.cost_and_gradient(X, y, 1.0)
            g = g.copy()
            if wrong:
                g[entry] *= 1.01
            return c, g
        return fun

    out = {}
    for label, wrong in (("failing", True), ("passing", False)):
        calls[0] = 0
        rep, t, _ = measure(lambda w=wrong: check_function(fun_for(w), theta0, mode="directional"), repeat)
        made = calls[0] // (repeat + (1 if MEMORY else 0))  # every call of fun, the doctor's follow-ups included
        net.params[:] = theta0
        out[label] = (rep, t)
        stages = ", ".join(f"{k} {v}" for k, v in rep.context["evaluations"].items())
        found = [e.flat_index for e in rep.worst][:3]
        add("black box 1M", f"layerkit directional, {label}", t, float("nan"), float("nan"),
            f"{rep.n_evals} evaluations ({stages}); {made} calls of fun with the doctor's; passed={rep.passed}; "
            f"found={found}")
    (bad, tb), (good, tg) = out["failing"], out["passing"]
    found = [e.flat_index for e in bad.worst] == [entry]
    print(f"  black box, one wrong entry among {theta0.size} parameters: {bad.n_evals} evaluations "
          f"(target <= 60: {'met' if bad.n_evals <= 60 and found else 'NOT met'}; localized={found}); "
          f"failing / passing: {bad.n_evals / good.n_evals:.2f}x in evaluations ({good.n_evals} passing), "
          f"{tb / tg:.2f}x in time (target <= 2x: {'met' if tb / tg <= 2 else 'NOT met'})")
    print("  stages, failing: " + ", ".join(f"{k} {v}" for k, v in bad.context["evaluations"].items()))


def framework_targets():
    def row(net, method):
        for r in ROWS:
            if r["net"] == net and r["method"].startswith(method):
                return r
        return None

    def units(r):
        note = r["note"] if r else ""
        return float(note.split(" gradient evaluations")[0]) if "gradient evaluations" in note else float("nan")

    def name(label):
        return label if label.startswith("deep") else f"400-25-10 {label}"

    base = units(row(name("built-in Sigmoid hidden layer"), "layerkit"))
    print("\nframework targets (gradient evaluations per full central check; x naive = the naive loop's time over "
          "the check's):")
    labels = ["built-in Sigmoid hidden layer", "built-in Tanh (Elementwise, taylor)", "ReLU hidden layer",
              "ReLU + softmax output", "deep 400-100-50-10 Sigmoid, m = 2000", "Tanh + softmax output",
              "helper Softplus (Elementwise, analytic fn)", "helper Softsign (Elementwise, fn with abs)",
              "user Tanh, no rule (examples/custom_layer.py)"]
    user_targets = {"helper Softsign (Elementwise, fn with abs)": ("3x Sigmoid", 3 * base),
                    "user Tanh, no rule (examples/custom_layer.py)": ("4x Sigmoid", 4 * base)}
    for label in labels:
        check, naive = row(name(label), "layerkit"), row(name(label), "naive")
        if check is None:
            continue
        u = units(check)
        ratio = naive["seconds"] / check["seconds"] if naive else float("nan")
        if label in FRAMEWORK_TARGETS:
            goal, limit = f"<= {FRAMEWORK_TARGETS[label]}", FRAMEWORK_TARGETS[label]
        elif label in user_targets:
            goal, limit = f"<= {user_targets[label][0]} = {user_targets[label][1]:.1f}", user_targets[label][1]
        else:
            goal, limit = "", float("nan")
        met = "" if limit != limit else (" met" if u <= limit else " NOT met")
        print(f"  {label}: {u:.1f} ({u / base:.2f}x Sigmoid), {ratio:.0f}x naive; target {goal or '-'}{met}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the debug and 64-32-10 networks")
    ap.add_argument("--no-memory", action="store_true", help="skip the traced runs that measure peak memory")
    ap.add_argument("--exactness", action="store_true", help="only the exactness rows")
    ap.add_argument("--trust", action="store_true", help="only the rows of what trust costs")
    ap.add_argument("--framework", action="store_true", help="only the custom-network rows (layers, losses)")
    ap.add_argument("--fn-rules", action="store_true", help="only the cost of rules derived from an Elementwise fn")
    ap.add_argument("--cnn", action="store_true", help="only the CNN and BatchNorm networks against the naive loop")
    ap.add_argument("--blackbox", action="store_true", help="only the black-box course port in auto mode")
    ap.add_argument("--wrong-entry", action="store_true",
                    help="only the black box of 1M parameters with one wrong entry, failing and passing")
    ap.add_argument("--executors", action="store_true", help="only the rows of checks spread over executors")
    args = ap.parse_args()
    global MEMORY
    MEMORY = not args.no_memory
    print(f"layerkit {layerkit.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    if args.trust:
        bench_trust("course", [400, 25, 10], 5000)
        bench_failing_directional("big", [1000, 1000, 10], 256)
        print_table()
        return
    if args.wrong_entry:
        bench_wrong_entry()
        print_table()
        return
    if args.executors:
        bench_executor()
        print_table()
        return
    if args.blackbox:
        bench_blackbox()
        print_table()
        return
    if args.fn_rules:
        bench_fn_rules()
        return
    if args.cnn:
        lines = bench_cnn()
        print_table()
        print("\nlayer families beyond the MLP (full central check):\n" + "\n".join(lines))
        return
    if args.framework:
        bench_framework()
        lines = bench_cnn()
        print_table()
        framework_targets()
        print("\nlayer families beyond the MLP (full central check):\n" + "\n".join(lines))
        return
    if args.exactness:
        for name, sizes, m, n in (("small", [64, 32, 10], 500, 2410), ("course", [400, 25, 10], 5000, 300),
                                  ("deep", [400, 100, 50, 10], 2000, 200)):
            bench_exactness(name, sizes, m, n)
        print_table()
        return
    bench_network("debug", [3, 5, 3], 5, lam=3.0, repeat=15)
    bench_network("small", [64, 32, 10], 500, repeat=3)
    bench_exactness("small", [64, 32, 10], 500, n=2410)
    if not args.quick:
        bench_network("course", [400, 25, 10], 5000, subset=300, torch_subset=300, repeat=3)
        bench_localization("course", [400, 25, 10], 5000)
        bench_trust("course", [400, 25, 10], 5000)
        bench_exactness("course", [400, 25, 10], 5000)
        bench_network("deep", [400, 100, 50, 10], 2000, subset=200, torch_subset=200, ndt_subset=20)
        bench_exactness("deep", [400, 100, 50, 10], 2000, n=200)
        bench_full_big("big", [1000, 1000, 10], 256)
        bench_localization("big", [1000, 1000, 10], 256)
        bench_failing_directional("big", [1000, 1000, 10], 256)
        bench_framework()
        lines = bench_cnn()
        bench_blackbox()
        bench_wrong_entry()
    bench_executor()
    print_table()
    if not args.quick:
        targets()
        framework_targets()
        print("\nlayer families beyond the MLP (full central check):\n" + "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
