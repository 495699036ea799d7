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


def test_train_digits_reaches_95_percent():
    pytest.importorskip("sklearn")
    import train_digits

    result = train_digits.main()
    assert result["accuracy"] >= 0.95


@pytest.mark.parametrize("script", ["forum_bug.py", "custom_layer.py"])
def test_scripts_run_as_programs(script):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
