"""A store at a glance: what ``traj info`` shows (layers, sizes, coverage, recipe, health)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .dtypes import storage_dtype
from .run_store import RunStore

__all__ = ["StoreInfo", "base_spacing", "describe", "spacing_problems"]


def base_spacing(steps: np.ndarray) -> int | None:
    """The spacing most snapshots have (the smallest, on a tie), in steps; None for fewer than two snapshots."""
    spacings = np.diff(np.asarray(steps, dtype=np.int64))
    if not spacings.size:
        return None
    values, counts = np.unique(spacings, return_counts=True)
    return int(values[np.argmax(counts)])  # np.unique sorts: argmax takes the smallest of the most common


def gaps_in(steps: np.ndarray) -> list[int]:
    """Indices ``i`` where snapshots ``i`` and ``i + 1`` lie further apart than most do (the spacing of more
    than half of them, :func:`base_spacing`): gaps. None without such a majority."""
    steps = np.asarray(steps, dtype=np.int64)
    base = base_spacing(steps)
    spacings = np.diff(steps)
    if base is None or 2 * int((spacings == base).sum()) <= spacings.size:
        return []
    return [int(i) for i in np.flatnonzero(spacings > base)]


def spacing_problems(steps: np.ndarray) -> list[str]:
    """``traj info``'s lines on the snapshots' spacing: each gap (a spacing wider than most), and other uneven
    spacings. A last snapshot closer to the one before than the rest (training ended between two snapshot
    steps, and the callbacks took a last one) is no problem."""
    steps = np.asarray(steps, dtype=np.int64)
    base = base_spacing(steps)
    if base is None:
        return []
    spacings = np.diff(steps)
    lines = []
    gaps = gaps_in(steps)
    if gaps:
        shown = ", ".join(f"{int(steps[i])} → {int(steps[i + 1])} (after snapshot {i})" for i in gaps[:5])
        more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        lines.append(
            f"{len(gaps)} gap(s) in the trajectory, steps {shown}{more}: snapshots are {base} step(s) apart "
            "elsewhere (a run resumed from a checkpoint later than the store's last snapshot); analyses that need "
            "evenly spaced snapshots (dmd, conjugacy) take a --window or --steps on one side of a gap"
        )
    other = [i for i in np.flatnonzero(spacings != base) if i not in gaps]
    if other and other[-1] == spacings.size - 1 and spacings[-1] < base and spacings.size > 1:
        other = other[:-1]  # the last snapshot, taken where training ended
    if other:
        i = int(other[0])
        lines.append(
            f"uneven spacing: {len(other)} spacing(s) differ from the most common one, {base} step(s), the first "
            f"steps {int(steps[i])} → {int(steps[i + 1])} (after snapshot {i}); analyses that need evenly spaced "
            "snapshots take a --window where they are evenly spaced"
        )
    return lines


@dataclass(frozen=True)
class StoreInfo:
    path: str
    format_version: int
    n_snapshots: int
    n_params: int
    dtype: str
    chunks: tuple[int, int]
    layers: list[dict[str, Any]]
    n_prunable: int
    steps: tuple[int, int] | None
    epochs: tuple[int, int] | None
    spacing: dict[str, Any]
    recipe: dict[str, Any] | None
    has_grads: bool
    series: list[str]
    bytes_on_disk: int
    bytes_raw: int
    created: str | None
    versions: dict[str, Any]
    closed_cleanly: bool
    writer_active: bool
    uncommitted_rows: int
    partial_files: int
    nonfinite_snapshots: list[int] | None = None
    health: list[str] = field(default_factory=list)
    expected_snapshots: int | None = None
    missing_snapshots: int = 0
    #: The dtypes the snapshots were rounded from when the store holds a narrower copy (a
    #: ``--dtype`` down-cast), else None.
    lossy_from: list[str] | None = None

    @property
    def compression_ratio(self) -> float | None:
        """Raw bytes over bytes on disk; None (n/a) for a store holding no snapshot."""
        return self.bytes_raw / self.bytes_on_disk if self.bytes_raw and self.bytes_on_disk else None

    @property
    def compression_text(self) -> str:
        ratio = self.compression_ratio
        if ratio is not None:
            return f"{ratio:.2f}x"
        return "n/a: no parameters" if self.n_snapshots and not self.n_params else "n/a: no snapshots"

    @property
    def healthy(self) -> bool:
        return not self.health

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["compression_ratio"] = self.compression_ratio
        out["healthy"] = self.healthy
        return out


def _how_to_continue(store: RunStore) -> str:
    """Advice a user can follow to continue an interrupted recording (or why they cannot)."""
    recipe = store.recipe
    if recipe is not None and recipe.get("name"):
        # traj record trains a recipe from scratch and keeps no optimizer state to resume from
        return ("`traj record` cannot resume a recipe run: record it again with --overwrite "
                "(or into a new --out) for the whole run")
    if not store.n_snapshots:
        return "nothing was recorded: record the run again"
    return (f"to continue the run from its last snapshot (step {int(store.steps[-1])}), open it with "
            "traj.Recorder(path, model, resume=True) holding the model in that state, or resume the "
            "training from a checkpoint with the Hugging Face / Lightning callback")


def describe(store: RunStore, *, scan: bool = True, progress: Callable[[int, int], None] | None = None,
             nonfinite_rows: np.ndarray | None = None) -> StoreInfo:
    """Summarise a store; ``scan`` reads every snapshot once to find NaN/Inf rows, unless a pass that
    read them already (the engine's layer norms) gives them as ``nonfinite_rows``."""
    nonfinite = None
    health: list[str] = []
    if scan and store.n_snapshots:
        rows = store.nonfinite_rows(progress=progress) if nonfinite_rows is None else np.asarray(nonfinite_rows)
        nonfinite = [int(r) for r in rows]
        if rows.size:
            health.append(
                f"{rows.size} snapshot(s) hold NaN/Inf, the first is snapshot {rows[0]} (step {store.steps[rows[0]]})"
            )
    uncommitted = store.capacity - store.n_snapshots
    writer_active = store.writer_active
    if store.missing_snapshots:  # damage, not an interruption: appending is refused, so never advise it
        health.append(
            f"damaged: {store.shortfall}; analyses and appends refuse this store (keep a copy; "
            "restore the lost chunk from a backup, or record the run again)"
        )
    elif (uncommitted or store.attrs.get("state") == "open") and not writer_active:
        past = f" ({uncommitted} row(s) past the last committed snapshot)" if uncommitted else ""
        health.append(
            f"the recording was interrupted: the store was never closed{past}; the committed snapshots are "
            f"intact and usable as they are; {_how_to_continue(store)}"
        )
    health += spacing_problems(store.steps)
    partial = sum(1 for _ in store.path.rglob("*.partial"))
    if partial:
        health.append(f"{partial} leftover temporary chunk file(s) from an interrupted write (harmless)")
    series = ["step", "epoch", "time"]
    if store.loss is not None:
        series.append("loss")
    series += [f"metrics/{m}" for m in store.metric_names]
    steps = (int(store.steps[0]), int(store.steps[-1])) if store.n_snapshots else None
    valid_epochs = store.epochs[store.epochs >= 0]
    epochs = (int(valid_epochs.min()), int(valid_epochs.max())) if valid_epochs.size else None
    layers = [
        {"name": e.name, "shape": list(e.shape), "size": e.size, "offset": e.offset, "prunable": e.prunable}
        for e in store.layout.entries
    ]
    raw = store.n_snapshots * store.n_params * storage_dtype(store.stored_dtype).itemsize * (2 if store.has_grads else 1)
    return StoreInfo(
        path=str(store.path),
        format_version=int(store.attrs["traj"]["version"]),
        n_snapshots=store.n_snapshots,
        n_params=store.n_params,
        dtype=store.stored_dtype,
        chunks=store.chunks,
        layers=layers,
        n_prunable=sum(e.size for e in store.layout.prunable_entries),
        steps=steps,
        epochs=epochs,
        spacing=store.spacing,
        recipe=store.recipe,
        has_grads=store.has_grads,
        series=series,
        bytes_on_disk=store.nbytes_stored(),
        bytes_raw=raw,
        created=store.attrs.get("created"),
        versions=store.attrs.get("versions") if isinstance(store.attrs.get("versions"), dict) else {},
        closed_cleanly=store.closed_cleanly,
        writer_active=writer_active,
        uncommitted_rows=uncommitted,
        partial_files=partial,
        nonfinite_snapshots=nonfinite,
        health=health,
        expected_snapshots=store.expected_snapshots,
        missing_snapshots=store.missing_snapshots,
        lossy_from=store.lossy_from,
    )
