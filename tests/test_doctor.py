"""The doctor's zoo: deliberately broken implementations, each with the finding it must produce, and
correct implementations that must produce none."""

import numpy as np
import pytest
from helpers import PlainTanh

import layerkit
from layerkit import check_function, check_network
from layerkit.diagnosis.case import name_factor

SIZES = (3, 5, 3)
BLOCKS = {"Theta1": (5, 4), "Theta2": (3, 6)}
X, Y_LABELS = layerkit.debug_data(5, 3)
M = 5


def sig(z):
    return 1 / (1 + np.exp(-z))


def nn_cost(theta, lam, bug=None, dtype=np.float64):
    """The course's two-layer cost and gradient, with an optional deliberate bug."""
    T1 = theta[:20].reshape(5, 4)
    T2 = theta[20:].reshape(3, 6)
    Y = np.eye(3, dtype=dtype)[Y_LABELS]
    Xd = X.astype(dtype)
    a1 = np.hstack([np.ones((M, 1), dtype), Xd])
    z2 = a1 @ T1.T
    a2 = np.hstack([np.ones((M, 1), dtype), sig(z2)])
    h = sig(a2 @ T2.T)
    J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / M
    if bug == "reg-bias2":
        J += lam / (2 * M) * (np.sum(T1[:, 1:] ** 2) + np.sum(T2 ** 2))
    elif bug == "reg-bias-difference":
        J += lam / (2 * M) * (np.sum(T1 ** 2) + np.sum(T2 ** 2) - (np.sum(T1[:, 0] ** 2) - np.sum(T2[:, 0] ** 2)))
    else:
        J += lam / (2 * M) * (np.sum(T1[:, 1:] ** 2) + np.sum(T2[:, 1:] ** 2))
    d3 = (Y - h) if bug == "sign" else (h - Y)
    d2 = (d3 @ T2[:, 1:]) * sig(z2) * (1 - sig(z2))
    G1 = d2.T @ a1 / (1 if bug == "no-1/m" else M)
    G2 = d3.T @ a2 / M
    reg = lam / (2 * M) if bug == "reg-half" else lam / M
    G1[:, 1:] += reg * T1[:, 1:]
    G2[:, 1:] += reg * T2[:, 1:]
    if bug == "zero-theta1":
        G1 = np.zeros_like(G1)
    if bug == "one-entry":
        G2[1, 3] += 1e-3
    if bug == "nan":
        G1[2, 1] = np.nan
    order = "F" if bug == "fortran" else "C"
    g = np.concatenate([G1.ravel(order=order), G2.ravel(order=order)])
    if bug == "times-2":
        g = 2 * g
    return J, g


THETA = layerkit.Network.from_sizes(SIZES, init="debug").get_params()


def run(bug, lam=3.0, **kw):
    return check_function(lambda t: nn_cost(t, lam, bug), THETA, blocks=BLOCKS, lambda_=lam, m=M, **kw)


def finding(report, code):
    found = [f for f in report.findings if f.code == code]
    assert found, f"expected {code}, got {report.codes()}\n{report}"
    return found[0]


# ---------------------------------------------------------------------- broken zoo
def test_bias_regularized_in_cost_only():
    report = run("reg-bias2", step=1e-4)
    f = finding(report, "regularization-mismatch")
    assert f.blocks == ("Theta2",) and report.failed_blocks == ["Theta2"] and report.passed_blocks == ["Theta1"]
    assert "column 0" in f.message and f.evidence["factor_name"] == "-lambda/m"
    assert f.evidence["factor"] == pytest.approx(-3.0 / 5, rel=1e-6)
    assert "not the cause" in report.step_verdict
    assert run("reg-bias2", lam=0.0).passed  # the mismatch appears only when lambda > 0


def test_bias_difference_instead_of_sum():
    f = finding(run("reg-bias-difference"), "regularization-mismatch")
    assert f.blocks == ("Theta2",) and f.evidence["factor_name"] == "-2 lambda/m"


def test_penalty_gradient_with_half_the_factor():
    report = run("reg-half")
    found = [f for f in report.findings if f.code == "regularization-mismatch"]
    assert {f.blocks for f in found} == {("Theta1",), ("Theta2",)}
    assert all(f.evidence["factor_name"] == "-lambda/(2m)" and "weights" in f.evidence["entries"] for f in found)


def test_missing_one_over_m_on_one_block():
    report = run("no-1/m", lam=0.0)
    f = finding(report, "scale-mismatch")
    assert f.blocks == ("Theta1",) and f.evidence["factor"] == pytest.approx(5.0, rel=1e-6)
    assert f.evidence["factor_name"] == "m = 5"


