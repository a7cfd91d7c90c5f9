"""``traj report``'s analyses: a run from every angle (info, dmd, cmd, prune, conjugacy) as one typed result.

Each analysis runs with defaults suited to an overview. One that does not apply to the run
(too few snapshots, no iteration-level snapshots for pruning, no peers for conjugacy) raises
:class:`~traj.errors.NotApplicableError` and its section is skipped with the reason; any other
error (a damaged chunk, a bad recipe) fails the overview. :mod:`traj.report` only renders the
:class:`Overview`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..engine import Engine
from ..errors import NotApplicableError
from ..progress import Progress, Stage
from ..store import RunStore
from ..store.info import StoreInfo, describe
from .cmd import CMDEvaluation, CMDResult, CMDRun, ModelComparison, cmd, compare_models
from .cmd import evaluate as evaluate_cmd
from .conjugacy import ConjugacyResult, conjugacy
from .dmd import DMDResult, DMDRun, dmd
from .evaluator import Trainer
from .prune import PruneResult, prune

__all__ = ["LayerNorms", "Overview", "layer_norms", "overview"]

T = TypeVar("T")


@dataclass(frozen=True)
class LayerNorms:
    """A run at a glance: the loss and each layer's weight norm per snapshot (one pass through the engine).

    Attributes
    ----------
    steps : ndarray of shape (T,)
    loss : ndarray of shape (T,), or None when the run recorded none
    names : tuple of str
        The layers, in the order of ``norms``' columns.
    norms : ndarray of shape (T, n_layers)
        ‖θ_layer(k)‖₂, accumulated in float64 (not finite where the snapshot is not).
    nonfinite_rows : ndarray of int
        Snapshots holding NaN or Inf, found by the same pass.
    metrics : mapping of name to ndarray of shape (T,)
        The other series the run logged (``eval_loss``, accuracy, ...; NaN where a snapshot has no value).
    """

    steps: np.ndarray
    loss: np.ndarray | None
    names: tuple[str, ...]
    norms: np.ndarray
    nonfinite_rows: np.ndarray
    metrics: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def relative_norms(self) -> np.ndarray:
        """‖θ_layer(k)‖ over its largest value in the run, shape (T, n_layers), in [0, 1] (0 for a layer that
        is zero throughout; NaN where a snapshot is not finite): layers of any size on one scale."""
        largest = np.where(np.isfinite(self.norms), self.norms, 0.0).max(axis=0, initial=0.0)
        return np.where(largest > 0, self.norms / np.where(largest > 0, largest, 1.0), 0.0)

    def to_dataframe(self) -> Any:
        """One row per snapshot, by step (pandas): the loss, every logged metric and each tensor's ‖θ‖₂."""
        from ..tables import dataframe

        columns: dict[str, Any] = {"step": self.steps}
        if self.loss is not None:
            columns["loss"] = self.loss
        columns.update(self.metrics)
        columns.update({f"norm {name}": self.norms[:, j] for j, name in enumerate(self.names)})
        return dataframe(columns, index="step")

    def to_dict(self) -> dict[str, Any]:
        """The first and last snapshot's norms, as ``summary.json`` shows them (None without snapshots)."""
        if not self.norms.shape[0]:
            return {"first": None, "last": None}
        return {"first": self.norms[0].tolist(), "last": self.norms[-1].tolist()}


def layer_norms(store: RunStore, *, engine: Engine | None = None, progress: Progress | None = None) -> LayerNorms:
    """Every layer's norm at every snapshot, and the non-finite snapshots, in one pass over the store."""
    engine = engine or Engine()
    entries = [e for e in store.layout.entries if e.size]
    norms = np.zeros((store.n_snapshots, len(store.layout.entries)))
    nonfinite = np.zeros(0, dtype=np.int64)
    if store.n_snapshots and entries:
        rows = engine.row_norms(store, groups={e.name: [e.columns] for e in entries}, progress=progress)
        columns = [j for j, e in enumerate(store.layout.entries) if e.size]
        norms[:, columns] = rows.norms
        nonfinite = rows.nonfinite_rows
    metrics = {name: store.metric(name) for name in store.metric_names}
    return LayerNorms(store.steps, store.loss, tuple(store.layout.names), norms, nonfinite, metrics)


@dataclass(frozen=True)
class Overview:
    """What ``traj report`` shows: the store's summary and every analysis that applied (None where skipped).

    ``skipped`` maps a section (dmd, cmd, cmd evaluation, prune, conjugacy) to why it did not apply.
    """

    store: str
    info: StoreInfo
    history: LayerNorms
    dmd: DMDResult | None
    cmd: CMDResult | None
    prune: PruneResult | None
    conjugacy: ConjugacyResult | None
    skipped: dict[str, str]
    seconds: float
    models: ModelComparison | None = None
    cmd_evaluation: CMDEvaluation | None = None

    @property
    def cmd_run(self) -> CMDRun | None:
        """The CMD fit with its evaluation beside it (None where CMD was skipped)."""
        return CMDRun(self.cmd, self.cmd_evaluation) if self.cmd is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "info": self.info.to_dict(),
            "dmd": DMDRun(self.dmd).to_dict() if self.dmd else None,
            "cmd": self.cmd_run.to_dict() if self.cmd_run else None,
            "prune": self.prune.to_dict() if self.prune else None,
            "conjugacy": self.conjugacy.to_dict() if self.conjugacy else None,
            "models": self.models.to_dict() if self.models else None,
            "skipped": self.skipped,
            "seconds": self.seconds,
        }


