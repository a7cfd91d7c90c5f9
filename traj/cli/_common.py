"""What every command shares: the stderr console, error handling, progress bars, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..display import printable
from ..errors import TrajError
from ..report.writer import jsonable

#: Progress bars and errors go to stderr; stdout carries results (``--json``).
err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)

_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = value


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red line and return the Exit to raise (control characters escaped: one line, no terminal codes)."""
    err_console.print(f"[bold red]error:[/bold red] {escape(printable(message))}", highlight=False)
    return typer.Exit(code)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn traj's errors into one red line and exit code 2 (``--debug`` shows the traceback)."""
    try:
        yield
    except TrajError as exc:
        if _state["debug"]:
            raise
        raise fail(str(exc)) from None
    except FileNotFoundError as exc:
        if _state["debug"]:
            raise
        raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        if _state["debug"]:
            raise
        raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


class DataColumn(TextColumn):
    """A progress column whose text is data (a recipe or run name, a label): never markup, never control codes."""

    def render(self, task: Task) -> Text:
        return Text(printable(self.text_format.format(task=task)), style=self.style, justify=self.justify)


def progress_bar(*fields: str, transient: bool = True) -> Progress:
    columns = [DataColumn("{task.description}", style="bold"), BarColumn(), MofNCompleteColumn()]
    columns += [DataColumn(f"{{task.fields[{f}]}}") for f in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=transient)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=jsonable) + "\n")
    sys.stdout.flush()


def positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise fail(f"{name} must be >= 1, got {value}")


# Options of every command that streams a store through the engine (traj.engine.Engine).
BackendOption = Annotated[str, typer.Option(help="numpy, torch or dask.")]
DeviceOption = Annotated[str, typer.Option(help="torch device: cpu or cuda.")]
SchedulerOption = Annotated[str, typer.Option(help="dask scheduler: threads, processes, sync or tcp://host:port.")]
BlockOption = Annotated[float, typer.Option(help="Size of one float64 working block, MiB.")]


def engine_options(backend: str, device: str, scheduler: str, block_mb: float):
    from ..engine import Engine

    if block_mb <= 0:
        raise fail(f"--block-mb must be positive, got {block_mb}")
    return Engine(backend=backend, device=device, scheduler=scheduler, block_bytes=int(block_mb * (1 << 20)))


def positive_int_or(option: str, text: str, keyword: str) -> int | str:
    """``keyword`` itself, or a positive integer (e.g. ``--rank auto|r``, ``--interval epoch|k``)."""
    if text == keyword:
        return keyword
    try:
        value = int(text)
    except ValueError:
        raise fail(f"{option} must be a positive integer or {keyword!r}, not {text!r}") from None
    if value < 1:
        raise fail(f"{option} must be >= 1, got {value}")
    return value


def parse_rank(rank: str) -> int | str:
    return positive_int_or("--rank", rank, "auto")


def number_list(option: str, text: str, kind: type) -> list:
    """Comma-separated numbers of ``kind`` (``--compression 2,4,8``); empty or malformed: one error line."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise fail(f"{option} takes comma-separated {noun}, got {text!r}") from None
    if not values:
        raise fail(f"{option} is empty")
    return values