def test_gradient_twice_too_large_overall():
    f = finding(run("times-2", lam=0.0), "scale-mismatch")
    assert set(f.blocks) == {"Theta1", "Theta2"} and f.evidence["factor_name"] == "2" and f.evidence["overall"]


def test_sign_flip():
    f = finding(run("sign", lam=0.0), "sign-flip")
    assert set(f.blocks) == {"Theta1", "Theta2"}


def test_fortran_unrolled_gradient():
    report = run("fortran", lam=1.0)
    found = [f for f in report.findings if f.code == "layout-mismatch"]
    assert {f.blocks for f in found} == {("Theta1",), ("Theta2",)}
    assert "Fortran" in found[0].message


def test_block_never_written():
    f = finding(run("zero-theta1"), "zero-gradient")
    assert f.blocks == ("Theta1",) and f.evidence["whole_block"]


def test_one_wrong_entry_is_localized():
    report = run("one-entry")
    f = finding(report, "localized")
    assert f.blocks == ("Theta2",) and f.evidence["entries"] == ["Theta2[1, 3]"]
    assert report.codes() == ["localized"]


def test_nan_in_the_gradient():
    f = finding(run("nan"), "non-finite")
    assert f.blocks == ("Theta1",) and "Theta1[2, 1]" in f.message


def test_nondeterministic_cost():
    rng = np.random.default_rng(0)

    def noisy(t):
        J, g = nn_cost(t, 0.0)
        return J + 1e-9 * rng.standard_normal(), g

    report = check_function(noisy, THETA, blocks=BLOCKS)
    assert not report.passed
    assert finding(report, "nondeterministic-cost").evidence["spread"] > 0


