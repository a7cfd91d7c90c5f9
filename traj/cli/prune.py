"""``traj prune``: Koopman pruning beside magnitude, gradient and random baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis.prune import PruneParams
from ..options import cli_option
from ._common import (
    BackendOption,
    BlockOption,
    DeviceOption,
    LogToOption,
    SchedulerOption,
    Stages,
    StepsOption,
    StrideOption,
    engine_options,
    err_console,
    flag_names,
    handle_errors,
    number_list,
    open_selected,
    out_console,
    output_dir,
    parse_rank,
    print_json,
    progress_bar,
    report_tracker,
    selection_note,
)


def prune(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store with at least 3 snapshots in the epoch pruned (every step, or every k steps of a long epoch).")],
    epoch: Annotated[int | None, cli_option(PruneParams, "epoch")] = PruneParams.epoch,
    window: Annotated[str | None, cli_option(PruneParams, "window")] = PruneParams.window,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    method: Annotated[str, cli_option(PruneParams, "methods")] = ",".join(PruneParams.methods),
    compression: Annotated[str, cli_option(PruneParams, "compressions")] = ",".join(f"{c:g}" for c in PruneParams.compressions),
    scope: Annotated[str, cli_option(PruneParams, "scope")] = PruneParams.scope,
    refine_epochs: Annotated[int, cli_option(PruneParams, "refine_epochs")] = PruneParams.refine_epochs,
    seeds: Annotated[int, cli_option(PruneParams, "seeds")] = PruneParams.seeds,
    epochs: Annotated[str | None, cli_option(PruneParams, "epochs")] = None,
    rank: Annotated[str, cli_option(PruneParams, "rank")] = PruneParams.rank,
    evaluate: Annotated[bool, cli_option(PruneParams, "evaluate", "--evaluate/--no-evaluate")] = PruneParams.evaluate,
    recipe_spec: Annotated[str | None, typer.Option("--recipe", help="Recipe for evaluation: a built-in name or module:function.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/prune-STORE).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    log_to: LogToOption = None,
    export: Annotated[bool, typer.Option("--export", help="Also write each pruned state_dict to OUT/export/<method>-c<c>.safetensors.")] = False,
    backend: BackendOption = "numpy",
    device: DeviceOption = "cpu",
    scheduler: SchedulerOption = "threads",
    block_mb: BlockOption = 64.0,
) -> None:
    """Prune by Koopman magnitude (KMP) and Koopman gradient (KGP) beside global magnitude (GMP),
    gradient (JGP, GGP) and layer-shuffle (LSP) pruning; masks go to OUT/masks.zarr, and with
    --export the pruned weights to OUT/export/<method>-c<c>.safetensors (load them with
    safetensors.torch.load_model(model, path), which also fills tied weights such as GPT-2's
    lm_head.weight, or put a mask on your own model
    with traj.apply_masks(model, "OUT/masks.zarr", method="kmp", compression=8)).

    Examples:

        traj prune sample_data/digits-cnn.zarr

        traj prune run.zarr --epoch 3 --method kmp,gmp --compression 2,8,32 --seeds 1 --json

        traj prune run.zarr --method kmp,gmp --epochs 0,1,2,3,4 --no-evaluate

        traj prune run.zarr --method kmp,gmp --compression 8 --export
    """
    with handle_errors(ctx), flag_names("epoch", "window", "scope", "refine_epochs", "seeds", "epochs", "rank",
                                        methods="--method", compressions="--compression"):
        from ..analysis.masks import write_exports, write_masks
        from ..analysis.prune import fit_prune
        from ..display import markup as m
        from ..recipes import resolve_recipe
        from ..report.prune import prune_report

        params = PruneParams(
            epoch=epoch, window=window, methods=tuple(name.strip() for name in method.split(",") if name.strip()),
            compressions=number_list("--compression", compression, float), scope=scope,  # type: ignore[arg-type]
            refine_epochs=refine_epochs, seeds=seeds, evaluate=evaluate,
            epochs=number_list("--epochs", epochs, int) if epochs is not None else (), rank=parse_rank(rank, "all"))
        engine = engine_options(backend, device, scheduler, block_mb)
        opened = open_selected(store, steps, stride)
        chosen_recipe = resolve_recipe(recipe_spec, opened) if evaluate else None
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, f"prune-{opened.path.name.removesuffix('.zarr')}", opened)
        with progress_bar() as bar:
            line = Stages(bar, "pruning")
            # N-long scratch (scores, masks) beside the output, not in a possibly small /tmp
            scratch = target.parent if target.parent.is_dir() else None
            result = fit_prune(opened, params, recipe=chosen_recipe, engine=engine, scratch=scratch,
                               progress=line.progress)

            def extra(staging: Path) -> None:
                line.stage("writing masks")
                write_masks(result, staging / "masks.zarr", opened.layout)
                if export:
                    line.stage("writing the pruned state_dicts")
                    write_exports(result, opened, staging / "export")
                line.stage("writing the report")

            line.stage("writing the report")
            prune_report(result, target, extra=extra, inputs=[opened.path])
        summary = result.to_dict()
        summary["masks"] = str(target / "masks.zarr")
        if opened.selections:
            summary["selection"] = [s.to_dict() for s in opened.selections]
        if export:
            summary["export"] = str(target / "export")
        if tracker is not None:
            tracker.log("prune", summary, target)
        if json_:
            print_json(summary)
            return
        out_console.print(
            f"[bold]{m(opened.path.name)}[/bold]{m(selection_note(opened))} {('epoch ' + str(result.epoch)) if result.epoch is not None else 'window'}: "
            f"λ1 = {result.lambda1.real:.5f}{result.lambda1.imag:+.5f}i, {len(result.kgp_modes)} KGP mode(s), "
            f"{result.n_prunable} prunable weights"
        )
        if ("kmp", "gmp") in result.overlap:
            values = ", ".join(f"{v:.3f}" for v in result.overlap["kmp", "gmp"])
            out_console.print(f"  KMP-GMP overlap at c = {m(compression)}: {values}")
        for skipped, reason in result.unavailable.items():
            err_console.print(f"[yellow]{m(skipped.upper())} skipped: {m(reason)}[/yellow]")
        if evaluate and result.accuracy is None:
            err_console.print("[yellow]no recipe in this store: accuracy not evaluated[/yellow]")
        if export:
            err_console.print(f"[green]pruned state_dicts[/green] {m(target)}/export/<method>-c<c>.safetensors "
                              "(load with safetensors.torch.load_model(model, path))")
        err_console.print(f"[green]report[/green] {m(target)}/report.html")
