"""KGA and KWM: Koopman-guided acceleration inside training (methods.md §5, seed 000).

Every interval (an epoch, or k steps) exact DMD is fitted on the last t snapshots. With the
POD basis U (N×r), Ã Q = Q Λ and L = Q⁻¹, the stable set S holds the modes with |λ| < 1 − ε.
After every step of the wrapped optimizer, with Δw the change it made:

    Δw̃ = UᵀΔw;   a = Re(Q_S Λ_S L_S Δw̃);   Δw ← Δw + α·U a

The step's component outside span(U) is kept (``project_step=True`` gives the paper's literal
eq. 13, Δw = U(Δw̃ + α a)). α = 0 leaves the base optimizer's weights bit-identical. Masks
(KWM, norm, delta) take weights out of the acceleration and out of the DMD problem.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checks import MAX_EPOCHS, check_choice, check_float, check_floats, check_int
from ..engine import ReducedOperator
from ..engine.operator import NEUTRAL, check_rank
from ..errors import ParameterError, TrajError

__all__ = ["KGA", "KGALog", "MASKS", "ReplayResult", "ReplayRun", "check_options", "replay"]

MASKS = ("none", "kwm", "norm", "delta")
#: Snapshots one fit may use: the history holds N x t numbers.
MAX_WINDOW = 1000


def check_options(*, alpha: float = 1.0, window: int = 5, interval: str | int = "epoch", eps: float = 0.01,
                  rank: int | str | None = None, efficient: bool = False, project_step: bool = False,
                  mask: str = "none", mask_eps: float = 1e-3, mask_window: int = 2) -> dict[str, Any]:
    """KGA's options, checked and normalised (:class:`KGA` and :func:`replay` call it before any work)."""
    if interval != "epoch" and not (isinstance(interval, int) and not isinstance(interval, bool) and interval >= 1):
        raise ParameterError("interval", f"must be 'epoch' or an integer >= 1 (steps), got {interval!r}")
    return {
        "alpha": check_float("alpha", alpha, low=0),
        "window": check_int("window", window, low=3, high=MAX_WINDOW),
        "interval": interval,
        "eps": check_float("eps", eps, low=0, high=1),
        "rank": check_rank(rank),
        "efficient": bool(efficient),
        "project_step": bool(project_step),
        "mask": check_choice("mask", mask, MASKS),
        "mask_eps": check_float("mask_eps", mask_eps, low=0),
        "mask_window": check_int("mask_window", mask_window, low=1, high=MAX_EPOCHS),
    }


@dataclass
class KGALog:
    """What the accelerator did: per refit, the DMD time, stable modes and masked fraction."""

    refits: int = 0
    dmd_seconds: list[float] = field(default_factory=list)
    stable_modes: list[int] = field(default_factory=list)
    masked_fraction: list[float] = field(default_factory=list)
    accelerated_steps: int = 0
    diverged: bool = False


