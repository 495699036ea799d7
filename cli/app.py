"""The ``layerkit`` typer application: ``check`` and ``sweep``.

The commands parse options, build :class:`layerkit.Problem` objects, call the library, render its results
and map errors to exit codes: 0 every check passed, 1 a mismatch was found, 2 a usage or input error (one
line on stderr, never a traceback).

``--json`` writes one document on stdout::

    {"layerkit": "<version>", "command": "check", "problem": "<name>", "passed": true|false,
     "reports": [<Report.to_dict()> + {"problem": ..., "lambda": ...}, ...]}

(see :meth:`layerkit.Report.to_dict` for the keys of each report).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from enum import Enum
from typing import Annotated, Any, Optional

import typer

import layerkit
from layerkit.course import course_signature
from layerkit.errors import LayerkitError
from layerkit.loader import ProblemLoadError, load_problem, takes_lambda

app = typer.Typer(
    name="layerkit",
    help="Check backpropagation against finite differences, and say where and why they disagree.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_PASSED, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


class DtypeChoice(str, Enum):
    float64 = "float64"
    float32 = "float32"


class UsageError(Exception):
    """A usage or input problem found by the CLI itself."""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"layerkit {layerkit.__version__}")
        raise typer.Exit(EXIT_PASSED)


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """layerkit: gradient checking for hand-written neural networks."""


# ---------------------------------------------------------------------- option parsing
def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",")]
    except ValueError:
        raise UsageError(f"--layers: expected comma-separated positive integers such as 3,5,3, got {text!r}") from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise UsageError(f"--layers: expected at least two positive sizes such as 3,5,3, got {text!r}")
    return sizes


def _parse_step(text: str) -> Any:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--step: expected 'auto' or a positive number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise UsageError(f"--step: expected 'auto' or a positive number, got {text!r}")
    return value


#: The methods ``--method all`` runs.
ALL_METHODS = ("forward", "central", "richardson", "complex-step")


def _methods(choice: str) -> list[str]:
    """The methods ``--method`` names: ``all``, or one registered name (built in, or registered by the target
    file with :func:`layerkit.register_method`, which is why this is checked after the target is loaded)."""
    if choice == "all":
        return list(ALL_METHODS)
    names = layerkit.method_names()
    if choice not in names:
        raise UsageError(f"--method: expected 'all' or a registered method ({', '.join(names)}), got {choice!r}")
    return [choice]


def _problems(target: Optional[str], layers: Optional[str], examples: Optional[int], lambdas: Optional[list[float]],
              dtype: Optional[DtypeChoice], seed: Optional[int]) -> list[layerkit.Problem]:
    """The problems to check: the debug problem for each lambda, or the user's target (the options of the
    built-in problem are refused with a target, rather than silently ignored)."""
    if target is None:
        sizes = _parse_sizes("3,5,3" if layers is None else layers)
        return [layerkit.Problem.debug(lam, tuple(sizes), examples or 5,
                                       dtype=(dtype or DtypeChoice.float64).value, seed=seed)
                for lam in (lambdas if lambdas else [0.0, 3.0])]
    given = [name for name, value in (("--layers", layers), ("--examples", examples), ("--dtype", dtype),
                                      ("--seed", seed)) if value is not None]
    if given:
        raise UsageError(f"{given[0]}: applies to the built-in problem only; a target brings its own")
    obj = _target_object(target)  # imported once; a target that cannot be loaded is load_problem's to explain
    sig = course_signature(obj)
    if sig is not None:  # a bare course cost function: the course's debug problem
        if lambdas and "lambda" not in sig.names:
            raise UsageError(f"--lambda: {target} takes no regularization argument (lambda_, lam, reg, ...)")
        return _library_call(layerkit.course_problems, obj, lambdas if lambdas else (0.0, 3.0))
    if lambdas and takes_lambda(obj):  # the factory builds the problem for each lambda
        return [load_problem(target, lam, obj=obj) for lam in lambdas]
    problem = load_problem(target, obj=obj)
    if problem.network is not None:
        if lambdas:
            return [layerkit.Problem.from_network(problem.network, problem.X, problem.y, lam, name=problem.name)
                    for lam in lambdas]
        return [problem]
    if lambdas:
        raise UsageError("--lambda: a function target fixes its own lambda unless its factory takes lambda_ "
                         "(def problem(lambda_=1.0): ...)")
    return [problem]


def _target_object(target: str) -> Any:
    """The object ``NAME`` of a target, for its signature (None when it cannot be loaded: load_problem then
    says why)."""
    try:
        from layerkit.loader import target_object

        return target_object(target)
    except ProblemLoadError:
        return None


class LazyProgress:
    """A rich progress bar on stderr that only appears once the work has taken about a second."""

    def __init__(self, total: int, enabled: bool, delay: float = 1.0) -> None:
        self.total, self.enabled, self.delay = total, enabled, delay
        self.done = 0
        self.stage_text = ""
        self.progress: Any = None
        self.task: Any = None
        self.lock = threading.Lock()
        self.timer = threading.Timer(delay, self._show) if enabled else None

    def __enter__(self) -> LazyProgress:
        if self.timer is not None:
            self.timer.daemon = True
            self.timer.start()
        return self

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with self.lock:
            self.progress = Progress(SpinnerColumn(), TextColumn("checking"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"), TextColumn("{task.description}"),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.stage_text, total=self.total, completed=self.done)

    def stage(self, stage: str, evaluations: int) -> None:
        """A directional check's progress: its stage and the evaluations spent so far."""
        with self.lock:
            self.stage_text = f"{stage}: {evaluations} evaluations"
            if self.progress is not None:
                self.progress.update(self.task, description=self.stage_text)

    def advance(self) -> None:
        with self.lock:
            self.done += 1
            if self.progress is not None:
                self.progress.update(self.task, completed=self.done)

    def __exit__(self, *exc: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        with self.lock:
            if self.progress is not None:
                self.progress.stop()

    @property
    def shown(self) -> bool:
        return self.progress is not None


def _run_checks(problems: list[layerkit.Problem], methods: list[str], options: dict[str, Any],
                progress: bool, every: bool = False) -> list[tuple[layerkit.Problem, Any]]:
    """Each problem checked with each method: ``(problem, Report)`` pairs.  With ``every`` (``--method
    all``), a method that does not apply to a target (the complex step through ``abs``) gives
    ``(problem, (method, reason))`` instead of ending the command."""
    results: list[tuple[layerkit.Problem, Any]] = []
    with LazyProgress(len(problems) * len(methods), progress) as bar:
        for problem in problems:
            for method in methods:
                try:
                    results.append((problem, problem.check(method, progress=bar.stage, **options)))
                except (layerkit.ComplexEvaluationError, layerkit.InputError) as exc:
                    # a method that does not apply to this target or mode; with --method all, the others run
                    if not every or (isinstance(exc, layerkit.InputError) and exc.argument != "method"):
                        raise
                    results.append((problem, (method, str(exc))))
                bar.advance()
    return results


#: Whether ``--traceback`` was given: the target's own frames are shown when it raises.
SHOW_TRACEBACK = False


def _target_frames(exc: BaseException) -> str:
    """The traceback of ``exc`` without layerkit's frames (nor numpy's, typer's or the standard library's
    import machinery): the target's own code, innermost last."""
    import os
    import traceback

    skip = (os.path.dirname(layerkit.__file__), os.path.dirname(os.path.abspath(__file__)), "<frozen ",
            os.path.dirname(typer.__file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(skip)]
    lines = ["Traceback of the target (layerkit's frames left out):\n"]
    lines += traceback.format_list(frames) if frames else ["  (no frame of the target's own code)\n"]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _library_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call into the library, turning input and target errors into one-line usage errors.

    Whatever the target prints goes to stderr, so that ``--json`` stays one document on stdout; a target that
    calls ``sys.exit`` or raises KeyboardInterrupt ends the command with exit code 2 and a one-line message
    (the library restores the caller's objects on the way out)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return fn(*args, **kwargs)
    except ProblemLoadError as exc:
        if SHOW_TRACEBACK and exc.original is not None:
            typer.echo(_target_frames(exc.original), err=True)
        _fail(str(exc))
    except UsageError as exc:
        _fail(str(exc))
    except LayerkitError as exc:
        _fail(str(exc))
    except typer.Exit:
        raise
    except SystemExit as exc:
        _fail(f"the target called sys.exit({exc.code!r}) during the check")
    except KeyboardInterrupt:
        _fail("the check was interrupted (KeyboardInterrupt) while the target ran")
    except Exception as exc:  # the user's own function raised
        if SHOW_TRACEBACK:
            typer.echo(_target_frames(exc), err=True)
        _fail(f"the target raised {type(exc).__name__}: {' '.join(str(exc).split())}"
              + ("" if SHOW_TRACEBACK else " (--traceback shows where)"))


# ---------------------------------------------------------------------- check
PLOT_HELP = ("Write the heatmap of where the gradients disagree to this PNG (one file per report: NAME-2.png, ... "
             "after the first; needs matplotlib: pip install 'layerkit\\[plot]').")


@app.command()
def check(  # noqa: PLR0913 - the options a user sets
    target: Annotated[Optional[str], typer.Argument(
        help="path/to/file.py:NAME or package.module:NAME giving a layerkit.Problem (or a no-argument callable "
             "returning one, or a tuple (fun, x0[, blocks]) / (network, X, y, lambda)). Default: the course's "
             "debug network.", show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(
        "--layers", help="Layer sizes of the built-in problem. Default: 3,5,3.", show_default=False)] = None,
    examples: Annotated[Optional[int], typer.Option(
        "--examples", min=1, help="Number of examples m of the built-in problem. Default: 5.",
        show_default=False)] = None,
    lambdas: Annotated[Optional[list[float]], typer.Option(
        "--lambda", min=0.0, help="Regularization lambda; repeatable. Default: 0 and 3.")] = None,
    method: Annotated[str, typer.Option(
        "--method", help="forward, central, richardson, complex-step, a method the target registers, or all "
                         "(the four built-in ones).")] = "central",
    mode: Annotated[str, typer.Option("--mode", help="'auto' (full when it takes at most 10 s at the measured "
                                      "time per evaluation, else directional), 'full' (every entry) or "
                                      "'directional' (random directions, then localization by rows and "
                                      "columns).")] = "auto",
    step: Annotated[str, typer.Option("--step", help="'auto' (error-model step) or a number.")] = "auto",
    budget: Annotated[Optional[int], typer.Option(
        "--budget", min=1, help="--mode auto in evaluations instead of seconds: full when it needs at most this "
                                "many, else directional within them (the same choice on every machine).",
        show_default=False)] = None,
    dtype: Annotated[Optional[DtypeChoice], typer.Option(
        "--dtype", help="dtype of the built-in problem. Default: float64.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seeded random weights instead of the debug "
                                                 "weights (built-in problem).")] = None,
    rtol: Annotated[Optional[float], typer.Option(
        "--rtol", min=0.0, help="Replaces the relative part of every tolerance (default: the analytic "
                                "gradient's rounding, 32 eps); the error model's absolute part stays. Full mode "
                                "only.")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Worst entries shown.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the verdict lines.")] = False,
    show_traceback: Annotated[bool, typer.Option(
        "--traceback", help="When the target raises, show its own frames (layerkit's left out).")] = False,
    plot: Annotated[Optional[str], typer.Option("--plot", show_default=False, help=PLOT_HELP)] = None,
) -> None:
    """Compare analytic and numerical gradients; exit 0 if all agree, 1 on a mismatch, 2 on bad input."""
    global SHOW_TRACEBACK
    SHOW_TRACEBACK = show_traceback
    try:
        step_value = _parse_step(step)
        if mode not in ("auto", "full", "directional"):
            raise UsageError(f"--mode: expected 'auto', 'full' or 'directional', got {mode!r}")
        problems = _library_call(_problems, target, layers, examples, lambdas, dtype, seed)
        methods = _methods(method)
    except UsageError as exc:
        _fail(str(exc))
    options: dict[str, Any] = {"step": step_value, "rtol": rtol, "top": top, "mode": mode, "budget": budget}
    results = _library_call(_run_checks, problems, methods, options, not (as_json or quiet), method == "all")
    reports = [r for _, r in results if isinstance(r, layerkit.Report)]
    passed = bool(reports) and all(r.passed for r in reports)
    written = _write_plots(plot, reports) if plot else []
    if as_json:
        typer.echo(json.dumps(_check_document(results, passed), indent=2))
    else:
        _print_results(results, quiet, top, written)
    raise typer.Exit(EXIT_PASSED if passed else EXIT_MISMATCH)


def _check_document(results: list[tuple[layerkit.Problem, Any]], passed: bool) -> dict[str, Any]:
    """The ``--json`` document of ``check`` (see the module docstring)."""
    reports = [(p, r) for p, r in results if isinstance(r, layerkit.Report)]
    skipped = [(p, r) for p, r in results if not isinstance(r, layerkit.Report)]
    return {"layerkit": layerkit.__version__, "command": "check", "passed": passed,
            "problem": results[0][0].name if results else "",
            "reports": [{**r.to_dict(), "problem": p.name, "lambda": r.context.get("lambda_")} for p, r in reports],
            "not_applicable": [{"problem": p.name, "method": m, "reason": why} for p, (m, why) in skipped]}


def _print_results(results: list[tuple[layerkit.Problem, Any]], quiet: bool, top: int, written: list[str]) -> None:
    """Each report's table (its verdict alone with ``--quiet``), a line per method that did not apply, and the
    pictures written."""
    for i, (problem, report) in enumerate(results):
        if isinstance(report, layerkit.Report):
            text = report.verdict if quiet else report.render(top=top)
        else:
            text = "NOT APPLICABLE  {}: {}".format(*report)
        if not quiet:
            typer.echo(f"{chr(10) if i else ''}== {problem.name}")
        typer.echo(text)
    for path in written:
        typer.echo(f"picture written to {path}")


def _write_plots(path: str, reports: list[Any]) -> list[str]:
    """Each report's heatmap to ``path`` (then ``stem-2.png``, ...); a missing matplotlib or an unwritable
    path is a usage error."""
    from pathlib import Path

    target = Path(path)
    out = []
    for k, report in enumerate(reports):
        name = target if k == 0 else target.with_name(f"{target.stem}-{k + 1}{target.suffix or '.png'}")
        try:
            fig = report.plot()
            fig.savefig(name, dpi=110)
        except ImportError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"--plot: cannot write {name}: {exc.strerror or exc}")
        import matplotlib.pyplot as plt

        plt.close(fig)
        out.append(str(name))
    return out


# ---------------------------------------------------------------------- sweep
@app.command()
def sweep(  # noqa: PLR0913 - the options a user sets
    target: Annotated[Optional[str], typer.Argument(help="As for 'check'. Default: the course's debug network.",
                                                    show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(
        "--layers", help="Layer sizes of the built-in problem. Default: 3,5,3.", show_default=False)] = None,
    examples: Annotated[Optional[int], typer.Option(
        "--examples", min=1, help="Number of examples m of the built-in problem. Default: 5.",
        show_default=False)] = None,
    lambda_: Annotated[Optional[float], typer.Option(
        "--lambda", min=0.0, help="Regularization lambda (the built-in problem, or a network target). "
                                  "Default: 3 for the built-in problem.", show_default=False)] = None,
    method: Annotated[str, typer.Option(
        "--method", help="forward, central, richardson, or all of them (the complex step is the reference "
                         "when the target allows it).")] = "all",
    dtype: Annotated[Optional[DtypeChoice], typer.Option(
        "--dtype", help="dtype of the built-in problem. Default: float64.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seeded random weights (built-in problem).")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write the log-log error curves to this PNG "
                                                "(needs matplotlib: pip install 'layerkit\\[plot]').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Error of each method against the step h = 1e-1 ... 1e-12: is the step size the problem?"""
    from layerkit.diagnosis.sweep import plot_sweep, sweep_steps

    try:
        lambdas = [lambda_] if lambda_ is not None else [3.0] if target is None else None
        problems = _library_call(_problems, target, layers, examples, lambdas, dtype, seed)
        if method == "complex-step":
            raise UsageError("--method: the sweep compares difference methods; the complex step is its reference "
                             "when the target allows it (expected forward, central, richardson or all)")
        methods = [m for m in _methods(method) if m != "complex-step"]
    except UsageError as exc:
        _fail(str(exc))
    result = _library_call(sweep_steps, problems[0], methods)
    if plot:
        try:
            plot_sweep(result, plot)
        except ImportError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"--plot: cannot write {plot}: {exc.strerror or exc}")
    if as_json:
        typer.echo(json.dumps({"layerkit": layerkit.__version__, "command": "sweep", "problem": problems[0].name,
                               **result.to_dict()}, indent=2))
    else:
        typer.echo(f"== {problems[0].name}: relative error against {result.reference}")
        typer.echo(result.table())
        if plot:
            typer.echo(f"plot written to {plot}")
    raise typer.Exit(EXIT_PASSED if result.step_is_the_problem or result.analytic_error < 1e-6 else EXIT_MISMATCH)


def _usage() -> str:
    """The usage line and the commands, in plain text."""
    command = typer.main.get_command(app)
    ctx = command.make_context("layerkit", [], resilient_parsing=True)
    lines = ["Usage: layerkit [OPTIONS] COMMAND [ARGS]...  (a command is required; try 'layerkit --help')", "",
             "Commands:"]
    for name in command.list_commands(ctx):  # type: ignore[attr-defined]
        sub = command.get_command(ctx, name)  # type: ignore[attr-defined]
        lines.append(f"  {name:<10} {(sub.get_short_help_str(60) if sub is not None else '')}")
    return "\n".join(lines)


def main() -> None:
    """Console-script entry point: like ``app()``, but usage errors found by the option parser (a bad
    choice, a negative lambda, an unknown option) are also printed as one line on stderr, exit code 2."""
    if len(sys.argv) <= 1:  # plain `layerkit`: a usage error, said on stderr
        typer.echo(_usage(), err=True)
        sys.exit(EXIT_USAGE)
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        message, exit_code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if message is None or not isinstance(exit_code, int):
            raise
        typer.echo(f"error: {' '.join(message().split())}", err=True)
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
