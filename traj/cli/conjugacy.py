"""``traj conjugacy``: are two training runs the same dynamics?"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..analysis.conjugacy.params import ConjugacyParams
from ..options import cli_option

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis.conjugacy import ConjugacyResult

from ._common import (
    BackendOption,
    BlockOption,
    DeviceOption,
    LogToOption,
    SchedulerOption,
    Stages,
    StepsOption,
    engine_options,
    err_console,
    fail,
    flag_names,
    given_options,
    handle_errors,
    int_or_keyword,
    number_list,
    open_selected,
    out_console,
    output_dir,
    print_json,
    progress_bar,
    report_tracker,
    selection_note,
)


def conjugacy(
    ctx: typer.Context,
    stores: Annotated[list[Path], typer.Argument(help="Two or more run stores (or one with --windows).")],
    window: Annotated[str | None, cli_option(ConjugacyParams, "window")] = ConjugacyParams.window,
    steps: StepsOption = None,
    stride: Annotated[str, typer.Option(help="Every k-th snapshot (of those --steps keeps), before --window: one k "
                                             "for every store, or k1,k2,... one per store (the runs, then --null), "
                                             "to compare runs recorded at different spacings.")] = "1",
    observable: Annotated[str, cli_option(ConjugacyParams, "observable")] = ConjugacyParams.observable,
    layer: Annotated[str | None, cli_option(ConjugacyParams, "layer")] = ConjugacyParams.layer,
    center: Annotated[bool, cli_option(ConjugacyParams, "center", "--center/--no-center")] = ConjugacyParams.center,
    rank: Annotated[str, cli_option(ConjugacyParams, "rank")] = ConjugacyParams.rank,
    k: Annotated[int, cli_option(ConjugacyParams, "k")] = ConjugacyParams.k,
    null: Annotated[str | None, typer.Option(help="Comma-separated stores differing from the first only in seed.")] = None,
    null_size: Annotated[int, cli_option(ConjugacyParams, "null_size")] = ConjugacyParams.null_size,
    null_strength: Annotated[float, cli_option(ConjugacyParams, "null_strength")] = ConjugacyParams.null_strength,
    null_seed: Annotated[int, cli_option(ConjugacyParams, "null_seed")] = ConjugacyParams.null_seed,
    rule: Annotated[str, cli_option(ConjugacyParams, "rule")] = ConjugacyParams.rule,
    quantile: Annotated[float, cli_option(ConjugacyParams, "quantile")] = ConjugacyParams.quantile,
    margin: Annotated[float, cli_option(ConjugacyParams, "margin")] = ConjugacyParams.margin,
    windows: Annotated[int | None, cli_option(ConjugacyParams, "windows")] = ConjugacyParams.windows,
    delays: Annotated[int | None, cli_option(ConjugacyParams, "delays")] = ConjugacyParams.delays,
    stack: Annotated[int | None, cli_option(ConjugacyParams, "stack")] = ConjugacyParams.stack,
    fail_on_nonconjugate: Annotated[bool, typer.Option("--fail-on-nonconjugate", help="Exit 1 when a pair is non-conjugate.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/conjugacy).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    log_to: LogToOption = None,
    backend: BackendOption = "numpy",
    device: DeviceOption = "cpu",
    scheduler: SchedulerOption = "threads",
    block_mb: BlockOption = 64.0,
) -> None:
    """Compare the Koopman spectra of runs by Wasserstein distance, with verdicts against a seed null and a
    reparametrisation null (the first run and its seed-null runs seen through smooth coordinate maps).

    Examples:

        traj conjugacy sample_data/mirror-omd.zarr sample_data/mirror-ogd.zarr sample_data/mirror-bisection.zarr --null sample_data/mirror-omd-seed1.zarr

        traj conjugacy new.zarr baseline.zarr --null seed1.zarr,seed2.zarr --fail-on-nonconjugate

        traj conjugacy omd.zarr ogd.zarr bisection.zarr --stack 25 --delays 4 --rank 10

        traj conjugacy h40.zarr h5.zarr --null h40-seed1.zarr,h40-seed2.zarr --observable pca:10

        traj conjugacy free.zarr constrained.zarr --observable pca:10 --stack 10 --delays 32

        traj conjugacy run.zarr --windows 8
    """
    with handle_errors(ctx), flag_names("window", "observable", "center", "layer", "rank", "k", "rule", "quantile", "margin", "windows", "null",
                                        "delays", "stack", "null_size", "null_strength", "null_seed"):
        from ..analysis.conjugacy import fit_conjugacy
        from ..display import markup as m
        from ..report.conjugacy import conjugacy_report

        params = ConjugacyParams(window=window, observable=observable, layer=layer, center=center,
                                 rank=int_or_keyword("--rank", rank, "k", "auto"), k=k, null_size=null_size,
                                 null_strength=null_strength, null_seed=null_seed, rule=rule, quantile=quantile,
                                 margin=margin, windows=windows, delays=delays, stack=stack)
        if len(stores) < 2 and not windows:
            raise fail("one run given: give two or more runs to compare, or --windows W to compare W windows of one run")
        engine = engine_options(backend, device, scheduler, block_mb)
        null_paths = [Path(p.strip()) for p in (null or "").split(",") if p.strip()]
        strides = number_list("--stride", stride, int)
        if len(strides) not in (1, len(stores) + len(null_paths)):
            raise fail(f"--stride takes one k or one per store ({len(stores) + len(null_paths)}: the runs, then "
                       f"--null), got {len(strides)}")
        strides = strides * (len(stores) + len(null_paths)) if len(strides) == 1 else strides
        opened = [open_selected(p, steps, k) for p, k in zip([*stores, *null_paths], strides, strict=True)]
        runs, null_runs = opened[: len(stores)], opened[len(stores) :]
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, "conjugacy", *runs, *null_runs)
        with progress_bar() as bar:
            line = Stages(bar, "spectra")
            result = fit_conjugacy(runs, params, null=null_runs, engine=engine, progress=line.progress)
            line.stage("writing the report")
            conjugacy_report(result, target, inputs=[r.path for r in runs + null_runs])
        if tracker is not None:
            tracker.log("conjugacy", result.to_dict(), target)
        if json_:
            summary = result.to_dict()
            if any(r.selections for r in opened):
                summary["selection"] = {str(r.path): [s.to_dict() for s in r.selections] for r in opened}
            print_json(summary)
        else:
            for r in opened:
                if r.selections:
                    out_console.print(f"{m(r.path.name)}{m(selection_note(r))}", highlight=False)
            _show(result, quantile, given_options(ctx, "k", "rank", "rule"))
            err_console.print(f"[green]report[/green] {m(target)}/report.html")
        if fail_on_nonconjugate and result.any_nonconjugate:
            raise typer.Exit(1)


def _show(result: ConjugacyResult, quantile: float, given: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """The verdicts, the window matrix and the thresholds on stdout (store names escaped: data, not markup).

    How k was chosen is one short line of information; a reduction of an explicit ``--k`` or
    ``--rank N`` (``given``: the options the user typed) is one yellow warning line on stderr.
    The report and the JSON keep the full reasons (``k_note``, ``rank_notes``).
    """
    from ..analysis.conjugacy import verdict_label
    from ..display import markup as m

    standardised = result.rule == "reproducible"
    for v in result.verdicts:
        colour = {"conjugate": "green", "non-conjugate": "red"}.get(v.verdict, "yellow")
        ratio = "" if (q := result.ratio(v)) is None else f" ({q:.3g} x threshold)"
        score = f", standardised {v.score:.4g}" if standardised else ""
        verdict = verdict_label(v)
        out_console.print(f"{m(Path(v.a).name)} vs {m(Path(v.b).name)}: W1 = {v.distance:.4g}{score}{ratio} "
                          f"[{colour}]{verdict}[/{colour}]")
    if result.verdicts:
        out_console.print(f"  {m(_k_line(result))}")
    if standardised:
        out_console.print("  rule reproducible: each run against the first run and its seed runs, in units of each "
                          "eigenvalue's spread")
    elif not result.null_runs and result.verdicts:
        out_console.print("  no seed null: distances and the reparametrisation null's bound only, no verdict "
                          "(seed runs of one configuration lie further apart than that bound); give --null "
                          "SEED_RUN,... (the first run's configuration from other seeds)")
    elif result.verdicts:
        out_console.print("  rule plain: W1 of the eigenvalues beside the nulls' bounds, no verdict (W1 over every "
                          "compared eigenvalue cannot tell grokking from norm-constrained dynamics); the default "
                          "--rule reproducible gives one")
    if result.null_threshold is not None:
        what = (f"bound for one more run of a family of {1 + len(result.null_runs)}" if standardised
                else f"of {len(result.null_distances)} seed distance(s)")
        out_console.print(f"  seed null ({100 * quantile:g} % {what}): {result.null_threshold:.4g}")
    if (rep := result.reparam) is not None and rep.threshold is not None:
        out_console.print(f"  reparametrisation null ({100 * quantile:g} % of {rep.size} maps bending each coordinate "
                          f"by up to {100 * rep.strength:g} % of its half-range{', conformal' if standardised else ''}): "
                          f"{rep.threshold:.4g}")
    if result.margin:
        out_console.print(f"  equivalence margin: {result.margin:.4g}{' (W1; a pair within it is conjugate)' if standardised else ''}")
    if result.threshold is not None:
        out_console.print(f"  threshold {result.threshold:.4g}, set by the {result.basis}")
    if (w := result.windows) is not None:
        out_console.print(f"{m(Path(w.run).name)}: W1 between {len(w.bounds)} windows (k = {w.k})")
        for (a, b), row in zip(w.steps, w.distance, strict=True):
            out_console.print(f"  steps {a:>6}-{b:<6} " + " ".join(f"{v:7.4f}" for v in row))
    if warning := _reduced_warning(result, given):
        err_console.print(f"[yellow]reduced: {m(warning)}[/yellow]")
    if result.null_note and result.null_note.startswith("the seed-null runs have"):
        err_console.print("[yellow]seed null: the seed runs have the first run's eigenvalues exactly (no spread), so "
                          "every difference counts: use --null-size or runs from other seeds[/yellow]")
    elif result.null_note:
        err_console.print("[yellow]seed null: one run, so each eigenvalue's spread rests on two runs and the bound is "
                          "wide: give more --null runs[/yellow]")
    if result.rule_note and "rule" in given:
        err_console.print("[yellow]rule: --rule reproducible needs a seed null (--null): rule plain used[/yellow]")


def _k_line(result: ConjugacyResult) -> str:
    """One short line: how many eigenvalues were compared per run, and what chose that number."""
    c = result.k_choice
    line = f"{result.k} eigenvalue(s) compared per run"
    if c is None:
        return line
    why = []
    if c.resolved < c.asked and c.limiting_run is not None:
        why.append(f"{Path(c.limiting_run).name} resolves only {c.resolved} direction(s)" if c.limit == "resolves"
                   else f"rank {c.resolved}")
    if c.reproducible is not None:
        why.append(f"{c.reproducible} of {c.resolved} reproduced by every seed-null run")
    return f"{line} (k {c.asked}: {'; '.join(why)})" if why else line


def _reduced_warning(result: ConjugacyResult, given: set[str]) -> str | None:
    """What the user asked for explicitly (``--k``, ``--rank N``) and did not get, in one short sentence."""
    c = result.k_choice
    if c is None:
        return None
    parts = []
    if "rank" in given and isinstance(result.rank, int) and c.resolved < result.rank:
        parts.append(f"--rank {result.rank} asked for, runs fitted at rank {result.k}")
    elif "k" in given and result.k < c.asked:
        parts.append(f"--k {c.asked} asked for, {result.k} compared")
    if not parts:
        return None
    return "; ".join(parts) + " (the report says why)"
