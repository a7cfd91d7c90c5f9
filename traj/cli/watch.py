"""``traj watch``: follow a store while a run writes it (read only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ._common import fail, handle_errors, out_console


def watch(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store being written (or already written).")],
    interval: Annotated[float, typer.Option("--interval", help="Seconds between looks at the store.", min=0.1)] = 2.0,
    html: Annotated[Path | None, typer.Option("--html", help="Also keep an auto-refreshing page (index.html) here.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Show the store as it stands and exit.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop after this many seconds.", min=0.0)] = None,
) -> None:
    """Steps, loss and the live monitor's latest fit of a store while the run trains; stops when the run ends.

    ``--html DIR`` keeps a page of the loss and live series, the latest fit's spectrum on the unit circle
    and the transition matrix (W1 between every two live fits' stored spectra; the latest 100 fits).

    Never writes to the store. The live numbers appear when the run records with the live monitor
    on (``Recorder(..., live=traj.live.LiveOptions())`` or the callbacks' ``live=``).

    Examples:

        traj watch run.zarr

        traj watch run.zarr --html traj-out/watch --interval 5
    """
    with handle_errors(ctx):
        from rich.live import Live

        from ..atomic import check_output_dir
        from ..live.watch import watch_state

        if not store.is_dir():
            raise fail(f"{store}: no such store")
        if html is not None:  # as every --out: new, empty or traj watch's own page, never in or around the store
            check_output_dir(html, inputs=[store], option="--html", kind="watch")
        start = time.monotonic()
        state = watch_state(store)
        if once:
            out_console.print(_frame(state))
            if html is not None:
                _write_page(state, html, interval, store)
            return
        with Live(_frame(state), console=out_console, refresh_per_second=4, transient=False) as live:
            while True:
                if html is not None:
                    _write_page(state, html, interval, store)
                if not state.writing or (timeout is not None and time.monotonic() - start >= timeout):
                    break
                time.sleep(interval)
                state = watch_state(store)
                live.update(_frame(state))
        out_console.print()
        ended = "the run closed the store" if state.closed else \
            "no writer holds the store (the run ended without closing it)" if not state.writing else "stopped"
        out_console.print(f"{ended}: {state.n_snapshots} snapshot(s)")


def _frame(state):
    from rich.table import Table

    from ..display import markup as m
    from ..live.watch import sparkline

    table = Table(title=f"{m(state.path)}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    steps = f"{int(state.steps[0])}..{int(state.steps[-1])}" if state.n_snapshots else "none yet"
    table.add_row("snapshots", f"{state.n_snapshots} (steps {steps})" + ("" if state.writing else ", not being written"))
    finite = state.loss[np.isfinite(state.loss)] if state.loss.size else state.loss
    table.add_row("loss", f"{finite[-1]:.6g}  {sparkline(state.loss)}" if finite.size else "-")
    latest = state.latest()
    if not latest:
        table.add_row("live fit", "none yet" if state.live else "the run records without the live monitor")
    else:
        table.add_row("live fit", f"at step {int(latest['step'])}: max |λ| {latest.get('leading_modulus', np.nan):.6f}, "
                                  f"{int(latest.get('unstable', 0))} unstable, rank {int(latest.get('rank', 0))}")
        table.add_row("slowest decay", f"{latest.get('timescale', np.nan):.4g} steps")
        table.add_row("forecast error", f"{latest.get('forecast_error', np.nan):.3g} (vs. weights staying put)")
        table.add_row("transition", f"{latest.get('transition', np.nan):.3g}  {sparkline(state.live.get('transition', []))}")
    return table


#: The page's figures: file, what it shows (its alt text).
PAGE_FIGURES = (("live.png", "loss and the live monitor's series"),
                ("spectrum.png", "the latest live fit's eigenvalues on the unit circle"),
                ("transitions.png", "W1 between every two live fits' spectra"))


def _write_page(state, folder: Path, interval: float, store: Path) -> None:
    """index.html (refreshing itself while the run writes) and its figures: the series, the latest fit's
    spectrum and the window-to-window matrix of the stored spectra; the folder replaced whole (staged beside
    it, with traj's marker, as every output directory)."""
    import html as html_escape

    from ..atomic import staged_output
    from ..live.watch import transition_matrix
    from ..plots.common import figure_png
    from ..plots.live import plot_live, plot_live_spectrum, plot_transition_matrix

    figures = {"live.png": plot_live(state), "spectrum.png": plot_live_spectrum(state),
               "transitions.png": plot_transition_matrix(transition_matrix(state))}
    latest = state.latest()
    rows = "".join(f"<tr><th>{html_escape.escape(k)}</th><td>{v:.6g}</td></tr>" for k, v in latest.items())
    images = "".join(f"<img src='{name}' alt='{html_escape.escape(alt)}'>" for name, alt in PAGE_FIGURES)
    page = (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"{'' if not state.writing else f'<meta http-equiv=refresh content={max(1, round(interval))}>'}"
            f"<title>traj watch</title></head><body><h1>{html_escape.escape(state.path)}</h1>"
            f"<p>{state.n_snapshots} snapshot(s){'' if state.writing else '; the run has ended'}</p>"
            f"<table>{rows}</table><div>{images}</div></body></html>")
    with staged_output(folder, inputs=[store], kind="watch") as staging:
        for name, figure in figures.items():
            (staging / name).write_bytes(figure_png(figure))
        (staging / "index.html").write_text(page, encoding="utf-8")
