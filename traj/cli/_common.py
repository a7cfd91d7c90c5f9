"""What every command shares: the stderr console, error handling, progress bars, JSON output."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
from ..errors import ParameterError, TrajError
from ..report.writer import jsonable

#: Progress bars and errors go to stderr; stdout carries results (``--json``).
#: No emoji codes: a message or store name holding ":b:" (``--steps a:b:s``) is text, not 🅱.
err_console = Console(stderr=True, soft_wrap=True, emoji=False)
out_console = Console(soft_wrap=True, emoji=False)


@dataclass(frozen=True)
class Settings:
    """What the root ``traj`` options set for every command; typer's context object carries it."""

    debug: bool = False


def debugging(ctx: typer.Context | None) -> bool:
    """``traj --debug`` given (the root callback put :class:`Settings` on the context)."""
    obj = ctx.find_root().obj if ctx is not None else None
    return isinstance(obj, Settings) and obj.debug


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red line and return the Exit to raise (control characters escaped: one line, no terminal codes)."""
    err_console.print(f"[bold red]error:[/bold red] {escape(printable(message))}", highlight=False)
    return typer.Exit(code)


@contextmanager
def handle_errors(ctx: typer.Context | None = None) -> Iterator[None]:
    """Turn traj's errors into one red line and exit code 2 (``traj --debug`` shows the traceback)."""
    debug = debugging(ctx)
    try:
        yield
    except TrajError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None
    except FileNotFoundError as exc:
        if debug:
            raise
        raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    except OSError as exc:  # permission, full disk, read-only filesystem, ...
        if debug:
            raise
        raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    except MemoryError as exc:
        if debug:
            raise
        raise fail(memory_message(ctx, exc)) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


#: The options that set how much a command holds in memory, as its parameters are named.
MEMORY_OPTIONS = {"window": "--window", "samples": "--samples", "block_mb": "--block-mb", "null_size": "--null-size",
                  "eval_points": "--eval-points", "windows": "--windows"}


def memory_message(ctx: typer.Context | None, exc: MemoryError) -> str:
    """One line for a MemoryError: what could not be allocated (numpy says how much, and of what shape), and
    only the options of this command that need less memory when smaller (none: the input itself is too large)."""
    what = " ".join(str(exc).split())
    shown = f"not enough memory: {what[0].lower() + what[1:]}" if what else "not enough memory"
    given = getattr(ctx, "params", None) or {}
    options = [flag for name, flag in MEMORY_OPTIONS.items() if name in given]
    if options:
        listed = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
        return f"{shown} (a smaller {listed} needs less)"
    return f"{shown} (the input declares more than this machine can hold)"


def output_dir(out: Path | None, default: str, *inputs: Any, kind: str = "report") -> Path:
    """The command's ``--out`` (or its default under ./traj-out), checked before any work:
    new, empty or traj's own output of this ``kind`` (holding only what traj wrote), and neither
    an input store nor inside or around one."""
    from ..atomic import check_output_dir

    target = out if out is not None else Path("traj-out") / default
    return check_output_dir(target, inputs=[getattr(i, "path", i) for i in inputs], kind=kind)


