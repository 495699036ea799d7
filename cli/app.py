"""The ``layerkit`` typer application."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

import layerkit

app = typer.Typer(
    name="layerkit",
    help="Check backpropagation against finite differences, and say where and why they disagree.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"layerkit {layerkit.__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """layerkit: gradient checking for hand-written neural networks."""


def main() -> None:
    """Console-script entry point."""
    app()
