"""The ``traj`` command: a thin Typer app; each command lives in its own module."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .._version import __version__
from ._common import Settings, err_console
from .cmd import cmd
from .conjugacy import conjugacy
from .convert import convert
from .dmd import dmd
from .importing import import_
from .info import info
from .kga import kga_replay
from .landscape import landscape
from .prune import prune
from .record import recipes, record
from .report import report
from .watch import watch

app = typer.Typer(
    name="traj",
    help="Record neural-network weight trajectories and study their training dynamics.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"traj {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """traj: record a training run's weight trajectory, then analyse its dynamics."""
    ctx.obj = Settings(debug=debug)


app.command("record")(record)
app.command("recipes")(recipes)
app.command("import")(import_)
app.command("info")(info)
app.command("convert")(convert)
app.command("dmd")(dmd)
app.command("cmd")(cmd)
app.command("prune")(prune)
app.command("conjugacy")(conjugacy)
app.command("kga-replay")(kga_replay)
app.command("landscape")(landscape)
app.command("report")(report)
app.command("watch")(watch)


def main() -> None:
    """Console-script entry point: usage errors become one red line and exit code 2."""
    # TyperException is the public base of the usage errors typer raises (its vendored click's ClickException)
    from typer import Abort, TyperException

    try:
        code = app(standalone_mode=False)
    except TyperException as exc:
        from rich.markup import escape

        hint = getattr(getattr(exc, "ctx", None), "command_path", "traj")
        message = " ".join(exc.format_message().split())  # one line, whatever click wrapped
        err_console.print(f"[bold red]error:[/bold red] {escape(message)} [dim](see '{escape(hint)} --help')[/dim]",
                          highlight=False)
        sys.exit(exc.exit_code)
    except (Abort, KeyboardInterrupt):
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # python -m traj.cli.app
    main()