def test_kink_is_nonsmooth():
    def relu_sum(x):
        return float(np.sum(np.maximum(x, 0))), (x > 0).astype(float)

    x0 = np.array([0.3, 0.0, -0.2, 1.0])
    report = check_function(relu_sum, x0)
    # x[1] sits on the kink and its analytic value is one of the one-sided slopes (0): not a failure
    assert report.passed
    f = finding(report, "nonsmooth")
    assert f.evidence["entries"] == [1] and f.evidence["on_kink"] == [1] and "kink of the cost" in f.message

    def relu_wrong(x):  # the point on the kink, and an analytic value that is neither one-sided slope
        return float(np.sum(np.maximum(x, 0))), np.where(x == 0, 2.0, (x > 0).astype(float))

    report = check_function(relu_wrong, x0)
    assert not report.passed and not report.inconclusive
    assert "sits on a kink" in finding(report, "nonsmooth").message


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_float32_mismatch_at_roundoff_level_is_precision_limited(method):
    net = layerkit.Network.from_sizes([6, 5, 4], dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    Xs, ys = rng.standard_normal((12, 6)), rng.integers(0, 4, 12)
    report = check_network(net, Xs, ys, 1.0, method, rtol=1e-7, atol=1e-9)
    assert not report.passed
    f = finding(report, "precision-limited")
    assert "float64" in f.message
    # a mismatch below what float32 differences resolve is never blamed on the gradient
    assert report.inconclusive and "cannot tell a wrong gradient from their own error" in report.step_verdict


def test_step_too_small_is_precision_limited():
    report = run(None, step=1e-13, rtol=1e-9, atol=1e-10)
    assert not report.passed
    finding(report, "precision-limited")


def test_buggy_layer_in_a_network_is_named():
    class BadTanh(PlainTanh):
        def backward(self, dy):
            return dy * (1 - self._y)  # should be 1 - y**2

        def __repr__(self):
            return "BadTanh()"

    net = layerkit.Network([layerkit.Dense(3, 4), BadTanh(), layerkit.Dense(4, 3), layerkit.Sigmoid()])
    net.init_random(0)
    report = check_network(net, X, Y_LABELS, 1.0)
    f = finding(report, "layer-mismatch")
    assert f.evidence["layer"] == 1 and "BadTanh" in f.message
    assert report.failed_blocks == ["Theta1"] and report.passed_blocks == ["Theta2"]
    assert any("lambda = 0" in n for n in report.notes)


# ---------------------------------------------------------------------- correct zoo
CORRECT = {
    "float64, lambda 0": lambda: run(None, lam=0.0),
    "float64, lambda 3": lambda: run(None, lam=3.0),
    "float64, lambda 3, h = 1e-4": lambda: run(None, lam=3.0, step=1e-4),
    "float32 function": lambda: check_function(lambda t: nn_cost(t, 3.0, None, np.float32), THETA.astype(np.float32),
                                               blocks=BLOCKS),
    "saturated network": lambda: _saturated(),
    "deeper network": lambda: _deeper(),
}


def _saturated():
    net = layerkit.Network.from_sizes([3, 5, 3], seed=0)
    net.params = net.params * 50
    return check_network(net, X, Y_LABELS, 3.0, "richardson")


def _deeper():
    rng = np.random.default_rng(5)
    net = layerkit.Network.from_sizes([6, 8, 7, 5, 4], seed=2)
    return check_network(net, rng.standard_normal((15, 6)), rng.integers(0, 4, 15), 2.0)


@pytest.mark.parametrize("case", sorted(CORRECT))
def test_correct_implementations_have_no_findings(case):
    report = CORRECT[case]()
    assert report.passed, str(report)
    assert report.findings == ()
    assert report.step_verdict.startswith("no mismatch")
    assert "correct: every block" in str(report)


def test_name_factor():
    assert name_factor(5.0, 5) == "m = 5"
    assert name_factor(0.2, 5) == "1/m = 1/5"
    assert name_factor(-2.0, None) == "-2"
    assert name_factor(0.5, None) == "1/2"
    assert name_factor(1.7, 5) is None


def test_single_block_vector_still_gets_indices_and_patterns():
    def fun(x):
        g = 2 * x
        g[3] *= 1.5
        return float(x @ x), g

    report = check_function(fun, np.arange(1.0, 9.0))
    f = finding(report, "regularization-mismatch") if "regularization-mismatch" in report.codes() else \
        finding(report, "localized")
    assert f.blocks == ("x",) and report.worst[0].label == "x[3]"


def test_diagnosis_json_round_trip():
    import json

    d = run("reg-bias2").to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["findings"][0]["code"] == "regularization-mismatch"
    assert back["wrong_blocks"] == ["Theta2"] and back["correct_blocks"] == ["Theta1"]


def test_dropped_example_is_not_said_of_a_one_example_gradient_without_m():
    """One example's gradient of a Dense block is rank one: any error of it is rank one too."""
    rng = np.random.default_rng(3)
    a, d = rng.standard_normal(6), rng.standard_normal(4)

    def fun(w):  # J = d . (W a) for one example; its gradient d a^T, with a wrong delta
        W = w.reshape(4, 6)
        return float(d @ W @ a), np.outer(d * np.array([1.0, 1.3, 1.0, 0.8]), a).ravel()

    report = layerkit.check_function(fun, rng.standard_normal(24), blocks={"W": (4, 6)})
    assert not report.passed
    assert "dropped-example" not in [f.code for f in report.findings], str(report)


def test_a_course_shaped_function_without_a_cause_says_which_hints_would_help():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from zoo import make

    fun, theta, blocks, lam, m, order = make("none", (3, 5, 3), 7, 1.0)

    def odd(t):  # two unrelated entries off: no pattern
        J, g = fun(t)
        g = np.array(g, dtype=float).copy()
        g[[3, 27]] += [0.1, -0.07]
        return J, g

    report = check_function(odd, theta, blocks=blocks)
    assert not report.passed
    assert any("the doctor could look further with lambda_" in note for note in report.notes), report.notes
    told = check_function(odd, theta, blocks=blocks, lambda_=lam, m=m)
    assert not any("look further" in note for note in told.notes)


def test_a_mismatch_at_a_few_tolerances_gets_no_constant_and_no_false_taylor_comfort():
    # the cost takes log(h + 1e-8) while the gradient is that of log(h): a real mismatch of ~3e-9, a few
    # tolerances.  Any small mismatch "fits" a constant that small, so none is named; and the Taylor
    # remainder's h^2 cannot show so small an h term, which the step verdict says instead of "looks right".
    import zoo

    fun, theta, blocks, lam, m, order = zoo.make("none", (3, 5, 3), 5, 0.0)

    def with_eps(t):
        J, g = fun(t)
        T1 = t[:20].reshape(5, 4)
        T2 = t[20:].reshape(3, 6)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((5, 3))
        y = rng.integers(0, 3, 5)
        a2 = np.hstack([np.ones((5, 1)), 1 / (1 + np.exp(-(np.hstack([np.ones((5, 1)), X]) @ T1.T)))])
        h = 1 / (1 + np.exp(-(a2 @ T2.T)))
        Y = np.eye(3)[y]
        J = np.sum(-Y * np.log(h + 1e-8) - (1 - Y) * np.log(1 - h + 1e-8)) / 5
        return J, g

    report = check_function(with_eps, theta, blocks=blocks)
    assert not report.passed and "constant-offset" not in report.codes(), str(report)
    assert "looks right" not in report.step_verdict, report.step_verdict
