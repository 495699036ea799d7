"""The typer CLI: every command, option path and exit code, through CliRunner and the installed script."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from layerkit.cli.app import LazyProgress, app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
FORUM = str(ROOT / "examples" / "forum_bug.py")
runner = CliRunner()

REPORT_KEYS = {"method", "step", "step_rule", "dtype", "passed", "inconclusive", "mode", "relative_difference",
               "max_abs_error",
               "max_rel_error", "rtol", "cost", "n_params", "n_evals", "target_evals", "seconds", "blocks", "worst",
               "findings", "context", "step_verdict", "correct_blocks", "wrong_blocks", "notes", "problem", "lambda"}


def invoke(*args):
    return runner.invoke(app, list(args))


def test_default_check_is_the_course_debug_problem():
    result = invoke("check")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("PASSED  central") == 2 and "lambda=0" in out and "lambda=3" in out
    assert "Theta1" in out and "Theta2" in out and "worst entries" in out


def test_forum_bug_target_exits_1_with_the_diagnosis():
    result = invoke("check", f"{FORUM}:problem")
    assert result.exit_code == 1
    assert "regularization-mismatch [Theta2]" in result.stdout and "-lambda/m" in result.stdout
    assert "step size is not the cause" in result.stdout


@pytest.mark.parametrize("method", ["forward", "central", "richardson", "complex-step"])
def test_each_method(method):
    result = invoke("check", "--method", method, "--quiet")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"PASSED  {method}") for line in lines)


def test_method_all_and_repeatable_lambda():
    result = invoke("check", "--method", "all", "--lambda", "0.5", "--lambda", "1", "--lambda", "2", "-q")
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 12


def test_layers_examples_dtype_seed_step_rtol_top():
    result = invoke("check", "--layers", "4,6,5,3", "--examples", "7", "--dtype", "float32", "--seed", "3",
                    "--step", "0.01", "--rtol", "0.01", "--top", "2", "--lambda", "1")
    assert result.exit_code == 0, result.output
    assert "float32" in result.stdout and "step fixed 0.01" in result.stdout and "Theta3" in result.stdout
    assert result.stdout.count("numerical ") == 2  # --top 2


def test_directional_mode():
    result = invoke("check", "--mode", "directional")
    assert result.exit_code == 0 and "directional: 2 random directions" in result.stdout
    result = invoke("check", f"{FORUM}:problem", "--mode", "directional", "--json")
    assert result.exit_code == 1
    rep = json.loads(result.stdout)["reports"][0]
    assert rep["mode"] == "directional" and rep["wrong_blocks"] == ["Theta2"]
    assert rep["findings"][0]["code"] == "regularization-mismatch"


def test_json_output_schema():
    result = invoke("check", "--json", "--method", "all")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert {"layerkit", "command", "passed", "problem", "reports"} <= set(doc)
    assert doc["passed"] is True and len(doc["reports"]) == 8
    for rep in doc["reports"]:
        assert REPORT_KEYS <= set(rep)
        assert {"name", "shape", "relative_difference", "max_abs_error", "n_failed", "passed"} <= set(rep["blocks"][0])
        assert {"block", "index", "numerical", "analytical", "error"} <= set(rep["worst"][0])


def test_json_with_findings_and_exit_1():
    result = invoke("check", f"{FORUM}:problem", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    f = doc["reports"][0]["findings"][0]
    assert {"code", "blocks", "message", "evidence"} <= set(f) and f["code"] == "regularization-mismatch"


@pytest.mark.parametrize("args, fragment", [
    (["check", "--layers", "3,x,3"], "--layers"),
    (["check", "--layers", "3"], "--layers"),
    (["check", "--step", "tiny"], "--step"),
    (["check", "--step", "-1"], "--step"),
    (["check", "--mode", "sideways"], "--mode"),
    (["check", "missing_file.py:problem"], "no such file"),
    (["check", f"{FORUM}:no_such_name"], "no attribute 'no_such_name'"),
    (["check", "no_such_pkg.mod:problem"], "no module named"),
    (["check", f"{FORUM}:SIZES"], "expected a layerkit.Problem"),
    (["check", "just-a-name"], "expected path/to/file.py[:NAME]"),
    (["check", f"{FORUM}:problem", "--lambda", "1"], "--lambda"),
    (["sweep", "--layers", "0,3"], "--layers"),
    (["check", "--method", "five-point"], "--method"),
    (["check", f"{FORUM}:problem", "--layers", "3,4,3"], "--layers"),
    (["check", f"{FORUM}:problem", "--dtype", "float32"], "--dtype"),
    (["check", f"{FORUM}:problem", "--examples", "9"], "--examples"),
    (["sweep", "--method", "complex-step"], "--method"),
])
def test_usage_and_input_errors_exit_2_with_one_line(args, fragment):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in result.output


def test_errors_inside_the_users_file(tmp_path):
    bad_import = tmp_path / "bad_import.py"
    bad_import.write_text("import numpy\nraise ImportError('cannot find my_secret_module')\n")
    result = invoke("check", f"{bad_import}:problem")
    assert result.exit_code == 2 and "cannot find my_secret_module" in result.stderr

    wrong = tmp_path / "wrong.py"
    wrong.write_text(textwrap.dedent("""
        import numpy as np
        def problem():
            return (lambda t: float(t @ t), np.ones(3))
        def raising():
            def fun(t):
                raise ZeroDivisionError("my cost divided by zero")
            return (fun, np.ones(3))
    """))
    result = invoke("check", f"{wrong}:problem")
    assert result.exit_code == 2 and "(cost, grad) pair" in result.stderr
    result = invoke("check", f"{wrong}:raising")
    assert result.exit_code == 2 and "ZeroDivisionError: my cost divided by zero" in result.stderr


def test_module_target_and_tuple_problems(tmp_path, monkeypatch):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "costs.py").write_text(textwrap.dedent("""
        import numpy as np
        import layerkit
        quad = (lambda t: (float(t @ t), 2 * t), np.arange(4.0), {"a": (2, 2)})
        net = layerkit.Network.from_sizes([2, 3, 2], seed=0)
        netprob = (net, np.ones((3, 2)), np.array([0, 1, 0]), 0.5)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("check", "userpkg.costs:quad")
    assert result.exit_code == 0 and "ok   a" in result.stdout and "2x2" in result.stdout
    result = invoke("check", "userpkg.costs:netprob", "--lambda", "0", "--lambda", "2", "-q")
    assert result.exit_code == 0 and "lambda=2" in result.stdout


