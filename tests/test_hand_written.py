"""Hand-written targets from the command line and the auto mode (issue: course ports as people write them)."""

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import layerkit

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def _cli(*args, cwd=None):
    # never from the repository's root, where ./layerkit would shadow the installed package (and its cli)
    return subprocess.run([sys.executable, "-m", "layerkit.cli.app", *args], cwd=cwd or tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def port(tmp_path):
    (tmp_path / "port.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import numpy as np
        import layerkit
        from zoo import make

        def problem(lambda_=1.0):
            fun, theta, blocks, lam, m, order = make("bias-regularized-in-cost", lam=lambda_, order="F",
                                                     cost_shape="(1, 1)")
            return layerkit.Problem.from_function(fun, theta, blocks=blocks, lambda_=lam, m=m, order="F")

        def fixed():
            return problem(1.0)

        def nnCostFunction(nn_params, X, y, lam, scale):
            return 0.0, nn_params

        def costFunction(theta, X, y):
            return 0.0, theta

        def helper():
            return layerkit.Problem.from_function(lambda t: inner(t), np.ones(3))

        def inner(t):
            raise ValueError("shapes do not line up")
    """))
    return tmp_path


def test_lambda_reaches_a_factory_that_takes_it(port):
    out = _cli("check", "port.py:problem", "--lambda", "0", "--lambda", "2", "--json", cwd=port)
    doc = json.loads(out.stdout)
    verdicts = {r["lambda"]: r["passed"] for r in doc["reports"]}
    assert verdicts == {0.0: True, 2.0: False} and out.returncode == 1
    refused = _cli("check", "port.py:fixed", "--lambda", "2", cwd=port)
    assert refused.returncode == 2 and "lambda_" in refused.stderr and "Traceback" not in refused.stderr


def test_a_cost_function_as_target_gets_the_wrapper_to_write(port):
    out = _cli("check", "port.py:nnCostFunction", cwd=port)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "def problem(lambda_=1.0): return layerkit.Problem.from_function(lambda t: nnCostFunction(t, X, y, lam, " \
        "scale)" in out.stderr


def test_a_cost_function_in_a_course_signature_is_checked_as_it_is(port):
    out = _cli("check", "port.py:costFunction", cwd=port)
    assert out.returncode == 1 and "course debug regression" in out.stdout and "FAILED" in out.stdout


def test_traceback_shows_the_targets_own_frames(port):
    plain = _cli("check", "port.py:helper", cwd=port)
    assert plain.returncode == 2 and "--traceback shows where" in plain.stderr and "port.py" not in plain.stderr
    out = _cli("check", "port.py:helper", "--traceback", cwd=port)
    assert out.returncode == 2
    assert 'port.py", line' in out.stderr and "in inner" in out.stderr and "ValueError" in out.stderr
    assert "layerkit/" not in out.stderr.replace("layerkit's", "")


def test_method_all_runs_what_can_run(port):
    out = _cli("check", "port.py:fixed", "--method", "all", "--mode", "directional", "-q", cwd=port)
    assert out.returncode == 1
    assert out.stdout.count("FAILED") == 3 and "NOT APPLICABLE  complex-step" in out.stdout


def test_auto_is_full_for_a_cheap_target_and_directional_for_a_slow_one():
    fun, theta, blocks, lam, m, order = layerkit_zoo("bias-regularized-in-cost")
    cheap = layerkit.check_function(fun, theta, blocks=blocks, lambda_=lam, m=m)
    assert cheap.mode == "full"

    def slow(t):
        import time
        time.sleep(0.002)
        return fun(t)

    import layerkit.check.pipeline as pipeline

    saved = pipeline.AUTO_SECONDS
    pipeline.AUTO_SECONDS = 0.05  # a full check of 38 entries at 2 ms each would take longer
    try:
        stages = []
        report = layerkit.check_function(slow, theta, blocks=blocks, lambda_=lam, m=m,
                                         progress=lambda stage, n: stages.append((stage, n)))
    finally:
        pipeline.AUTO_SECONDS = saved
    assert report.mode == "directional" and not report.passed
    assert any("auto mode" in n for n in report.notes) and stages and stages[-1][1] <= report.n_evals
    f = next(f for f in report.findings if f.code == "regularization-mismatch")
    assert f.blocks == ("Theta2",) and "column 0" in f.message


def layerkit_zoo(bug):
    sys.path.insert(0, str(TESTS))
    from zoo import make

    return make(bug, (3, 5, 3), 7, 1.0)


@pytest.mark.slow
def test_the_course_size_port_is_diagnosed_within_150_evaluations():
    out = _cli("check", str(ROOT / "examples" / "course_port.py:problem"), "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)["reports"][0]
    assert report["n_evals"] <= 150 and report["mode"] == "directional"
    f = next(f for f in report["findings"] if f["code"] == "regularization-mismatch")
    assert f["blocks"] == ["Theta2"] and f["evidence"]["factor_name"] == "-lambda/m"
    worst = report["worst"]
    assert worst and all(e["block"] == "Theta2" and e["index"][1] == 0 for e in worst)
    assert all(e["flat_index"] == 10025 + e["index"][0] for e in worst)  # positions in the Octave-order vector
