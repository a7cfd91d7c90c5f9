"""Which layout a source has, and the checked list of snapshots it holds.

A source is one checkpoint (a file, a Hugging Face checkpoint or model folder, a DCP
directory) or a folder of them. In a folder, every checkpoint must be of one kind: model
folders (``checkpoint-N/``), DCP directories, ``torch.save`` files or ``.safetensors`` files;
a second kind is refused with one line naming its first entry, before anything is written.
Files a Trainer writes beside the weights (optimizer, scheduler, RNG states, training
arguments) are never opened.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ...errors import ImportSourceError
from ...prunable import prunable_names
from ...store import Layout
from ...store.dtypes import default_dtype
from ...store.run_store import MAX_METRICS
from ...store.writer import metric_name_problem, shown_metric_name
from .base import STEP_KEYS, Snapshot, TensorSpec, check_counter
from .dcp import LIGHTNING_META, dcp_snapshot, is_dcp_dir
from .files import check_regular_file
from .huggingface import CHECKPOINT_DIR, MODEL_FILES, model_file, model_folder_snapshot, never_opened
from .safetensors_files import safetensors_snapshot
from .torch_files import TORCH_SUFFIXES, torch_file_snapshot

__all__ = ["SourceScan", "scan_source", "KINDS", "CHECKPOINT_SUFFIXES", "BUFFER_SUFFIXES"]

CHECKPOINT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
#: state_dict entries that are running statistics, not trained parameters
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")

#: what each kind of source is called in messages
KINDS = {
    "hf-trainer": "Hugging Face Trainer output",
    "hf-folders": "folders of model weights",
    "hf-model": "one Hugging Face checkpoint/model folder",
    "dcp": "torch.distributed.checkpoint (DCP) directories",
    "lightning-sharded": "Lightning sharded checkpoints (DCP directories)",
    "lightning": "Lightning .ckpt checkpoints",
    "torch": "torch.save state_dict files",
    "safetensors": "safetensors files",
}


@dataclass(frozen=True)
class SourceScan:
    """What :func:`scan_source` found: the snapshots in step order and the layout they share."""

    path: Path
    kind: str
    description: str
    snapshots: tuple[Snapshot, ...]
    layout: Layout
    #: the default store dtype: the tensors' own when they share one, float64 when any is, else float32
    dtype: str
    #: lines about what was deliberately left out (files never opened, duplicates dropped)
    notes: tuple[str, ...] = ()


def _span(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{labels[0]} … {labels[-1]}"


def _one_file(path: Path) -> tuple[str, list[Snapshot]]:
    if path.suffix == ".safetensors":
        return "safetensors", [safetensors_snapshot(path)]
    if path.suffix in TORCH_SUFFIXES:
        snap = torch_file_snapshot(path)
        return ("lightning" if path.suffix == ".ckpt" else "torch"), [snap]
    raise ImportSourceError(
        f"{path}: expected a checkpoint folder, a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}) or a .npy of shape (T, N)"
    )


def _folder(path: Path) -> tuple[str, list[Snapshot], list[str]]:
    """Classify a folder of checkpoints; returns (kind, snapshots, notes)."""
    entries = sorted(path.iterdir(), key=lambda p: p.name)
    groups: dict[str, list[Path]] = {"model folders": [], "DCP directories": [], "torch.save files": [],
                                     "safetensors files": []}
    skipped: list[str] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if is_dcp_dir(entry):
                groups["DCP directories"].append(entry)
            elif model_file(entry) is not None or CHECKPOINT_DIR.match(entry.name):
                groups["model folders"].append(entry)
        elif never_opened(entry.name):
            skipped.append(entry.name)
        elif entry.suffix == ".safetensors":
            groups["safetensors files"].append(entry)
        elif entry.suffix in TORCH_SUFFIXES:
            groups["torch.save files"].append(entry)
    notes = []
    if groups["model folders"]:
        # a Trainer's final save_model() beside its checkpoints: with load_best_model_at_end it holds the
        # best checkpoint's weights, not the last step's, so it is not imported under any step
        final = [e for e in groups["safetensors files"] + groups["torch.save files"]
                 if e.name in MODEL_FILES or e.name.startswith(("model-", "pytorch_model-"))]
        for group in ("safetensors files", "torch.save files"):
            groups[group] = [e for e in groups[group] if e not in final]
        if final:
            notes.append(f"not imported: {', '.join(e.name for e in final)} beside the checkpoint folders (the model "
                         "saved at the end may be the best checkpoint's weights, not the last step's)")
    if skipped:
        notes.append(f"never opened: {', '.join(skipped)}")
    present = {name: members for name, members in groups.items() if members}
    if not present:
        raise ImportSourceError(
            f"{path}: no checkpoints found (looked for checkpoint-N/ or model folders, DCP directories with "
            f".metadata, and {', '.join(CHECKPOINT_SUFFIXES)} files)"
        )
    # the kind most entries have; the first entry of any other kind is the offending one
    position = {e: i for i, e in enumerate(entries)}
    main = max(present, key=lambda name: (len(present[name]), -position[present[name][0]]))
    others = [e for name, members in present.items() if name != main for e in members]
    if others:
        first = min(others, key=position.__getitem__)
        raise ImportSourceError(
            f"{path}: mixed checkpoint layouts: {first.name} is not one of the {len(present[main])} {main} "
            f"({present[main][0].name}, ...); import one kind per folder"
        )
    members = present[main]
    if main == "model folders":
        snapshots = [model_folder_snapshot(m) for m in members]
        kind = "hf-trainer" if all(CHECKPOINT_DIR.match(m.name) for m in members) else "hf-folders"
        inner = sorted({m.name for m in members for m in [model_file(m)] if m is not None})
        if inner:
            notes.insert(0, f"weights from {', '.join(inner)} in each folder; steps and logs from trainer_state.json "
                            "where present")
        trainer_files = sorted({f.name for m in members for f in m.iterdir() if f.is_file() and never_opened(f.name)})
        if trainer_files:
            notes.append(f"never opened: {', '.join(trainer_files)} in each folder")
    elif main == "DCP directories":
        snapshots = [dcp_snapshot(m) for m in members]
        kind = "lightning-sharded" if all((m / LIGHTNING_META).is_file() for m in members) else "dcp"
    elif main == "safetensors files":
        snapshots = [safetensors_snapshot(m) for m in members]
        kind = "safetensors"
    else:
        snapshots = [torch_file_snapshot(m) for m in members]
        kind = "lightning" if all(m.suffix == ".ckpt" for m in members) else "torch"
    return kind, snapshots, notes


_VERSION = re.compile(r"-v(\d+)\.ckpt$")


def _newest(a: Snapshot, b: Snapshot, folder: Path) -> tuple[Snapshot, Snapshot]:
    """Of two Lightning checkpoints of one step, (the newer, the older): by modification time, then by
    ModelCheckpoint's version suffix (``-v1`` is written when the name is taken: by a resumed fit)."""
    def age(snap: Snapshot) -> tuple[int, int]:
        version = _VERSION.search(snap.label)
        return (folder / snap.label).stat().st_mtime_ns, int(version.group(1)) if version else 0

    return (a, b) if age(a) > age(b) else (b, a)