class KGA:
    """Wrap a torch optimizer with Koopman-based gradient acceleration.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    params : iterable of tensors
        The parameters to accelerate (the optimizer's, in a fixed order).
    alpha : float
        Acceleration rate α (0: the base optimizer, bit for bit).
    window : int
        t, the snapshots each DMD fit uses.
    interval : "epoch" or int
        Refit at every ``epoch_end()`` (KGA-Epoch) or every k steps (KGA-Iter; a snapshot is
        taken every step).
    eps : float
        Stable modes have |λ| < 1 − ε.
    rank : int, "auto" or None
        DMD rank of each fit: None keeps every direction above the precision floor (the
        window is short), "auto" the Gavish–Donoho threshold, an int at most that many.
    efficient : bool
        Efficient-KGA: after the first fit keep U fixed and store only Uᵀθ (r numbers per snapshot).
    project_step : bool
        Use the paper's eq. 13 literally (drop the step outside span(U)).
    mask : {"none", "kwm", "norm", "delta"}
    mask_eps : float
    mask_window : int
        s: epochs (refits) a weight must stay below ``mask_eps`` before it is masked.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: Iterable[torch.Tensor] | None = None,
        *,
        alpha: float = 1.0,
        window: int = 5,
        interval: str | int = "epoch",
        eps: float = 0.01,
        rank: int | str | None = None,
        efficient: bool = False,
        project_step: bool = False,
        mask: str = "none",
        mask_eps: float = 1e-3,
        mask_window: int = 2,
    ) -> None:
        o = check_options(alpha=alpha, window=window, interval=interval, eps=eps, rank=rank, efficient=efficient,
                          project_step=project_step, mask=mask, mask_eps=mask_eps, mask_window=mask_window)
        self.optimizer = optimizer
        self.params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        self.alpha = o["alpha"]
        self.window = o["window"]
        self.interval = o["interval"]
        self.eps = o["eps"]
        self.rank = o["rank"]
        self.efficient = o["efficient"]
        self.project_step = o["project_step"]
        self.mask_kind = o["mask"]
        self.mask_eps = o["mask_eps"]
        self.mask_window = o["mask_window"]
        n = sum(p.numel() for p in self.params)
        # the weights' precision sets the DMD's singular-value floor (float32 weights: 1e-6·σ1)
        self._dtype = np.float64 if all(p.dtype == torch.float64 for p in self.params) else np.float32
        self.n_params = n
        self.log = KGALog()
        self._snapshots: deque[np.ndarray] = deque(maxlen=self.window)
        self._steps = 0
        self.basis: np.ndarray | None = None  # U restricted to the active weights, (n_active, r)
        self._propagator: np.ndarray | None = None  # Re(Q_S Λ_S L_S), (r, r)
        self.masked = np.zeros(n, dtype=bool)
        self._below = np.zeros(n, dtype=np.int64)
        self._active: np.ndarray = np.arange(n)
        self._snapshot()  # θ at the start

    # ------------------------------------------------------------------ optimizer protocol
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """The base optimizer's step, then the acceleration of its stable-mode component."""
        accelerate = self.alpha != 0 and self._propagator is not None
        before = self._flat() if accelerate else None
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        if accelerate:
            assert before is not None
            delta = (self._flat() - before)[self._active]
        if accelerate and not np.isfinite(delta).all():
            # the base step left non-finite weights (training diverged): stop accelerating
            self._propagator = None
            self.log.diverged = True
        elif accelerate:
            u = self.basis
            coords = u.T @ delta
            extra = self.alpha * (u @ (self._propagator @ coords))
            if self.project_step:
                new_delta = u @ coords + extra
                update = np.zeros(self.n_params)
                update[self._active] = new_delta - delta
            else:
                update = np.zeros(self.n_params)
                update[self._active] = extra
            self._add(update)
            self.log.accelerated_steps += 1
        self._steps += 1
        if self.interval != "epoch":
            self._snapshot()
            if self._steps % int(self.interval) == 0:
                self.refit()
        return loss

    def epoch_end(self) -> None:
        """Mark an epoch's end: snapshot and refit for KGA-Epoch; masks advance per epoch."""
        if self.interval == "epoch":
            self._snapshot()
            self.refit()

    # ------------------------------------------------------------------ the DMD fit
    def refit(self) -> None:
        """Fit DMD on the last t snapshots; update U, the stable-mode propagator and masks."""
        if len(self._snapshots) < 3:
            return
        if not all(np.isfinite(snap).all() for snap in self._snapshots):
            # training diverged (NaN/Inf weights): stop accelerating rather than fit garbage
            self._propagator = None
            self.log.diverged = True
            return
        t0 = time.perf_counter()
        if self.efficient and self.basis is not None:
            # Efficient-KGA: U is fixed; the snapshots are z = Uᵀθ, and the r×r DMD matrix in U
            # coordinates is A = Z₂ Z₁⁺, whose eigendecomposition gives Q, Λ and L directly.
            z = np.stack(list(self._snapshots), axis=1)
            a_matrix = z[:, 1:] @ np.linalg.pinv(z[:, :-1])
            eigenvalues, q = np.linalg.eig(a_matrix)
            prop = _propagator(eigenvalues, q, np.linalg.pinv(q), self.eps)
        else:
            full = np.stack(list(self._snapshots), axis=1)  # (N, t)
            op = self._fit(full[self._active])
            if self._update_masks(full[self._active], op):  # masked weights leave the DMD problem
                op = self._fit(full[self._active])
            d = full[self._active]
            eigenvalues = op.eigenvalues
            # POD basis U = X V Σ⁻¹; Ã = UᵀYVΣ⁻¹ is the operator in U coordinates, Ã W = W Λ
            self.basis = d[:, :-1] @ op.modes_basis / op.singular_values[: op.rank]
            prop = _propagator(op.eigenvalues, op.right, op.left, self.eps)
            if self.efficient:
                self._snapshots = deque((self.basis.T @ col for col in d.T), maxlen=self.window)
        self._propagator = prop
        self.log.refits += 1
        self.log.dmd_seconds.append(time.perf_counter() - t0)
        self.log.stable_modes.append(int(np.count_nonzero(np.abs(eigenvalues) < 1 - self.eps)))
        self.log.masked_fraction.append(float(self.masked.mean()))

    def _fit(self, d: np.ndarray) -> ReducedOperator:
        """DMD of the window; a fixed rank is reduced to the directions the window resolves."""
        rank = "all" if self.rank is None else self.rank
        return ReducedOperator.from_gram(d.T @ d, rank=rank, n_features=d.shape[0], dtype=self._dtype, excess="reduce")

    def _update_masks(self, d: np.ndarray, op: ReducedOperator) -> bool:
        """Advance the masks one interval; True when weights were newly masked."""
        if self.mask_kind == "none":
            return False
        active = self._active
        if self.mask_kind == "norm":
            score = np.abs(d[:, -1])
        elif self.mask_kind == "delta":
            score = np.abs(d[:, -1] - d[:, 0])
        else:  # KWM: the non-neutral part of each weight's reconstruction at the latest snapshot
            classes = op.classes(self.eps)
            keep = np.array([c != NEUTRAL for c in classes])
            t_last = d.shape[1] - 1
            phi = d @ op.coefficients[:, keep]
            score = np.abs(phi @ (op.amplitudes[keep] * op.eigenvalues[keep] ** t_last))
        below = score < self.mask_eps
        self._below[active] = np.where(below, self._below[active] + 1, 0)
        newly = active[self._below[active] >= self.mask_window]
        if newly.size:
            self.masked[newly] = True
            self._active = np.flatnonzero(~self.masked)
        return bool(newly.size)

    # ------------------------------------------------------------------ flat parameter access
    def _flat(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in self.params]).cpu().numpy()

    @torch.no_grad()
    def _add(self, update: np.ndarray) -> None:
        offset = 0
        for p in self.params:
            k = p.numel()
            p.add_(torch.from_numpy(update[offset : offset + k]).reshape(p.shape).to(device=p.device, dtype=p.dtype))
            offset += k

    def _snapshot(self) -> None:
        theta = self._flat()
        if self.efficient and self.basis is not None:
            self._snapshots.append(self.basis.T @ theta[self._active])
        else:
            self._snapshots.append(theta)

    @property
    def stored_snapshot_floats(self) -> int:
        """Numbers held in the snapshot history (Efficient-KGA: r per snapshot, not N)."""
        return int(sum(s.size for s in self._snapshots))


