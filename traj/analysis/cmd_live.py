"""Online CMD while a run trains (docs/methods.md §2.6): :class:`LiveCMD`, what
``traj.live.LiveOptions(cmd_modes=M)`` keeps on the Recorder's writer thread.

The same running sums as ``traj cmd --online`` (:mod:`traj.analysis.cmd_online`), added snapshot by
snapshot; at the end of training the model (``cmd.zarr``) and ``summary.json`` are written.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_choice, check_int, check_seed
from ..errors import DataLimitError, TrajError
from ..store.dtypes import decode
from .cmd import DISTANCES, MAX_SAMPLES
from .cmd_online import (
    DEFAULT_WARMUP,
    ReferenceSums,
    Totals,
    WarmupPick,
    WeightSums,
    candidates_of,
    pick_references,
    pieces,
    write_model,
)

__all__ = ["LiveCMD", "OnlineCMDSummary", "live_output"]

#: Weights per piece when a batch of live snapshots is added: the (M, piece) products of a piece stay in cache.
ADD_PIECE = 1 << 12
#: Snapshots the live path adds to the sums at once: the (M, N) products are read and written once a batch
#: (memory traffic, not arithmetic, bounds the update), for BATCH stored snapshots held meanwhile.
BATCH = 8
#: The live sums are held in memory: (M + 3)·N float64 at most this many bytes.
MAX_LIVE_BYTES = 4 << 30


@dataclass(frozen=True)
class OnlineCMDSummary:
    """The live online CMD at the end of training (``summary.json`` beside its ``cmd.zarr``).

    ``warmup_steps`` are the training steps of the warm-up's first and last snapshots; ``relabelled``
    counts the weights whose mode at the end differs from their mode at the warm-up's end.
    """

    model_path: str
    n_params: int
    snapshots: int
    steps: tuple[int, int]
    warmup_steps: tuple[int, int]
    reference_indices: np.ndarray
    mode_sizes: np.ndarray
    mode_mean_corr: np.ndarray
    mse: float
    relative_error: float
    relabelled: int
    seconds: float

    @property
    def modes(self) -> int:
        return int(self.reference_indices.size)

    def to_dict(self) -> dict[str, Any]:
        return {"online": True, "model": self.model_path, "n_params": self.n_params, "modes": self.modes,
                "snapshots": self.snapshots, "steps": list(self.steps), "warmup_steps": list(self.warmup_steps),
                "reference_indices": self.reference_indices.tolist(), "mode_sizes": self.mode_sizes.tolist(),
                "mode_mean_abs_corr": self.mode_mean_corr.tolist(), "reconstruction_mse": self.mse,
                "relative_error": self.relative_error, "relabelled": self.relabelled, "seconds": self.seconds}


def live_output(store_path: str | os.PathLike[str]) -> Path:
    """Where a run's live CMD goes by default: ``RUN-cmd/`` beside the store ``RUN.zarr``."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.name.removesuffix('.zarr')}-cmd")


