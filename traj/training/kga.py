"""KGA and KWM: Koopman-guided acceleration inside training (docs/methods.md §5; the KGA paper).

Every interval (an epoch, or k steps) exact DMD is fitted on the last t snapshots. With the
POD basis U (N×r), Ã Q = Q Λ and L = Q⁻¹, the stable set S holds the modes with |λ| < 1 − ε.
After every step of the wrapped optimizer, with Δw the change it made:

    Δw̃ = UᵀΔw;   a = Re(Q_S Λ_S L_S Δw̃);   Δw ← Δw + α·U a

The step's component outside span(U) is kept (``project_step=True`` gives the paper's literal
eq. 13, Δw = U(Δw̃ + α a)). α = 0 leaves the base optimizer's weights bit-identical. Masks
(KWM, norm, delta) take weights out of the acceleration and out of the DMD problem.

:class:`KGA` is a ``torch.optim.Optimizer`` (learning-rate schedulers and trainers accept it):
it shares the wrapped optimizer's ``param_groups``, and its ``state_dict()`` is the wrapped
optimizer's plus a ``"kga"`` entry (the basis, the snapshot history, the masks, the counters),
all tensors and plain values, so ``torch.load(weights_only=True)`` reads it and a run saved
and loaded into a fresh KGA continues bit for bit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..engine import ReducedOperator
from ..engine.operator import NEUTRAL
from ..errors import ParameterError
from .options import MASKS, KGAOptions

__all__ = ["KGA", "KGALog", "KGAOptions", "MASKS"]


def flat_params(params: Iterable[torch.Tensor]) -> np.ndarray:
    """θ as one float64 vector (the parameters flattened in order, copied to the host)."""
    return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in params]).cpu().numpy()


@torch.no_grad()
def write_flat(params: Iterable[torch.Tensor], values: np.ndarray, *, add: bool = False) -> None:
    """Write (``add``: add) the flat vector ``values`` into ``params``, in order, in each one's dtype and device."""
    offset = 0
    for p in params:
        k = p.numel()
        part = torch.from_numpy(values[offset : offset + k]).reshape(p.shape).to(device=p.device, dtype=p.dtype)
        if add:
            p.add_(part)
        else:
            p.copy_(part)
        offset += k