def _propagator(eigenvalues: np.ndarray, right: np.ndarray, left: np.ndarray, eps: float) -> np.ndarray:
    """Re(Q_S Λ_S L_S) (r×r): the stable modes' one-step map in U coordinates."""
    stable = np.abs(eigenvalues) < 1 - eps
    if not stable.any():
        return np.zeros((right.shape[0], right.shape[0]))
    return np.real(right[:, stable] @ np.diag(eigenvalues[stable]) @ left[stable])


# ---------------------------------------------------------------------- traj kga-replay
@dataclass(frozen=True)
class ReplayRun:
    """One training run of a replay: per epoch train loss, validation metrics and wall time."""

    label: str
    alpha: float
    store: str
    train_loss: list[float]
    val_loss: list[float]
    val_accuracy: list[float] | None
    epoch_seconds: list[float]
    masked_fraction: list[float]
    dmd_seconds: float
    refits: int

    @property
    def diverged_epoch(self) -> int | None:
        """The first epoch whose train loss is not finite (None: the run never diverged)."""
        return next((i + 1 for i, v in enumerate(self.train_loss) if not np.isfinite(v)), None)

    def to_dict(self) -> dict[str, Any]:
        # JSON has no NaN: a loss that is not finite (a diverged run) is null, and diverged_epoch says why
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}
        out["diverged_epoch"] = self.diverged_epoch
        return out


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class ReplayResult:
    recipe: str
    config: dict[str, Any]
    options: dict[str, Any]
    plain: ReplayRun
    accelerated: list[ReplayRun]
    seconds: float

    def summary(self) -> dict[str, Any]:
        plain = self.plain
        target = plain.train_loss[-1]  # NaN when the plain run diverged: no KGA run "reaches" it
        rows = []
        for run in self.accelerated:
            reached = next((i + 1 for i, v in enumerate(run.train_loss) if v <= target), None)
            rows.append({
                "label": run.label,
                "alpha": run.alpha,
                "final_train_loss": _finite_or_none(run.train_loss[-1]),
                "final_val_loss": _finite_or_none(run.val_loss[-1]),
                "diverged_epoch": run.diverged_epoch,
                "loss_difference": _finite_or_none([a - b for a, b in zip(run.train_loss, plain.train_loss, strict=True)]),
                "epochs_to_plain_final_loss": reached,
                # the first epoch carries one-off costs (imports, allocations): compare the rest
                "added_seconds_per_epoch": float(np.mean(run.epoch_seconds[1:] or run.epoch_seconds)
                                                 - np.mean(plain.epoch_seconds[1:] or plain.epoch_seconds)),
                "dmd_seconds_total": run.dmd_seconds,
            })
        return {"recipe": self.recipe, "config": self.config, "options": self.options,
                "plain": plain.to_dict(), "runs": [r.to_dict() for r in self.accelerated], "comparison": rows,
                "plain_final_train_loss": _finite_or_none(target), "plain_diverged_epoch": plain.diverged_epoch,
                "seconds": self.seconds}