def _ordered(snapshots: list[Snapshot], notes: list[str], *, single: bool, kind: str = "",
             folder: Path | None = None) -> list[Snapshot]:
    if single and snapshots[0].step is None:  # one checkpoint given on its own: step 0 when it names none
        only = snapshots[0]
        check_counter(only.epoch, "the epoch", only.label, low=-1)
        return [Snapshot(only.reader, only.label, 0, only.epoch, only.loss, only.metrics, step_from="default")]
    for snap in snapshots:
        if snap.step is None:
            raise ImportSourceError(f"{snap.label}: no step in the file (keys {', '.join(STEP_KEYS)}) or in its name")
        if snap.step < 0:
            raise ImportSourceError(f"{snap.label}: negative step {snap.step}")
        where = "its name" if snap.step_from == "name" else snap.step_from
        check_counter(snap.step, f"the step (from {where})", snap.label)
        check_counter(snap.epoch, "the epoch", snap.label, low=-1)
    ordered = sorted(snapshots, key=lambda s: (s.step, s.label))
    kept: list[Snapshot] = []
    older: list[tuple[Snapshot, Snapshot]] = []  # (kept, left out) of one step
    for snap in ordered:
        if kept and kept[-1].step == snap.step:
            # Lightning's last.ckpt repeats the newest checkpoint's step: keep the named one
            last = [s for s in (kept[-1], snap) if fnmatch.fnmatchcase(s.label, "last*.ckpt")]
            if len(last) == 1:
                notes.append(f"not imported: {last[0].label} (the same step as the checkpoint beside it)")
                if last[0] is kept[-1]:
                    kept[-1] = snap
                continue
            if kind == "lightning" and folder is not None and not last:
                # a fit resumed from a checkpoint saves the steps after it again (epoch=2-step=135-v1.ckpt)
                newer, old = _newest(kept[-1], snap, folder)
                older = [(newer if k is old else k, o) for k, o in older] + [(newer, old)]
                kept[-1] = newer
                continue
            raise ImportSourceError(f"two checkpoints have step {snap.step}: {kept[-1].label}, {snap.label}")
        kept.append(snap)
    if older:
        shown = ", ".join(f"{k.label} (not {o.label})" for k, o in older[:4])
        more = f" and {len(older) - 4} more" if len(older) > 4 else ""
        notes.append(f"{len(older)} step(s) saved twice (a fit resumed from an earlier checkpoint saves its steps "
                     f"again): imported the newest file of each, by modification time: {shown}{more}")
    return kept


