"""Zero-code course checks (layerkit.course): a bare cost function in a course signature, checked on the
course's own debug problem, with order and labels inferred from the cost; through Python and the CLI."""

import json
from pathlib import Path

import course_ports as ports
import numpy as np
import pytest
from layerkit.cli.app import app
from typer.testing import CliRunner

import layerkit
from layerkit.course import course_problem, course_problems, course_signature

PORTS = str(Path(__file__).resolve().parent / "course_ports.py")
runner = CliRunner()


def test_signatures_are_recognised_by_name_in_any_order():
    assert course_signature(ports.nnCost).kind == "network"
    assert course_signature(ports.nn_cost_c_order).names["lambda"] == "lam"
    assert course_signature(ports.linearRegCostFunction).kind == "regression"
    assert course_signature(ports.cost_with_extras) is None  # alpha is no role
    assert course_signature(lambda t: (0.0, t)) is None
    with pytest.raises(layerkit.InputError, match="course parameter names"):
        course_problem(ports.cost_with_extras)


def test_the_network_problem_is_check_nn_gradients():
    p = course_problem(ports.nnCostFunction, 3.0)
    assert p.x0.size == 5 * 4 + 3 * 6 and p.m == 5 and p.lambda_ == 3.0 and p.order == "F"
    assert dict(p.blocks) == {"Theta1": (5, 4), "Theta2": (3, 6)}
    # debugInitializeWeights: sin(1..n) / 10 in Fortran order, Theta1 first
    np.testing.assert_array_equal(p.x0[:20], np.sin(np.arange(1, 21)) / 10)


@pytest.mark.parametrize("func, order, base", [(ports.nnCostFunction, "F", 1), (ports.nn_cost_column, "F", 1),
                                               (ports.nn_cost_c_order, "C", 0)])
def test_correct_ports_pass_with_their_order_and_labels_inferred(func, order, base):
    problems = course_problems(func)
    assert [p.lambda_ for p in problems] == [0.0, 3.0]
    for p in problems:
        assert p.order == order
        report = p.check()
        assert report.passed, str(report)
        note = report.notes[-1]
        assert f"labels {base}..{base + 2}" in note and "inferred from the cost" in note


def test_the_forum_port_is_named_without_hints():
    for p in course_problems(ports.nnCost):
        report = p.check()
        assert not report.passed and list(report.failed_blocks) == ["Theta1"]
        assert "scale-mismatch" in [f.code for f in report.findings], str(report)
        assert "nonsmooth" not in [f.code for f in report.findings], str(report)


def test_a_regression_with_its_intercept_regularized_fails_at_lambda_3_only():
    r0, r3 = (p.check() for p in course_problems(ports.costFunctionReg))
    assert r0.passed and not r3.passed and r3.worst[0].label == "theta[0]"
    assert all(p.check().passed for p in course_problems(ports.linearRegCostFunction))


def test_a_data_term_matching_no_layout_is_said_to_be_assumed():
    def wrong_cost(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_):
        J, g = ports.nnCostFunction(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_)
        return 2 * J, g

    p = course_problem(wrong_cost)
    assert p.order == "F" and "assumed, not inferred" in p.notes[0]
    assert not p.check().passed


def test_cli_checks_a_bare_cost_function_at_lambda_0_and_3():
    out = runner.invoke(app, ["check", f"{PORTS}:nnCost", "--json"])
    assert out.exit_code == 1, out.output
    doc = json.loads(out.stdout)
    reports = doc["results"] if "results" in doc else doc["reports"]
    assert [r["lambda"] for r in reports] == [0.0, 3.0]
    assert all(r["wrong_blocks"] == ["Theta1"] for r in reports)
    ok = runner.invoke(app, ["check", f"{PORTS}:nn_cost_c_order", "--lambda", "1"])
    assert ok.exit_code == 0 and "C order" in ok.output and "lambda = 1" in ok.output


def test_cli_hints_give_a_wrapper_passing_every_argument():
    out = runner.invoke(app, ["check", f"{PORTS}:cost_with_extras"])
    assert out.exit_code == 2
    assert "cost_with_extras(t, X, y, lambda_, alpha)" in out.output