def replay(
    recipe: Any,
    out_dir: Any,
    *,
    alphas: Iterable[float] = (1.0,),
    epochs: int | None = None,
    progress: Any = None,
    final_dir: Any = None,
    **kga_options: Any,
) -> ReplayResult:
    """Re-run ``recipe`` (same seed, same data order) plainly and with KGA for each α, recording
    every run to ``out_dir/<label>.zarr`` so the other commands can analyse them.

    ``out_dir`` must not hold stores of those names. ``final_dir``: where ``out_dir`` will be
    moved once complete (a staging directory's target); the results name paths there.
    """
    from pathlib import Path

    # every option is checked before the first run trains (KGA itself is built only for the second)
    alphas = check_floats("alphas", alphas, low=0)
    kga_options = {k: v for k, v in check_options(**kga_options).items() if k in kga_options}
    if epochs is not None:
        epochs = check_int("epochs", epochs, low=1, high=MAX_EPOCHS)
    if getattr(recipe, "name", "") == "mirror-descent":
        raise TrajError("the mirror-descent recipe iterates an algorithm, not a torch optimizer: nothing to accelerate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe.data  # noqa: B018  # load the data before any run is timed
    t0 = time.perf_counter()
    final = Path(final_dir) if final_dir is not None else out
    alphas = list(dict.fromkeys(float(a) for a in alphas))  # one run per distinct α
    runs = [_replay_run(recipe, out, final, label, alpha, epochs, progress, kga_options)
            for label, alpha in [("plain", None), *[(f"kga-alpha{a:g}", float(a)) for a in alphas]]]
    return ReplayResult(recipe.name, dict(recipe.config), dict(kga_options), runs[0], runs[1:], time.perf_counter() - t0)


def _replay_run(recipe: Any, out: Any, final: Any, label: str, alpha: float | None, epochs: int | None, progress: Any,
                kga_options: dict[str, Any]) -> ReplayRun:
    """One recorded run of a replay: plain (alpha None) or wrapped in KGA."""
    from ..record import Recorder

    made: dict[str, KGA] = {}

    def wrap(optimizer: torch.optim.Optimizer) -> Any:
        if alpha is None:
            return optimizer
        made["kga"] = KGA(optimizer, alpha=alpha, **kga_options)
        return made["kga"]

    train_loss: list[float] = []
    val_loss: list[float] = []
    val_acc: list[float] = []
    seconds: list[float] = []
    clock = [time.perf_counter()]

    def on_epoch(report: Any) -> None:
        now = time.perf_counter()
        seconds.append(now - clock[0])
        clock[0] = now
        train_loss.append(report.loss)
        val_loss.append(report.metrics.get("loss", float("nan")))
        if "accuracy" in report.metrics:
            val_acc.append(report.metrics["accuracy"])
        if progress is not None:
            progress(label, report)

    model = recipe.new_model()
    every = recipe.config["every"]
    unit, k = ("epoch", 1) if every == "epoch" else ("step", int(every))
    attrs = {**recipe.store_attrs(), "kga": None if alpha is None else {"alpha": alpha, **kga_options}}
    path = out / f"{label}.zarr"
    if path.exists():
        raise TrajError(f"{path} already exists; kga-replay writes its runs only into a new directory")
    with Recorder(path, model, every=k, unit=unit, recipe=attrs) as recorder:
        clock[0] = time.perf_counter()
        recipe.train(model, recorder=recorder, epochs=epochs, progress=on_epoch, wrap_optimizer=wrap)
    kga = made.get("kga")
    return ReplayRun(label, 0.0 if alpha is None else alpha, str(final / path.name), train_loss, val_loss, val_acc or None, seconds,
                     list(kga.log.masked_fraction) if kga else [], float(sum(kga.log.dmd_seconds)) if kga else 0.0,
                     kga.log.refits if kga else 0)