def _with_metrics_a_store_holds(snapshots: list[Snapshot], notes: list[str]) -> list[Snapshot]:
    """Check every logged metric name; keep the first :data:`MAX_METRICS` names (in the order logged).

    A store with more metrics than its reader opens (one array each, read when the store
    opens) would be written in minutes and then refused by every command; a Trainer that logs
    per-class metrics of a 1000-class model is not rare. The values of the names past the
    limit are left out, and a note says so.
    """
    kept: dict[str, None] = {}
    dropped: dict[str, None] = {}
    for snap in snapshots:
        for name in snap.metrics:
            if name in kept or name in dropped:
                continue
            problem = metric_name_problem(name)
            if problem is not None:
                raise ImportSourceError(f"{snap.label}: the logged metric name {shown_metric_name(name)} {problem}")
            (kept if len(kept) < MAX_METRICS else dropped)[name] = None
    if not dropped:
        return snapshots
    first = ", ".join(shown_metric_name(n) for n in list(dropped)[:3])
    notes.append(f"not imported: {len(dropped)} logged metric(s) past the first {MAX_METRICS} a store holds ({first}, ...)")
    return [dataclasses.replace(s, metrics={k: v for k, v in s.metrics.items() if k in kept}) for s in snapshots]


def _selected(specs: list[TensorSpec], exclude: Iterable[str]) -> list[TensorSpec]:
    patterns = list(exclude)
    return [s for s in specs if not s.name.endswith(BUFFER_SUFFIXES)
            and not any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def _check_same(snapshots: list[Snapshot], exclude: Iterable[str]) -> list[TensorSpec]:
    reference = _selected(snapshots[0].reader.specs(), exclude)
    first = snapshots[0].label
    if not reference:
        raise ImportSourceError(f"{first}: no floating-point tensors to record")
    if not sum(s.numel for s in reference):  # N = 0: every analysis would divide by it
        raise ImportSourceError(f"no floating-point tensors to record in {first}: its {len(reference)} floating-point "
                                "tensor(s) hold no values")
    for snap in snapshots[1:]:
        shapes = {s.name: s.shape for s in _selected(snap.reader.specs(), exclude)}
        for spec in reference:
            if spec.name not in shapes:
                raise ImportSourceError(f"{snap.label}: parameter {spec.name!r} (in {first}) is missing")
            if shapes[spec.name] != spec.shape:
                raise ImportSourceError(
                    f"{snap.label}: parameter {spec.name!r} has shape {list(shapes[spec.name])}, {first} has {list(spec.shape)}"
                )
        extra = sorted(set(shapes) - {s.name for s in reference})
        if extra:
            raise ImportSourceError(f"{snap.label}: parameter {extra[0]!r} is not in {first}")
    return reference


def scan_source(source: str | Path, *, exclude: Iterable[str] = ()) -> SourceScan:
    """Detect the layout of ``source`` and check its checkpoints, reading headers only.

    Every snapshot's tensor names and shapes are compared (names matching an ``exclude``
    glob and BatchNorm running statistics left out) before anything is written, so a bad
    folder fails with one line naming its first offending file.
    """

    path = Path(source)
    if not path.exists():
        raise ImportSourceError(f"{path}: no such file or directory")
    if not path.is_dir():
        check_regular_file(path)  # a FIFO or device given as the source: said so, not "Not a directory"
    notes: list[str] = []
    single = True
    if path.is_file():
        kind, snapshots = _one_file(path)
    elif is_dcp_dir(path):
        kind, snapshots = ("lightning-sharded" if (path / LIGHTNING_META).is_file() else "dcp"), [dcp_snapshot(path)]
    elif model_file(path) is not None and not any(
            p.is_dir() and (CHECKPOINT_DIR.match(p.name) or model_file(p) is not None) for p in path.iterdir()):
        kind, snapshots = "hf-model", [model_folder_snapshot(path)]
        weights = model_file(path)
        assert weights is not None
        notes.append(f"weights from {weights.name}")
        trainer_files = sorted(f.name for f in path.iterdir() if f.is_file() and never_opened(f.name))
        if trainer_files:
            notes.append(f"never opened: {', '.join(trainer_files)}")
    else:
        kind, snapshots, notes = _folder(path)
        single = False
    ordered = _with_metrics_a_store_holds(
        _ordered(snapshots, notes, single=single, kind=kind, folder=None if single else path), notes)
    reference = _check_same(ordered, exclude)
    shapes = [(s.name, s.shape) for s in reference]
    layout = Layout.from_shapes(shapes, prunable=prunable_names(shapes))  # no model: embeddings known by name
    dtype = default_dtype(s.dtype for s in reference)
    from_names = [s.label for s in ordered if s.step_from == "name"]
    if from_names:
        notes.append(f"steps from the names of {len(from_names)} checkpoint(s) that record none ({_span(from_names)})")
    labels = [s.label for s in ordered]
    steps = f"step {ordered[0].step}" if len(ordered) == 1 else f"steps {ordered[0].step}..{ordered[-1].step}"
    count = f"{len(ordered)} checkpoint{'s' if len(ordered) != 1 else ''}"
    description = f"{KINDS[kind]}: {count} ({_span(labels)}), {steps}, {len(reference)} tensors, {layout.n_params} parameters"
    return SourceScan(path, kind, description, tuple(ordered), layout, dtype, tuple(notes))
