"""Every example script runs, and says what it promises."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_forum_bug_diagnosis(capsys):
    import forum_bug

    report = forum_bug.main()
    out = capsys.readouterr().out
    assert report.failed_blocks == ["Theta2"] and report.passed_blocks == ["Theta1"]
    f = report.findings[0]
    assert f.code == "regularization-mismatch" and f.blocks == ("Theta2",)
    assert "column 0" in f.message and f.evidence["factor_name"] == "-lambda/m"
    assert "step size is not the cause" in report.step_verdict
    assert "regularization-mismatch [Theta2]" in out and "PASSED" in out  # lambda = 0 passes


def test_custom_layer_example(capsys):
    import custom_layer

    layer_report, net_report = custom_layer.main()
    assert layer_report.passed and net_report.passed
    assert "trained" in capsys.readouterr().out


@pytest.mark.slow
def test_train_digits_reaches_95_percent():
    pytest.importorskip("sklearn")
    import train_digits

    result = train_digits.main()
    assert result["accuracy"] >= 0.95


@pytest.mark.parametrize("script", ["forum_bug.py", "custom_layer.py", "notebook_report.py"])
def test_scripts_run_as_programs(script):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


@pytest.mark.slow
def test_relu_softmax_digits_reaches_97_percent_and_its_problem_passes():
    pytest.importorskip("sklearn")
    import relu_softmax_digits

    result = relu_softmax_digits.main()
    assert result["accuracy"] >= 0.97 and result["report"].passed
    assert relu_softmax_digits.problem().check().passed


@pytest.mark.slow
def test_diabetes_regression_reports_r2_against_the_linear_baseline(capsys):
    pytest.importorskip("sklearn")
    import diabetes_regression

    result = diabetes_regression.main()
    assert result["report"].passed and result["r2"] > result["linear_r2"] and result["wins"] >= 6
    assert "linear least squares" in capsys.readouterr().out
    assert diabetes_regression.problem().check().passed


@pytest.mark.parametrize("target", ["relu_softmax_digits.py:problem", "diabetes_regression.py:problem"])
def test_examples_check_from_the_command_line(target, tmp_path):
    pytest.importorskip("sklearn")
    # run outside the repository: from its root, ./layerkit would shadow the installed package (and its cli)
    proc = subprocess.run([sys.executable, "-m", "layerkit.cli.app", "check", str(EXAMPLES / target)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout


@pytest.mark.slow
def test_cnn_digits_example(capsys):
    import cnn_digits

    result = cnn_digits.main()
    assert result["accuracy"] >= 0.97
    assert "held-out accuracy: " in capsys.readouterr().out
    assert cnn_digits.problem().check().passed


def test_layer_functions_example(capsys):
    import layer_functions

    results = layer_functions.main()
    assert all(results[name] for name in ("affine", "relu", "conv", "max_pool", "batchnorm", "dropout"))
    assert "scale-mismatch" in results["planted"]
    assert results["slips"] == {"conv": ["kernel-flipped"], "max_pool": ["pooling-spread"],
                                "batchnorm": ["batch-statistics-missing"]}