@dataclass
class KGALog:
    """What the accelerator did: per refit, the DMD time, stable modes and masked fraction."""

    refits: int = 0
    dmd_seconds: list[float] = field(default_factory=list)
    stable_modes: list[int] = field(default_factory=list)
    masked_fraction: list[float] = field(default_factory=list)
    accelerated_steps: int = 0
    diverged: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON view (plain numbers and lists; also what :meth:`KGA.state_dict` saves)."""
        return asdict(self)


class KGA(torch.optim.Optimizer):
    """Wrap a torch optimizer with Koopman-based gradient acceleration.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The base optimizer; KGA shares its ``param_groups`` (a scheduler's learning rate reaches it).
    params : iterable of tensors
        The parameters to accelerate (default the optimizer's, in a fixed order).
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
        window is short), "auto" the Gavish–Donoho threshold, an int at most that many (a
        window resolving fewer keeps what it has).
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
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ParameterError("optimizer", f"must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        options = KGAOptions(alpha=alpha, window=window, interval=interval, eps=eps, rank=rank, efficient=efficient,
                             project_step=project_step, mask=mask, mask_eps=mask_eps, mask_window=mask_window)
        # Optimizer.__init__ sets up the step hooks; its param_groups and state are the base optimizer's (below)
        super().__init__([p for g in optimizer.param_groups for p in g["params"]], dict(optimizer.defaults))
        self.__dict__.pop("_init_param_groups", None)
        self.__dict__.pop("_init_state", None)
        self.optimizer = optimizer
        self.options = options
        self.accelerated = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        self.n_params = sum(p.numel() for p in self.accelerated)
        # the weights' precision sets the DMD's singular-value floor (float32 weights: 1e-6·σ1)
        self._dtype = np.float64 if all(p.dtype == torch.float64 for p in self.accelerated) else np.float32
        self.log = KGALog()
        self._snapshots: deque[np.ndarray] = deque(maxlen=options.window)
        self._steps = 0
        self.basis: np.ndarray | None = None  # U restricted to the active weights, (n_active, r)
        self._propagator: np.ndarray | None = None  # Re(Q_S Λ_S L_S), (r, r)
        self.masked = np.zeros(self.n_params, dtype=bool)
        self._below = np.zeros(self.n_params, dtype=np.int64)
        self._active: np.ndarray = np.arange(self.n_params)
        self._snapshot()  # θ at the start

    # ------------------------------------------------------------------ the base optimizer's groups and state
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        base = self.__dict__.get("optimizer")
        return base.param_groups if base is not None else self.__dict__.setdefault("_init_param_groups", [])

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        base = self.__dict__.get("optimizer")
        if base is None:  # during Optimizer.__init__
            self.__dict__["_init_param_groups"] = groups
        else:
            base.param_groups = groups

    @property  # type: ignore[override]
    def state(self) -> Any:
        base = self.__dict__.get("optimizer")
        return base.state if base is not None else self.__dict__.get("_init_state")

    @state.setter
    def state(self, value: Any) -> None:
        base = self.__dict__.get("optimizer")
        if base is None:
            self.__dict__["_init_state"] = value
        else:
            base.state = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "optimizer" in self.__dict__:
            self.optimizer.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------ options as attributes
    @property
    def alpha(self) -> float:
        return self.options.alpha

    @property
    def window(self) -> int:
        return self.options.window

    @property
    def interval(self) -> str | int:
        return self.options.interval

    @property
    def eps(self) -> float:
        return self.options.eps

    # ------------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """The base optimizer's step, then the acceleration of its stable-mode component."""
        accelerate = self.options.alpha != 0 and self._propagator is not None
        before = self._flat() if accelerate else None
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        if accelerate:
            assert before is not None
            after = self._flat()
            after -= before
            delta = self._rows(after)
            if not np.isfinite(delta).all():
                # the base step left non-finite weights (training diverged): stop accelerating
                self._propagator = None
                self.log.diverged = True
            else:
                self._accelerate(delta)
        self._steps += 1
        if self.options.interval != "epoch":
            self._snapshot()
            if self._steps % int(self.options.interval) == 0:
                self.refit()
        return loss

    def _accelerate(self, delta: np.ndarray) -> None:
        assert self.basis is not None and self._propagator is not None
        u = self.basis
        coords = u.T @ delta
        extra = self.options.alpha * (u @ (self._propagator @ coords))
        change = (u @ coords + extra - delta) if self.options.project_step else extra
        if change.size == self.n_params:  # nothing masked
            update = change
        else:
            update = np.zeros(self.n_params)
            update[self._active] = change
        self._add(update)
        self.log.accelerated_steps += 1

    def epoch_end(self) -> None:
        """Mark an epoch's end: snapshot and refit for KGA-Epoch; masks advance per epoch."""
        if self.options.interval == "epoch":
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
        if self.options.efficient and self.basis is not None:
            # Efficient-KGA: U is fixed and the snapshots are z = Uᵀθ; the same exact DMD, on the r×t window z,
            # keeps every direction above the floor (U's rank was decided at the first fit) and its POD basis P
            # (r×k) carries the propagator back to U coordinates: Re(Q_S Λ_S L_S) with Q = P W, L = W⁻¹Pᵀ.
            z = np.stack(list(self._snapshots), axis=1)
            op = self._fit(z, rank="all")
            pod = z[:, :-1] @ op.modes_basis / op.singular_values[: op.rank]
            prop = pod @ _propagator(op.eigenvalues, op.right, op.left, self.options.eps) @ pod.T
        else:
            full = np.stack(list(self._snapshots), axis=1)  # (N, t)
            d = self._rows(full)
            op = self._fit(d)
            if self._update_masks(d, op):  # masked weights leave the DMD problem
                d = self._rows(full)
                op = self._fit(d)
            del full
            # POD basis U = X V Σ⁻¹; Ã = UᵀYVΣ⁻¹ is the operator in U coordinates, Ã W = W Λ
            self.basis = d[:, :-1] @ op.modes_basis / op.singular_values[: op.rank]
            prop = _propagator(op.eigenvalues, op.right, op.left, self.options.eps)
            if self.options.efficient:
                self._snapshots = deque((self.basis.T @ col for col in d.T), maxlen=self.options.window)
        eigenvalues = op.eigenvalues
        self._propagator = prop
        self.log.refits += 1
        self.log.dmd_seconds.append(time.perf_counter() - t0)
        self.log.stable_modes.append(int(np.count_nonzero(np.abs(eigenvalues) < 1 - self.options.eps)))
        self.log.masked_fraction.append(float(self.masked.mean()))

    def _fit(self, d: np.ndarray, rank: int | str | None = None) -> ReducedOperator:
        """DMD of the window (N×t, or r×t in U coordinates) through the one operator factory: the rank is the
        operator's rule (:func:`~traj.engine.truncation.truncate`) applied to ``rank`` (default the option; None
        keeps every direction above the floor), a fixed rank reduced to what the window resolves."""
        rank = self.options.rank if rank is None else rank
        # (no eigenvalue error estimate: KGA reads none, and it would cost another eigendecomposition's time)
        return ReducedOperator.from_gram(d.T @ d, rank="all" if rank is None else rank, n_features=d.shape[0],
                                         dtype=self._dtype, excess="reduce", estimate_errors=False)

    def _update_masks(self, d: np.ndarray, op: ReducedOperator) -> bool:
        """Advance the masks one interval; True when weights were newly masked."""
        kind = self.options.mask
        if kind == "none":
            return False
        active = self._active
        if kind == "norm":
            score = np.abs(d[:, -1])
        elif kind == "delta":
            score = np.abs(d[:, -1] - d[:, 0])
        else:  # KWM: the non-neutral part of each weight's reconstruction at the latest snapshot
            assert op.coefficients is not None and op.amplitudes is not None
            keep = np.array([c != NEUTRAL for c in op.classes(self.options.eps)])
            t_last = d.shape[1] - 1
            phi = d @ op.coefficients[:, keep]
            score = np.abs(phi @ (op.amplitudes[keep] * op.eigenvalues[keep] ** t_last))
        below = score < self.options.mask_eps
        self._below[active] = np.where(below, self._below[active] + 1, 0)
        newly = active[self._below[active] >= self.options.mask_window]
        if newly.size:
            self.masked[newly] = True
            self._active = np.flatnonzero(~self.masked)
        return bool(newly.size)

    # ------------------------------------------------------------------ saving and loading
    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict with a ``"kga"`` entry: options, history, basis, masks, counters.

        Every array is a CPU tensor, so ``torch.load(..., weights_only=True)`` reads it back.
        """
        state = self.optimizer.state_dict()
        state["kga"] = {
            "options": self.options.to_dict(),
            "steps": self._steps,
            "snapshots": [torch.from_numpy(np.array(s)) for s in self._snapshots],
            "basis": None if self.basis is None else torch.from_numpy(self.basis.copy()),
            "propagator": None if self._propagator is None else torch.from_numpy(self._propagator.copy()),
            "masked": torch.from_numpy(self.masked.copy()),
            "below": torch.from_numpy(self._below.copy()),
            "log": self.log.to_dict(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the base optimizer's state and KGA's (a plain optimizer's state
        dict restores the base optimizer and leaves KGA as it is)."""
        state = dict(state_dict)
        kga = state.pop("kga", None)
        masked = None if kga is None else kga["masked"].numpy().astype(bool)
        if masked is not None and masked.shape != (self.n_params,):  # checked before anything is loaded
            raise ParameterError("state_dict", f"holds KGA state for {masked.size} weights; this KGA accelerates "
                                               f"{self.n_params}")
        self.optimizer.load_state_dict(state)
        if kga is None or masked is None:
            return
        self.options = KGAOptions.checked(**kga["options"])
        self._steps = int(kga["steps"])
        self._snapshots = deque((s.numpy().copy() for s in kga["snapshots"]), maxlen=self.options.window)
        self.basis = None if kga["basis"] is None else kga["basis"].numpy().copy()
        self._propagator = None if kga["propagator"] is None else kga["propagator"].numpy().copy()
        self.masked = masked.copy()
        self._below = kga["below"].numpy().astype(np.int64)
        self._active = np.flatnonzero(~self.masked)
        self.log = KGALog(**kga["log"])

    # ------------------------------------------------------------------ flat parameter access
    def _flat(self) -> np.ndarray:
        return flat_params(self.accelerated)

    def _add(self, update: np.ndarray) -> None:
        write_flat(self.accelerated, update, add=True)

    def _rows(self, values: np.ndarray) -> np.ndarray:
        """The active weights' rows of ``values`` (N, ...): ``values`` itself while nothing is masked (no N-sized copy)."""
        return values if self._active.size == self.n_params else values[self._active]

    def _snapshot(self) -> None:
        theta = self._flat()
        if self.options.efficient and self.basis is not None:
            self._snapshots.append(self.basis.T @ self._rows(theta))
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