def overview(
    store: RunStore,
    *,
    peers: Sequence[RunStore] = (),
    null: Sequence[RunStore] = (),
    engine: Engine | None = None,
    modes: int = 5,
    evaluate: bool = True,
    recipe: Trainer | None = None,
    stage: Stage | None = None,
    progress: Progress | None = None,
) -> Overview:
    """Run every analysis that applies to ``store`` with the overview's defaults.

    Parameters
    ----------
    peers : runs to compare with ``store`` by conjugacy (none: the section is skipped).
    null : runs of ``store``'s configuration from other seeds, the conjugacy verdicts' seed null (none: the
        section gives distances and no verdict).
    modes : CMD modes (at most a quarter of the weights).
    evaluate : score CMD and pruned weights with ``recipe``.
    recipe : what scores them (a :class:`~traj.recipes.base.Recipe` or any :class:`Trainer`); the caller resolves
        it (``traj report`` takes ``--recipe`` or the store's own). None: nothing is scored.
    stage : called with each analysis' name as it starts.
    progress : ``progress(done, total)`` within each analysis: the blocks of its passes, the recipe's evaluations.
    """
    t0 = time.perf_counter()
    engine = engine or Engine()
    say = stage or (lambda _: None)
    skipped: dict[str, str] = {}
    if not evaluate:
        recipe = None

    def section(name: str, work: Callable[[], T]) -> T | None:
        say(name)
        try:
            return work()
        except NotApplicableError as exc:  # only this: a damaged chunk or a bad recipe fails the overview
            skipped[name] = str(exc)
            return None

    say("info")
    history = layer_norms(store, engine=engine, progress=progress)  # also finds the non-finite snapshots: one pass for both
    info = describe(store, nonfinite_rows=history.nonfinite_rows)
    dmd_result = section("dmd", lambda: dmd(store, rank="auto", forecast=10, engine=engine, progress=progress))
    # CMD's per-weight model goes to scratch where the recipe scores it, else it is not kept: nothing of N in memory
    with tempfile.TemporaryDirectory(prefix="traj-report-") as scratch:
        model_out = Path(scratch) / "cmd.zarr" if recipe is not None else None
        cmd_result = section("cmd", lambda: _cmd(store, modes, engine, model_out, progress))
        evaluation = None
        if cmd_result is not None and recipe is not None:
            evaluation = section("cmd evaluation", lambda: evaluate_cmd(cmd_result, store, recipe, max_points=12,
                                                                          engine=engine, progress=progress))
            models = section("models", lambda: _models(store, recipe, cmd_result, engine, progress))
        else:
            models = None
        if cmd_result is not None:  # the scratch model goes with the directory
            cmd_result = replace(cmd_result, model=replace(cmd_result.model, labels=None, a=None, b=None))
    prune_result = section("prune", lambda: _prune(store, recipe, engine, progress))
    conj_result = section("conjugacy", lambda: _conjugacy(store, peers, null, engine, progress))
    return Overview(str(store.path), info, history, dmd_result, cmd_result, prune_result, conj_result, skipped,
                    time.perf_counter() - t0, models, evaluation)


def _models(store: RunStore, recipe: Trainer, fitted: CMDResult, engine: Engine,
            progress: Progress | None = None) -> ModelComparison:
    """DMD at a few ranks beside CMD at 2 and at the overview's M, scored at the same 12 snapshots (Turjeman et al. 2022 fig. 1)."""
    modes = sorted({min(2, fitted.modes), fitted.modes})
    return compare_models(store, recipe, ranks=(5, 10, 20), modes=modes, max_points=12,
                          samples=min(1000, store.n_params), engine=engine, progress=progress)


def _cmd(store: RunStore, modes: int, engine: Engine, out: Path | None, progress: Progress | None = None) -> CMDResult:
    if store.n_params < 2:
        raise NotApplicableError(f"CMD correlates weights: the run has {'only one' if store.n_params else 'none'}")
    return cmd(store, modes=min(modes, max(1, store.n_params // 4)), samples=min(1000, store.n_params), out=out,
               keep_model=False, engine=engine, progress=progress)


def _prune(store: RunStore, recipe: Trainer | None, engine: Engine, progress: Progress | None = None) -> PruneResult:
    if not store.layout.prunable_entries:
        raise NotApplicableError("no prunable weights (linear/conv layers) in this run")
    # whether the run has enough iteration-level snapshots per epoch is prune's rule (epoch_rows), not repeated here
    if not (store.epochs >= 0).any():
        raise NotApplicableError("the overview prunes the last epoch and this run records no epochs "
                                 "(traj prune STORE --window A:B prunes a window of snapshots)")
    return prune(store, methods=["kmp", "gmp", "lsp"], compressions=[2, 4, 8, 16], seeds=1, recipe=recipe,
                 evaluate=recipe is not None, engine=engine, progress=progress)


def _conjugacy(store: RunStore, peers: Sequence[RunStore], null: Sequence[RunStore],
               engine: Engine, progress: Progress | None = None) -> ConjugacyResult:
    if not peers:
        raise NotApplicableError("no peers given (traj report STORE --peers OTHER.zarr ...)")
    return conjugacy([store, *peers], null=null, engine=engine, progress=progress)
