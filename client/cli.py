"""Entry point of the ``dfst-client`` command."""

from __future__ import annotations

import typer

import dfst

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help=__doc__)


@app.callback(invoke_without_command=True)
def root(version: bool = typer.Option(False, "--version", help="Print the dfst version and exit.")) -> None:
    if version:
        typer.echo(f"dfst {dfst.__version__}")
        raise typer.Exit(0)


def main() -> None:
    app()