class LiveCMD:
    """Online CMD kept while a run trains (docs/methods.md §2.6), one snapshot at a time.

    The first ``warmup`` snapshots wait in a scratch file (and their candidates' values in memory) until
    they are all in; then the references are picked (:func:`pick_references`) and the warm-up's snapshots
    are added to the sums, and every later snapshot is added as it comes: O((M + 3)·N) per snapshot.
    :meth:`close` writes ``cmd.zarr`` and ``summary.json`` into ``out`` (an output directory, replaced
    only when traj wrote it). A run that ends inside its warm-up is fitted on what it has (3 snapshots
    at least). Why a live CMD gave up (too few moving weights, ...) is in :attr:`note`.
    """

    def __init__(self, n_params: int, layout: Any, dtype: str, *, modes: int, out: str | os.PathLike[str],
                 warmup: int = DEFAULT_WARMUP, samples: int | None = None, seed: int = 0, distance: str = "rows",
                 store: str | os.PathLike[str] | None = None) -> None:
        from ..atomic import check_output_dir

        self.n = int(n_params)
        self.dtype = dtype
        self.modes = check_int("cmd_modes", modes, low=1, high=MAX_SAMPLES)
        self.warmup = check_int("cmd_warmup", warmup, low=3)
        self.seed = check_seed("seed", seed)
        self.distance = check_choice("distance", distance, DISTANCES)
        samples = None if samples is None else check_int("cmd_samples", samples, low=2, high=MAX_SAMPLES)
        need = (self.modes + 3) * self.n * 8
        if need > MAX_LIVE_BYTES:
            raise DataLimitError("cmd_modes", f"online CMD of {self.n} weights in {self.modes} modes keeps "
                                              f"{need / 2**30:.1f} GiB of running sums (limit "
                                              f"{MAX_LIVE_BYTES / 2**30:.0f} GiB): fewer modes, or `traj cmd "
                                              "--online` on the recorded store")
        self.inputs = [] if store is None else [Path(store)]
        self.out = check_output_dir(out, inputs=self.inputs, option="cmd_out", kind="live-cmd")
        self.layout = layout
        self.candidates, self.samples = candidates_of(self.n, layout, samples, self.seed)
        self.steps: list[int] = []
        self.note: str | None = None
        self.summary: OnlineCMDSummary | None = None
        self.seconds = 0.0
        self._warm_values: list[np.ndarray] = []
        # the warm-up's W snapshots (W·N stored values) wait beside the store, on the disk that holds the run
        self._scratch = tempfile.TemporaryFile(prefix=".traj-live-cmd-",  # noqa: SIM115 - closed by close()
                                               dir=None if store is None else Path(store).parent)
        self._pick: WarmupPick | None = None
        self._refs: ReferenceSums | None = None
        self._sums: WeightSums | None = None
        self._at_warmup: dict[str, np.ndarray] | None = None
        self._batch: list[np.ndarray] = []

    def observe(self, values: np.ndarray, step: int) -> None:
        """Add a snapshot (as stored: ``dtype``'s representation) taken at training step ``step``."""
        if self.note is not None or self.summary is not None:
            return
        t0 = time.perf_counter()
        self.steps.append(int(step))
        values = np.asarray(values).ravel()
        if self._pick is None:
            self._warm_values.append(np.asarray(decode(values[self.candidates], self.dtype), dtype=np.float64))
            self._scratch.write(np.ascontiguousarray(values).data)
            if len(self._warm_values) == self.warmup:
                self._start()
        else:
            self._batch.append(np.array(values, copy=True))  # the Recorder reuses its buffer
            if len(self._batch) == BATCH:
                self._flush()
        self.seconds += time.perf_counter() - t0

    def _flush(self) -> None:
        """Add the snapshots waiting in the batch to the sums."""
        if self._batch:
            self._add(np.stack(self._batch))
            self._batch = []

    def _start(self) -> None:
        """Pick the references on the warm-up and add its snapshots (read back from the scratch file)."""
        warm = np.stack(self._warm_values)
        try:
            self._pick = pick_references(warm, self.candidates, self.samples, modes=self.modes,
                                         distance=self.distance, seed=self.seed)
        except TrajError as exc:
            self.note = f"online CMD stopped after the warm-up: {exc}"
            self._scratch.close()
            return
        self._refs = ReferenceSums(self._pick.reference_indices.size)
        self._sums = WeightSums(self.n, self._pick.reference_indices.size)
        self._warm_values = []
        self._scratch.seek(0)
        for lo in range(0, warm.shape[0], BATCH):
            rows = min(BATCH, warm.shape[0] - lo)
            self._add(np.fromfile(self._scratch, dtype=self._stored_dtype(), count=rows * self.n)
                      .reshape(rows, self.n))
        self._scratch.close()
        # the labels at the warm-up's end, to count the weights that change mode after it
        self._at_warmup = {"labels": np.concatenate([self._sums.solve(self._refs.state(), a, b)["labels"]
                                                     for a, b in pieces(self.n)])}

    def _stored_dtype(self) -> np.dtype:
        from ..store.dtypes import storage_dtype

        return storage_dtype(self.dtype)

    def _add(self, values: np.ndarray) -> None:
        """Add t snapshots, ``values`` (t, N) as stored, in time order, a piece of weights at a time."""
        assert self._pick is not None and self._refs is not None and self._sums is not None
        refs = np.asarray(decode(values[:, self._pick.reference_indices], self.dtype), dtype=np.float64)
        rho = self._refs.update(refs)
        if self._sums.first is None:  # w(0): the first snapshot, decoded a piece at a time
            self._sums.first = np.empty(self.n)
            for a, b in pieces(self.n):
                self._sums.set_first(np.asarray(decode(values[0, a:b], self.dtype), dtype=np.float64), a)
        for a, b in pieces(self.n, ADD_PIECE):
            self._sums.update(np.asarray(decode(values[:, a:b], self.dtype), dtype=np.float64), rho, a)

    def close(self) -> OnlineCMDSummary | None:
        """Write the model (``out/cmd.zarr``, ``out/summary.json``) and return its summary; None (and
        :attr:`note` says why) when there was nothing to fit or the model could not be written. Idempotent.

        Never raises for the run's data or the output (NaN weights, a full disk, an output directory that
        changed meanwhile): the Recorder calls it before closing the store, and an error there would
        discard an ``--overwrite`` run; :attr:`note` says what happened instead.
        """
        if self.summary is not None or self.note is not None:
            return self.summary
        try:
            return self._close()
        except (TrajError, OSError) as exc:
            self.summary = None
            self.note = f"online CMD not written: {exc}"
            self._scratch.close()
            return None

    def _close(self) -> OnlineCMDSummary | None:
        t0 = time.perf_counter()
        if self._pick is None:
            if len(self._warm_values) < 3:
                self.note = f"online CMD needs 3 snapshots; the run recorded {len(self._warm_values)}"
                self._scratch.close()
                return None
            self._start()
            if self.note is not None:
                return None
        assert self._pick is not None and self._refs is not None and self._sums is not None
        self._flush()
        from ..atomic import staged_output

        state = self._refs.state()
        totals = Totals.empty(state[1].size, self.layout)
        early = self._at_warmup["labels"] if self._at_warmup is not None else None

        def parts() -> Iterator[tuple[int, dict[str, Any]]]:
            for a, b in pieces(self.n):
                part = self._sums.solve(state, a, b)
                totals.add(a, part, self.layout)
                if early is not None:
                    totals.relabelled += int(((early[a:b] != part["labels"]) & part["moving"]).sum())
                yield a, part

        steps = np.array(self.steps, dtype=np.int64)
        warm_end = min(self.warmup, steps.size) - 1
        options = {"modes": self.modes, "threshold": None, "samples": self.samples, "subsample": 1,
                   "seed": self.seed, "distance": self.distance, "ema": [], "window": [0, steps.size - 1],
                   "store": str(self.inputs[0]) if self.inputs else None,
                   "snapshots": list(range(steps.size)), "online": {"warmup": [0, warm_end], "live": True}}
        with staged_output(self.out, inputs=self.inputs, kind="live-cmd") as staging:
            write_model(staging / "cmd.zarr", self.n, parts(), self._refs.values, steps, self._pick.sample,
                         self._pick.reference_columns, options)
            self.summary = OnlineCMDSummary(
                model_path=str(self.out / "cmd.zarr"), n_params=self.n, snapshots=int(steps.size),
                steps=(int(steps[0]), int(steps[-1])), warmup_steps=(int(steps[0]), int(steps[warm_end])),
                reference_indices=self._pick.reference_indices, mode_sizes=totals.sizes,
                mode_mean_corr=totals.mean_corr(), mse=totals.sse / (self.n * steps.size),
                relative_error=totals.relative_error(), relabelled=totals.relabelled,
                seconds=self.seconds + time.perf_counter() - t0)
            (staging / "summary.json").write_text(json.dumps(self.summary.to_dict(), indent=2) + "\n")
        self._sums = None  # the sums go with the model written
        return self.summary