def test_cli_looks_for_problem_and_names_the_course_functions_it_found():
    out = runner.invoke(app, ["check", PORTS])
    assert out.exit_code == 2
    assert "no attribute 'problem'" in out.output and "nnCost" in out.output


def test_public_code_misses_get_their_codes():
    r3 = course_problems(ports.costFunctionReg)[1].check()
    reg = [f for f in r3.findings if f.code == "regularization-mismatch"]
    assert reg and "intercept" in reg[0].message and "+lambda/m" in reg[0].message

    def not_averaged(theta, X, y):  # the data term's gradient is summed, not averaged
        m = y.size
        h = 1 / (1 + np.exp(-X @ theta))
        return float(-(y @ np.log(h) + (1 - y) @ np.log(1 - h)) / m), X.T @ (h - y)

    report = course_problem(not_averaged).check()
    scale = [f for f in report.findings if f.code == "scale-mismatch"]
    assert scale and "m = 12" in scale[0].message


def _float32_port(theta1_factor):
    def nnCostFunction(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_):  # noqa: N802
        J, g = ports._network(np.asarray(nn_params, dtype=np.float32), input_layer_size, hidden_layer_size,
                              num_labels, np.asarray(X, dtype=np.float32), y, lambda_)
        g = np.array(g, dtype=np.float64)
        g[: hidden_layer_size * (input_layer_size + 1)] *= theta1_factor
        return float(J), g
    return nnCostFunction


def test_a_float32_port_with_a_zero_block_is_never_passed():
    for method in ("forward", "central"):
        report = course_problem(_float32_port(0.0)).check(method)
        assert not report.passed, str(report)


def test_ports_that_take_y_as_a_column_and_positional_only_parameters():
    def column_port(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_):
        assert y.shape == (X.shape[0], 1)
        return ports._network(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y.ravel(), lambda_)

    problems = course_problems(column_port)
    assert all(p.check().passed for p in problems) and "m x 1 column" in problems[0].notes[0]

    def positional(theta, X, y, lambda_, /):
        return ports.costFunctionReg(theta, X, y, lambda_)

    assert course_signature(positional) is not None
    assert not course_problems(positional)[1].check().passed  # costFunctionReg's own bug, found


def test_cli_refuses_a_lambda_the_function_does_not_take(tmp_path):
    target = tmp_path / "reg.py"
    target.write_text("import numpy as np\n"
                      "def costFunction(theta, X, y):\n"
                      "    h = 1 / (1 + np.exp(-X @ theta))\n"
                      "    return float(-(y @ np.log(h) + (1 - y) @ np.log(1 - h)) / y.size), X.T @ (h - y) / y.size\n")
    out = runner.invoke(app, ["check", f"{target}:costFunction", "--lambda", "3"])
    assert out.exit_code == 2 and "takes no regularization" in out.output
    assert runner.invoke(app, ["check", f"{target}:costFunction"]).exit_code == 0


@pytest.mark.parametrize("bug, code", [
    ("cost-reg-intercept", "regularization-mismatch"), ("grad-reg-intercept", "regularization-mismatch"),
    ("no-1-over-m", "scale-mismatch"), ("penalty-halved", "regularization-mismatch"), ("sign-flip", "sign-flip"),
    ("data-missing", "data-term-missing"), ("penalty-missing", "regularization-mismatch"),
    ("times-2", "scale-mismatch"), ("penalty-over-2m", "regularization-mismatch"),
    ("bias-offset", "constant-offset")])
def test_each_regression_bug_gets_its_cause_at_lambda_3(bug, code):
    """ex2's regularized logistic regression at the course problem's lambda = 3: a single vector whose entry 0
    is the intercept, which the penalty leaves out."""
    assert set(ports.REGRESSION_BUGS) >= {bug}
    r0, r3 = (p.check() for p in course_problems(ports.regression_port(bug)))
    assert not r3.passed and code in r3.codes(), str(r3)
    assert r0.passed or r0.codes(), str(r0)  # at lambda = 0 the penalty bugs vanish; the others are named


def test_a_correct_regression_port_passes_at_both_lambdas():
    assert all(p.check().passed for p in course_problems(ports.regression_port()))
