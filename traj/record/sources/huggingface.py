"""Hugging Face folders: a ``Trainer`` output (``checkpoint-N/`` folders), one checkpoint, or a saved model.

A model folder holds its weights as ``model.safetensors``, as shards listed by
``model.safetensors.index.json``, as ``pytorch_model.bin`` (older transformers; sharded with
``pytorch_model.bin.index.json``), a PEFT adapter (``adapter_model.safetensors``/``.bin``), or
the DCP directory ``pytorch_model_fsdp_0/`` a Trainer under FSDP with ``SHARDED_STATE_DICT`` writes.
The first present in that order is read; nothing else in the folder is opened: never
``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth`` or ``training_args.bin`` (a pickle).

Step, epoch and logged scalars come from the folder's ``trainer_state.json``: the step is
``global_step`` (else the number in the folder's name), the epoch the 0-based epoch of that
step (``state.epoch`` 1.0 is the last step of epoch 0), and the ``log_history`` entries whose
``step`` is the checkpoint's give ``loss`` and every other number logged then (``learning_rate``,
``grad_norm``, ``eval_*``) as metrics. A checkpoint saved at a step that was not a logging
step has no loss (NaN).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import ImportSourceError
from .base import (
    Snapshot,
    TensorSpec,
    WeightsReader,
    check_name_is_plain,
    epoch_of_fraction,
    metric_name,
    number_in_name,
    scalar,
    whole_number,
)
from .dcp import DcpReader, is_dcp_dir
from .files import read_json
from .safetensors_files import safetensors_snapshot, sharded_safetensors_reader
from .torch_files import torch_file_snapshot

__all__ = ["MODEL_FILES", "NEVER_OPENED", "CHECKPOINT_DIR", "model_file", "model_folder_snapshot", "never_opened"]

#: weight files of a model folder, in the order transformers prefers them
MODEL_FILES = ("model.safetensors.index.json", "model.safetensors", "adapter_model.safetensors",
               "pytorch_model.bin.index.json", "pytorch_model.bin", "adapter_model.bin", "pytorch_model_fsdp_0")
#: training state files a Trainer (or accelerate) writes beside the weights: never opened
NEVER_OPENED = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scheduler.bin", "scaler.pt", "training_args.bin",
                "rng_state*.pth", "random_states_*.pkl", "optimizer_*.bin", "scheduler_*.bin")
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def never_opened(name: str) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, pattern) for pattern in NEVER_OPENED)


def model_file(folder: Path) -> Path | None:
    """The weights file of a model folder (first of :data:`MODEL_FILES` present), or None."""
    for name in MODEL_FILES:
        path = folder / name
        if path.is_file() or is_dcp_dir(path) or (os.path.lexists(path) and not path.is_dir()):
            return path  # a FIFO or device there is refused, by name, when its reader opens it
    return None


def _trainer_state(folder: Path) -> dict[str, Any] | None:
    path = folder / TRAINER_STATE
    if not os.path.lexists(path):
        return None
    state = read_json(path, f"{folder.name}/{TRAINER_STATE}")  # bounded: a sparse file of gigabytes is refused
    if not isinstance(state, Mapping):
        raise ImportSourceError(f"{folder.name}/{TRAINER_STATE}: expected a JSON object")
    return dict(state)


def _logged_at(state: Mapping[str, Any], step: int) -> tuple[float | None, dict[str, float]]:
    """``loss`` and the other numbers ``log_history`` holds for ``step`` (later entries win)."""
    loss = None
    metrics: dict[str, float] = {}
    history = state.get("log_history")
    if not isinstance(history, list):
        return None, {}
    for entry in history:
        if not isinstance(entry, Mapping) or whole_number(entry.get("step")) != step:
            continue
        for key, value in entry.items():
            number = scalar(value)
            if number is None or key in ("step", "epoch"):
                continue
            if key == "loss":
                loss = number
            else:
                metrics[metric_name(key)] = number
    return loss, metrics


def _reader(weights: Path, label: str) -> WeightsReader:
    if weights.is_dir():
        return DcpReader(weights, label)
    if weights.name.endswith(".safetensors.index.json"):
        return sharded_safetensors_reader(weights, label)
    if weights.suffix == ".safetensors":
        return safetensors_snapshot(weights, label=label).reader
    if weights.name.endswith(".bin.index.json"):
        return _sharded_torch_reader(weights, label)
    return torch_file_snapshot(weights, label=label).reader


def model_folder_snapshot(folder: Path, *, label: str | None = None) -> Snapshot:
    """One Hugging Face checkpoint or saved-model folder as a snapshot."""
    label = label or folder.name
    weights = model_file(folder)
    if weights is None:
        raise ImportSourceError(f"{label}: no model weights (expected one of {', '.join(MODEL_FILES)})")
    reader = _reader(weights, f"{label}/{weights.name}")
    state = _trainer_state(folder)
    step = epoch = None
    loss = None
    metrics: dict[str, float] = {}
    step_from = TRAINER_STATE
    if state is not None:
        step = whole_number(state.get("global_step"))  # exact: a float would merge steps beyond 2**53
        fraction = scalar(state.get("epoch"))
        epoch = epoch_of_fraction(fraction) if fraction is not None else None
        if step is not None:
            loss, metrics = _logged_at(state, step)
    if step is None:
        step, step_from = number_in_name(folder.name), "name"  # checkpoint-N: N
    return Snapshot(reader, label, step, -1 if epoch is None else epoch, loss=loss, metrics=metrics, step_from=step_from)


class _ShardedReader(WeightsReader):
    """Tensors spread over several readers (``pytorch_model-0000k-of-0000n.bin`` shards), shard by shard."""

    def __init__(self, parts: list[WeightsReader], label: str) -> None:
        self._parts = parts
        self.label = label
        self._owner: dict[str, WeightsReader] = {}
        for part in parts:
            for spec in part.specs():
                if spec.name in self._owner:
                    raise ImportSourceError(f"{label}: {spec.name!r} is in two shards ({self._owner[spec.name].label}, {part.label})")
                self._owner[spec.name] = part

    def specs(self) -> list[TensorSpec]:
        return [s for part in self._parts for s in part.specs()]

    def pieces(self, names: Sequence[str], budget: int) -> Iterator[tuple[str, Any]]:
        i = 0
        while i < len(names):
            part = self._owner[names[i]]
            run = []
            while i < len(names) and self._owner[names[i]] is part:
                run.append(names[i])
                i += 1
            yield from part.pieces(run, budget)


def _sharded_torch_reader(index: Path, label: str) -> WeightsReader:
    content = read_json(index, f"{label.rsplit('/', 1)[0]}/{index.name}")
    weight_map = content.get("weight_map") if isinstance(content, Mapping) else None
    if not isinstance(weight_map, Mapping):
        raise ImportSourceError(f"{label}: {index.name} is not a checkpoint index (no 'weight_map')")
    shards = list(dict.fromkeys(str(v) for v in weight_map.values()))
    parts: list[WeightsReader] = []
    for shard in shards:
        check_name_is_plain(shard, index)
        if not (index.parent / shard).is_file():
            raise ImportSourceError(f"{label}: shard {shard} named in {index.name} is missing")
        parts.append(torch_file_snapshot(index.parent / shard, label=f"{label.rsplit('/', 1)[0]}/{shard}").reader)
    return _ShardedReader(parts, label)