class _Progress(Progress):
    """A progress display that vanishes when the work fails, so an error stays one line."""

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.live.transient = True
        super().__exit__(exc_type, *rest)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``with`` block unwinds as for Ctrl-C."""


#: What Ctrl-C and SIGTERM (under :func:`sigterm_as_interrupt`) raise: a command that wants to say
#: what an interrupted run left behind catches these, says it, and re-raises.
INTERRUPTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, _Terminated)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C: unwind (a Recorder flushes and closes its store), exit 143.

    A second SIGTERM while unwinding is ignored, so it cannot cut the close short.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except _Terminated:
        err_console.print("[yellow]terminated[/yellow]")
        raise typer.Exit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


class DataColumn(TextColumn):
    """A progress column whose text is data (a recipe or run name, a label): never markup, never control codes."""

    def render(self, task: Task) -> Text:
        return Text(printable(self.text_format.format(task=task)), style=self.style, justify=self.justify)


def progress_bar(*fields: str, transient: bool = True) -> Progress:
    columns = [DataColumn("{task.description}", style="bold"), BarColumn(), MofNCompleteColumn()]
    columns += [DataColumn(f"{{task.fields[{f}]}}") for f in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    # a transient bar off a terminal would leave only a stray blank line on stderr (before an error line, say)
    return _Progress(*columns, console=err_console, transient=transient, disable=transient and not err_console.is_terminal)


class Stages:
    """One line of ``bar`` per stage of a command: :meth:`stage` replaces it by a new, indeterminate line
    with the stage's name, :meth:`progress` fills it (the library's two callbacks, :mod:`traj.progress`),
    so no phase passes with a finished bar on screen and nothing moving."""

    def __init__(self, bar: Progress, first: str) -> None:
        self.bar = bar
        self.task = bar.add_task(first, total=None)

    def stage(self, name: str) -> None:
        self.bar.remove_task(self.task)
        self.task = self.bar.add_task(name, total=None)

    def progress(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=jsonable) + "\n")
    sys.stdout.flush()


@contextmanager
def flag_names(*same: str, **renamed: str) -> Iterator[None]:
    """Show the library's parameter names as this command's flags in error messages.

    ``flag_names("eps", n_iter="--power-iterations")``: a ParameterError about ``eps`` reads
    ``--eps ...``, one about ``n_iter`` reads ``--power-iterations ...``; others keep their name.
    """
    flags = {name: "--" + name.replace("_", "-") for name in same} | renamed
    try:
        yield
    except ParameterError as exc:
        if exc.parameter in flags and exc.shown_as == exc.parameter:  # an inner flag_names may have named it
            exc.shown_as = flags[exc.parameter]
        raise


def given_options(ctx: typer.Context, *names: str) -> set[str]:
    """Those of ``names`` (parameter names) that the user typed on the command line, not left at their default."""
    return {name for name in names if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


# Options of every command that streams a store through the engine (traj.engine.Engine).
BackendOption = Annotated[str, typer.Option(help="numpy, torch or dask.")]
DeviceOption = Annotated[str, typer.Option(help="torch device: cpu or cuda.")]
SchedulerOption = Annotated[str, typer.Option(help="dask scheduler: threads, processes, sync or tcp://host:port.")]
BlockOption = Annotated[float, typer.Option(help="Size of one float64 working block, MiB.")]
LogToOption = Annotated[str | None, typer.Option(
    "--log-to", help="Also send the headline numbers and figures to a tracker: tensorboard:DIR, wandb[:PROJECT] or mlflow:URI.")]


def report_tracker(spec: str | None):
    """The tracker ``--log-to`` names, checked before any work (None when not given)."""
    if spec is None:
        return None
    from ..live.trackers import ReportTracker

    return ReportTracker(spec)


def engine_options(backend: str, device: str, scheduler: str, block_mb: float):
    """The Engine of ``--backend --device --scheduler --block-mb`` (the library checks each)."""
    from ..engine import Engine, block_bytes_from_mib

    with flag_names("block_mb", "device", "scheduler", "backend"):
        return Engine(backend=backend, device=device, scheduler=scheduler, block_bytes=block_bytes_from_mib(block_mb))


def int_or_keyword(option: str, text: str, *keywords: str) -> int | str:
    """One of ``keywords`` itself, or an integer (``--rank auto|r``, ``--interval epoch|k``); the library checks its range."""
    if text.strip() in keywords:
        return text.strip()
    try:
        return int(text)
    except ValueError:
        choices = " or ".join(repr(k) for k in keywords)
        raise fail(f"{option} must be an integer or {choices}, not {text!r}") from None


def parse_rank(rank: str, *keywords: str) -> int | str:
    """``--rank``: "auto", one of ``keywords`` a command also offers (prune: "all"), or an integer."""
    return int_or_keyword("--rank", rank, "auto", *keywords)


def number_list(option: str, text: str, kind: type) -> list:
    """Comma-separated numbers of ``kind`` (``--compression 2,4,8``); the library checks their range."""
    noun = "integers" if kind is int else "numbers"
    pieces = [v.strip() for v in text.split(",")]
    if not any(pieces):
        raise fail(f"{option} is empty")
    if not all(pieces):  # "1,,2" is a typo, not two numbers
        raise fail(f"{option} takes comma-separated {noun}, got {text!r} (an empty entry)")
    try:
        return [kind(v) for v in pieces]
    except ValueError:
        raise fail(f"{option} takes comma-separated {noun}, got {text!r}") from None


# Options of every command that analyses a store's snapshots: which of them it sees (traj.store.selection).
StepsOption = Annotated[str | None, typer.Option(
    help="Only the snapshots at training steps START:STOP (both included), or START:STOP:STEP (every STEP steps "
         "from START; ::100 = multiples of 100): applied before --window, whose indices then count these snapshots.")]
StrideOption = Annotated[int, typer.Option(
    help="Every k-th snapshot (of those --steps keeps, from the first), before --window.")]


def open_selected(path: Path, steps: str | None = None, stride: int = 1):
    """The store at ``path`` showing the snapshots of ``--steps`` and ``--stride`` (checked by the library)."""
    from ..store import open_store

    with flag_names("steps", "stride"):
        return open_store(path, steps=steps, stride=stride)


def selection_note(store: Any) -> str:
    """`` (steps 0:1000:100, stride 2: 11 snapshots)`` after a store's name, or nothing without a selection."""
    return f" ({store.selected}: {store.n_snapshots} snapshots)" if getattr(store, "selected", "") else ""