def test_sweep_table_and_json():
    result = invoke("sweep")
    assert result.exit_code == 0
    assert "1e-12" in result.stdout and "auto" in result.stdout and "<" in result.stdout
    result = invoke("sweep", f"{FORUM}:problem", "--method", "central", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert {"steps", "errors", "auto_steps", "best_steps", "analytic_error", "verdict"} <= set(doc)
    assert len(doc["steps"]) == 12 and doc["steps"][0] == 0.1 and doc["steps"][-1] == 1e-12
    assert not doc["step_is_the_problem"]


def test_sweep_options_for_the_built_in_problem():
    result = invoke("sweep", "--layers", "4,3,2", "--examples", "6", "--lambda", "0.5", "--dtype", "float32",
                    "--seed", "1", "--method", "richardson", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc["errors"]) == ["richardson"] and doc["dtype"] == "float32"
    assert set(doc["block_errors"]["richardson"]) == {"Theta1", "Theta2"}


def test_sweep_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep.png"
    result = invoke("sweep", "--plot", str(out))
    assert result.exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_sweep_plot_without_matplotlib_explains(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = invoke("sweep", "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 2 and "pip install 'layerkit[plot]'" in result.stderr


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("layerkit ")
    result = invoke("--help")
    assert result.exit_code == 0 and "check" in result.stdout and "sweep" in result.stdout


def test_progress_appears_only_for_slow_runs():
    with LazyProgress(3, enabled=True, delay=0.05) as bar:
        time.sleep(0.3)
        bar.advance()
        assert bar.shown
    with LazyProgress(3, enabled=True, delay=1.0) as bar:
        bar.advance()
    assert not bar.shown
    with LazyProgress(3, enabled=False, delay=0.0) as bar:
        time.sleep(0.1)
    assert not bar.shown


@pytest.mark.slow
def test_installed_console_script_runs():
    exe = shutil.which("layerkit") or str(Path(sys.executable).parent / "layerkit")
    if not os.path.exists(exe):
        pytest.skip("the layerkit console script is not installed in this environment")
    proc = subprocess.run([exe, "check", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("PASSED") == 2
    for args, fragment in ((["check", "--layers", "nope"], "--layers"), (["check", "--method", "nope"], "--method"),
                           (["check", "--lambda", "-1"], "--lambda"), (["check", "--no-such-option"], "no-such-option"),
                           (["sweep", "--examples", "0"], "--examples")):
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    # plain `layerkit` is a usage error: its usage and commands on stderr, nothing on stdout, exit 2
    assert proc.returncode == 2 and not proc.stdout and "check" in proc.stderr and "sweep" in proc.stderr
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("layerkit ")


# ---------------------------------------------------------------------- a target that misbehaves
def _run_cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "layerkit.cli.app", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("how, message", [
    ("sys.exit(3)", "error: the target called sys.exit(3) during the check"),
    ("raise KeyboardInterrupt", "error: the check was interrupted (KeyboardInterrupt) while the target ran"),
])
def test_a_target_that_exits_or_is_interrupted_exits_2_with_one_line(tmp_path, how, message):
    (tmp_path / "quitter.py").write_text(textwrap.dedent(f"""
        import sys
        import numpy as np
        import layerkit
        calls = [0]
        def cost(t):
            calls[0] += 1
            if calls[0] > 3:
                {how}
            return float(t @ t), 2 * t
        problem = layerkit.Problem.from_function(cost, np.ones(3))
    """))
    proc = _run_cli(tmp_path, "check", "quitter.py:problem", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == message


def test_what_the_target_prints_goes_to_stderr_and_json_stays_clean(tmp_path):
    (tmp_path / "chatty.py").write_text(textwrap.dedent("""
        import numpy as np
        import layerkit
        print("loading my cost")
        def cost(t):
            print("evaluating", t[0])
            return float(t @ t), 2 * t
        problem = layerkit.Problem.from_function(cost, np.ones(3))
    """))
    proc = _run_cli(tmp_path, "check", "chatty.py:problem", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["passed"] is True
    assert "loading my cost" in proc.stderr and "evaluating" in proc.stderr


def test_a_file_target_is_a_real_module_for_dataclasses_and_process_pools(tmp_path):
    (tmp_path / "poolcost.py").write_text(textwrap.dedent("""
        from concurrent.futures import ProcessPoolExecutor
        from dataclasses import dataclass
        import numpy as np
        import layerkit

        @dataclass
        class Quadratic:
            scale: float = 2.0

            def __call__(self, t):
                return float(self.scale * t @ t), 2 * self.scale * t

        def problem():
            return layerkit.Problem.from_function(Quadratic(), np.linspace(-1, 1, 4))

        def checked():
            with ProcessPoolExecutor(2) as pool:
                return layerkit.check_function(Quadratic(), np.linspace(-1, 1, 4), executor=pool).passed
    """))
    proc = _run_cli(tmp_path, "check", "poolcost.py:problem", "-q")
    assert proc.returncode == 0, proc.stderr
    from layerkit.loader import load_problem

    sys.path.insert(0, str(tmp_path))
    try:
        problem = load_problem(str(tmp_path / "poolcost.py") + ":problem")
        assert sys.modules[type(problem.fun).__module__].checked() is True  # pickled by module name
    finally:
        sys.path.remove(str(tmp_path))


def test_a_module_target_is_found_in_the_current_directory(tmp_path):
    (tmp_path / "mycost.py").write_text(textwrap.dedent("""
        import numpy as np
        import layerkit
        problem = layerkit.Problem.from_function(lambda t: (float(t @ t), 2 * t), np.ones(3))
    """))
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([shutil.which("layerkit") or sys.executable, *(() if shutil.which("layerkit") else
                           ("-m", "layerkit.cli.app")), "check", "mycost:problem", "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PASSED")


@pytest.mark.parametrize("args, fragment", [
    (["check", "--step", "1e308"], "step: expected a step of at most 1e+06 times max(1, |x_j|)"),
    (["check", "--step", "1e300"], "step: expected a step of at most 1e+06 times max(1, |x_j|)"),
])
def test_an_overflowing_step_is_an_argument_error(args, fragment):
    result = invoke(*args)
    assert result.exit_code == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


NOT_ANALYTIC = """
import numpy as np

def fun(x):
    return float(np.sum(np.abs(x)) + x @ x), np.sign(x) + 2 * x

problem = (fun, np.array([0.3, -0.7, 1.2]))
"""


def test_method_all_reports_a_method_that_does_not_apply_and_runs_the_others(tmp_path):
    target = tmp_path / "not_analytic.py"
    target.write_text(NOT_ANALYTIC)
    result = invoke("check", f"{target}:problem", "--method", "all")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("PASSED") == 3 and "NOT APPLICABLE  complex-step" in result.stdout
    doc = json.loads(invoke("check", f"{target}:problem", "--method", "all", "--json").stdout)
    assert doc["passed"] and len(doc["reports"]) == 3
    assert [n["method"] for n in doc["not_applicable"]] == ["complex-step"]
    # asked for by name, the method's refusal is the answer
    assert invoke("check", f"{target}:problem", "--method", "complex-step").exit_code == 2


def test_a_method_the_target_registers_can_be_named(tmp_path):
    target = tmp_path / "five_point.py"
    target.write_text(textwrap.dedent("""
        import numpy as np
        from attrs import frozen
        from layerkit import FiniteDifference, register_method

        @frozen
        class FivePoint(FiniteDifference):
            name = "five-point-cli"
            offsets = (-2.0, -1.0, 1.0, 2.0)
            weights = (1 / 12, -2 / 3, 2 / 3, -1 / 12)
            order = 4

        register_method("five-point-cli", FivePoint)
        problem = (lambda x: (float(np.sum(np.sin(x))), np.cos(x)), np.linspace(-1, 1, 4))
    """))
    result = invoke("check", f"{target}:problem", "--method", "five-point-cli", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("PASSED  five-point-cli")


def test_a_budget_fixes_auto_mode_in_evaluations(tmp_path):
    target = tmp_path / "wide.py"
    target.write_text(textwrap.dedent("""
        import numpy as np
        import layerkit
        w = np.linspace(0.5, 2.0, 4000)
        problem = layerkit.Problem.from_function(lambda x: (0.5 * float(np.sum(w * x * x)), w * x), np.ones(4000))
    """))
    result = invoke("check", f"{target}:problem", "--budget", "300", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reports"][0]["mode"] == "directional"
    assert invoke("check", "--budget", "0").exit_code == 2


def test_sizes_and_seeds_are_checked_and_a_target_is_imported_once(tmp_path):
    assert invoke("check", "--layers", "3,,3").exit_code == 2
    assert invoke("check", "--seed", "-1").exit_code == 2
    target = tmp_path / "imp.py"
    target.write_text("import numpy as np\nprint('imported')\ndef f(x): return float(x @ x), 2 * x\n"
                      "problem = (f, np.ones(3))\n")
    out = subprocess.run([sys.executable, "-m", "layerkit.cli.app", "check", f"{target}:problem"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("imported") == 1
