"""Prediction-based Koopman acceleration: the baselines KGA is compared with (the KGA paper, fig. 6a).

Dogra & Redman (2020) train some epochs, fit exact DMD on the weight trajectory and set the
weights to the DMD forecast τ epochs ahead, then continue training ("predict"). Tano et al.
(2020) do the same but keep a jump only when it lowers the validation loss ("bootstrap").

At the end of epoch e, with the window D = [θ_{e−h+1} … θ_e] (N×h) of epoch-end snapshots:

    θ ← θ_e + Re{Φ (Λ^τ − I) Φ⁺ θ_e}

computed from the window's Gram G = DᵀD alone (Φ = D C, C the operator's coefficients): ΦᴴΦ =
Cᴴ G C and Φᴴθ_e = (G C)[-1]ᴴ give b = Φ⁺θ_e, and the jump is D · (C ((λ^τ − 1) ⊙ b)), one
product of the window with an h-vector. θ's component outside span(Φ) is kept.

After a taken jump the history restarts at the jumped weights (a jump is not a training step),
so jumps are at least h − 1 epochs apart. The base optimizer's state (Adam moments, momentum)
and its learning rate are left as they are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..checks import check_int
from ..engine import ReducedOperator
from ..errors import ParameterError, TrajError
from .kga import flat_params, write_flat
from .options import JUMP_MODES, JumpOptions

__all__ = ["JUMP_MODES", "JumpLog", "JumpOptions", "KoopmanJump", "dmd_jump"]


@dataclass
class JumpLog:
    """Every jump attempt: its epoch (1-based), whether it was kept, the validation metrics around it."""

    epochs: list[int] = field(default_factory=list)
    taken: list[bool] = field(default_factory=list)
    val_loss_before: list[float] = field(default_factory=list)
    val_loss_after: list[float] = field(default_factory=list)
    val_accuracy_after: list[float] = field(default_factory=list)
    relative_size: list[float] = field(default_factory=list)  # ‖Δ‖ / ‖θ_e‖
    max_abs_eigenvalue: list[float] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # epochs whose fit failed (no jump)


def dmd_jump(window: np.ndarray, horizon: int, *, rank: int | str | None = None,
             dtype: Any = np.float32) -> tuple[np.ndarray, ReducedOperator]:
    """The jump Δ = Re{Φ (Λ^τ − I) Φ⁺ θ_last} of exact DMD fitted on a window of snapshots.

    Parameters
    ----------
    window : ndarray of shape (N, h)
        D = [θ_{e−h+1} … θ_e], the snapshots as columns, oldest first (float64).
    horizon : int
        τ, the snapshots to forecast ahead (0: Δ = 0).
    rank : int, "auto" or None
        None keeps every direction above the precision floor (at most h − 1), as KGA does.
    dtype : dtype
        The weights' dtype (sets the singular-value floor).

    Returns
    -------
    jump : ndarray of shape (N,)
        Δ; θ_last + Δ is the DMD forecast of θ_{last+τ} on span(Φ), θ_last elsewhere.
    operator : ReducedOperator
    """
    d = np.asarray(window, dtype=np.float64)
    g = d.T @ d
    op = ReducedOperator.from_gram(g, rank="all" if rank is None else rank, n_features=d.shape[0], dtype=dtype,
                                   excess="reduce")
    assert op.coefficients is not None and op.gram_coefficients is not None
    c, gc = op.coefficients, op.gram_coefficients  # C (h×r) and G C
    b = np.linalg.lstsq(c.conj().T @ gc, gc[-1].conj(), rcond=None)[0]  # Φ⁺θ_last from ΦᴴΦ and Φᴴθ_last
    growth = op.eigenvalues.astype(np.complex128) ** int(horizon) - 1.0
    return np.real(d @ (c @ (growth * b))), op


class KoopmanJump:
    """Wrap a torch optimizer with prediction-based Koopman jumps at epoch ends.

    The wrapper has KGA's protocol (``step``, ``zero_grad``, ``param_groups``, ``epoch_end``),
    so :meth:`traj.recipes.Recipe.train` drives it unchanged.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    params : iterable of tensors, optional
        The parameters θ (default the optimizer's, in order).
    mode : {"predict", "bootstrap"}
        "predict" takes every jump; "bootstrap" keeps a jump only when the validation loss at the
        jumped weights is strictly below the loss before it, and otherwise restores θ_e bit for bit.
    window : int
        h, the epoch-end snapshots (θ₀ before training included) each fit uses.
    horizon : int
        τ, epochs to jump ahead.
    every : int, optional
        Epochs between attempts (default and minimum h − 1).
    warmup : int, optional
        The first epoch that may jump (default and minimum h − 1).
    rank : int, "auto" or None
        The DMD rank (None: every direction above the precision floor).
    validate : callable, optional
        ``validate() -> {"loss": ..., "accuracy": ...}`` at the current weights; needed by
        "bootstrap", logged around each jump when given.
    on_jump : callable, optional
        Called after each taken jump (e.g. to mark the next recorded snapshot).
    last_epoch : int, optional
        The training's last epoch: no jump is attempted there (nothing would train from it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor] | None = None, *,
                 mode: str = "predict", window: int = 5, horizon: int = 5, every: int | None = None,
                 warmup: int | None = None, rank: int | str | None = None,
                 validate: Callable[[], dict[str, float]] | None = None,
                 on_jump: Callable[[], None] | None = None, last_epoch: int | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ParameterError("optimizer", f"must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.options = JumpOptions(mode=mode, window=window, horizon=horizon, every=every, warmup=warmup, rank=rank)
        if self.options.mode == "bootstrap" and validate is None:
            raise ParameterError("validate", "bootstrap keeps a jump only when the validation loss falls: "
                                             "it needs a validation callback")
        self.optimizer = optimizer
        self.params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        self._dtype = np.float64 if all(p.dtype == torch.float64 for p in self.params) else np.float32
        self.validate = validate
        self.on_jump = on_jump
        # no jump at the end of training: nothing would train from it, and the run's last metrics and
        # snapshot were taken before it
        self.last_epoch = None if last_epoch is None else check_int("last_epoch", last_epoch, low=1)
        self.log = JumpLog()
        self.epoch = 0
        self._last_attempt: int | None = None
        self._history: deque[np.ndarray] = deque(maxlen=self.options.window)
        self._history.append(self._flat())  # θ₀

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict with a ``"jump"`` entry: options, epoch counters, the
        window's history and the log. Every array is a CPU tensor, so ``torch.load(...,
        weights_only=True)`` reads it back."""
        state = self.optimizer.state_dict()
        state["jump"] = {
            "options": self.options.to_dict(),
            "epoch": self.epoch,
            "last_attempt": self._last_attempt,
            "history": [torch.from_numpy(h.copy()) for h in self._history],
            "log": asdict(self.log),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a plain optimizer's state dict restores the base optimizer only)."""
        state = dict(state_dict)
        jump = state.pop("jump", None)
        n_params = sum(p.numel() for p in self.params)
        history = [] if jump is None else [h.numpy().astype(np.float64) for h in jump["history"]]
        if any(h.shape != (n_params,) for h in history):  # checked before anything is loaded
            raise ParameterError("state_dict", f"holds jump history of {history[0].size} weights; this wrapper "
                                               f"jumps {n_params}")
        if jump is None:
            self.optimizer.load_state_dict(state)
            return
        options = JumpOptions.checked(**jump["options"])
        if options.mode == "bootstrap" and self.validate is None:
            raise ParameterError("state_dict", "holds a bootstrap run, which needs a validation callback")
        self.optimizer.load_state_dict(state)
        self.options = options
        self.epoch = int(jump["epoch"])
        self._last_attempt = None if jump["last_attempt"] is None else int(jump["last_attempt"])
        self._history = deque(history, maxlen=self.options.window)
        self.log = JumpLog(**{k: list(v) for k, v in jump["log"].items()})

    def epoch_end(self) -> None:
        """Snapshot θ_e; jump when the window is full, the warmup is over and ``every`` epochs have passed."""
        o = self.options
        self.epoch += 1
        theta = self._flat()
        self._history.append(theta)
        due = (len(self._history) == o.window and self.epoch >= o.first_epoch
               and (self.last_epoch is None or self.epoch < self.last_epoch)
               and (self._last_attempt is None or self.epoch - self._last_attempt >= o.spacing))
        if not due:
            return
        self._last_attempt = self.epoch
        if not np.isfinite(theta).all():
            self.log.skipped.append(self.epoch)
            return
        try:
            jump, op = dmd_jump(np.stack(list(self._history), axis=1), o.horizon, rank=o.rank, dtype=self._dtype)
        except (TrajError, np.linalg.LinAlgError):
            self.log.skipped.append(self.epoch)
            return
        if not np.isfinite(jump).all():
            self.log.skipped.append(self.epoch)
            return
        before = self.validate() if self.validate is not None else {}
        self._set(theta + jump)
        after = self.validate() if self.validate is not None else {}
        nan = float("nan")
        take = o.mode == "predict" or after.get("loss", nan) < before.get("loss", nan)
        log = self.log
        log.epochs.append(self.epoch)
        log.taken.append(bool(take))
        log.val_loss_before.append(float(before.get("loss", nan)))
        log.val_loss_after.append(float(after.get("loss", nan)))
        log.val_accuracy_after.append(float(after.get("accuracy", nan)))
        norm = float(np.linalg.norm(theta))
        log.relative_size.append(float(np.linalg.norm(jump) / norm) if norm > 0 else nan)
        log.max_abs_eigenvalue.append(float(np.abs(op.eigenvalues).max()) if op.rank else nan)
        if take:
            self._history.clear()
            self._history.append(self._flat())
            if self.on_jump is not None:
                self.on_jump()
        else:
            self._set(theta)  # float64 copy of float32 weights: restored bit for bit

    def _flat(self) -> np.ndarray:
        return flat_params(self.params)

    def _set(self, theta: np.ndarray) -> None:
        write_flat(self.params, theta)
