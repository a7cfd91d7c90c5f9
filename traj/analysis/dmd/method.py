"""How ``traj dmd`` picks its method: the cost model of docs/methods.md §1.7 (:func:`choose_method`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...engine.randomized import SKETCH_BLOCK
from ...errors import ParameterError
from .params import (
    EIGH_FLOPS_PER_S,
    FLOPS_PER_S,
    GRAM_COPIES,
    OVERSAMPLES,
    READ_BYTES_PER_S,
    SKETCH_COPIES,
    SKETCH_FLOPS_PER_S,
    SVD_COPIES,
    DMDParams,
)


@dataclass(frozen=True)
class MethodCost:
    """What one method would cost on a window: passes over the data, bytes and flops, and the time they predict."""

    method: str
    reads: int
    bytes: float
    flops: float
    eigh_flops: float = 0.0
    memory: float = 0.0
    flops_per_s: float = FLOPS_PER_S

    @property
    def seconds(self) -> float:
        return (self.reads * self.bytes / READ_BYTES_PER_S + self.flops / self.flops_per_s
                + self.eigh_flops / EIGH_FLOPS_PER_S)

    def describe(self) -> str:
        eigh = f" + {self.eigh_flops:.2g} eigh flop" if self.eigh_flops else ""
        return (f"{self.reads} read{'s' if self.reads != 1 else ''} of {self.bytes / 1e9:.3g} GB + "
                f"{self.flops:.2g} flop{eigh} ≈ {self.seconds:.3g} s, holding {self.memory / 2**20:.0f} MiB")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reads": self.reads, "bytes": self.bytes, "flops": self.flops,
                "eigh_flops": self.eigh_flops, "memory_bytes": self.memory, "seconds": self.seconds}


@dataclass(frozen=True)
class MethodChoice:
    """The method a DMD used, why, and the costs the choice compared."""

    method: str
    reason: str
    costs: tuple[MethodCost, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "costs": [c.to_dict() for c in self.costs]}


def method_costs(n_snapshots: int, n_features: int, itemsize: int, *, rank: int | str | None, n_iter: int,
                 randomized: bool = True) -> dict[str, MethodCost]:
    """The cost model of docs/methods.md §1.7 for a window of T+1 snapshots of N coordinates.

    gram: one read; the Gram N·T² flops (dsyrk) and its eigendecomposition ~9T³; it holds
    :data:`GRAM_COPIES` (T+1)² float64 matrices. randomized (rank r, q power iterations, p
    oversamples; rank "auto" sketches :data:`~traj.engine.randomized.SKETCH_BLOCK` columns per pass):
    q + 3 reads; each pass applies XᵀX to T×(r+p) columns, 4·N·T·(r+p) flops at the thin products'
    rate :data:`SKETCH_FLOPS_PER_S`; it holds a few T×(q+1)(r+p) matrices. svd: one read, an SVD of
    the N×T data ~4·N·T·k + 9k³ (k = min(N, T)), holding :data:`SVD_COPIES` copies of the window as float64
    (measured) and its T×k factor: no T² matrix, so a long window of few coordinates takes it.
    """
    t = n_snapshots
    data = float(t) * n_features * itemsize
    square = 8.0 * t * t
    thin = min(t, n_features)  # the thin SVD of the N×T data: factors T×k and k×N, k = min(N, T)
    costs = {"gram": MethodCost("gram", 1, data, float(n_features) * t * t, 9.0 * t**3, GRAM_COPIES * square),
             "svd": MethodCost("svd", 1, data, 4.0 * n_features * t * thin, 9.0 * float(thin) ** 3,
                               SVD_COPIES * 8.0 * t * n_features + 2 * 8.0 * t * thin)}
    if randomized:
        width = min(t - 1, rank + OVERSAMPLES if isinstance(rank, int) else SKETCH_BLOCK)
        costs["randomized"] = MethodCost("randomized", n_iter + 3, data, 4.0 * n_features * t * width * (n_iter + 3),
                                         memory=SKETCH_COPIES * 8.0 * t * min(t - 1, width * (n_iter + 1)),
                                         flops_per_s=SKETCH_FLOPS_PER_S)
    return costs


def choose_method(params: DMDParams, n_snapshots: int, n_features: int, itemsize: int) -> MethodChoice:
    """The method for a window (``params.method`` unless "auto"), and why (docs/methods.md §1.7).

    ``memory_bytes`` is the budget of every method (:func:`method_costs`'s ``memory``); ``in_memory_bytes`` is only
    auto's preference for the SVD path. "auto": a window whose float64 copy fits min(``in_memory_bytes``,
    ``memory_bytes``) takes "svd" (where all it holds fits ``memory_bytes``); otherwise the cheaper by
    :func:`method_costs` of "gram" (at most ``max_gram`` snapshots, and only where its (T+1)² matrices fit
    ``memory_bytes``) and "randomized" (neither ``per_layer`` nor ``drop_nonfinite``). Where neither the memory
    budget nor ``max_gram`` admits the Gram and the range finder cannot serve, the Gram is used and the reason says so.
    An explicit "svd" over ``memory_bytes`` is refused (:class:`ParameterError` on ``memory_bytes``: it would
    allocate it); an explicit "gram" or "randomized" over it runs, and the reason says it exceeds the budget.
    """
    rank = params.rank
    randomized_ok = not params.per_layer and not params.drop_nonfinite and not params.delays
    costs = method_costs(n_snapshots, n_features, itemsize, rank=rank, n_iter=params.n_iter, randomized=randomized_ok)
    in_memory = float(n_snapshots) * n_features * 8
    svd, budget = costs["svd"], params.memory_bytes
    if params.method != "auto":
        chosen = costs.get(params.method)
        if params.method == "svd" and svd.memory > budget:  # it would really allocate it: refuse
            raise ParameterError("memory_bytes", f"of {_mib(budget)} MiB is less than the svd method needs: "
                                                 f"{_mib(svd.memory)} MiB (the window as float64, "
                                                 f"{_mib(in_memory)} MiB, {SVD_COPIES:g} times at the SVD's peak, "
                                                 f"and its thin SVD factor); allow "
                                                 f"at least {math.ceil(svd.memory / 2**20)} MiB or use gram or randomized")
        why = "asked for" + (f": {chosen.describe()}" if chosen else "")
        if chosen is not None and chosen.memory > budget:
            why += (f"; this exceeds the memory budget of {_mib(budget)} MiB: run only because "
                    f"{params.method} was asked for explicitly")
        return MethodChoice(params.method, why, tuple(costs.values()))
    # auto prefers an SVD of the data (its accuracy) for a window whose float64 copy fits in_memory_bytes, and
    # only where everything the SVD holds fits the hard budget memory_bytes
    if in_memory <= min(params.in_memory_bytes, budget) and svd.memory <= budget:
        return MethodChoice("svd", f"the window fits in memory ({in_memory / 2**20:.3g} MiB as float64 ≤ "
                                   f"{min(params.in_memory_bytes, budget) / 2**20:.0f} MiB): one read and an SVD of the "
                                   f"data, whose accuracy is an SVD's ({svd.describe()})", tuple(costs.values()))
    gram_ok = n_snapshots <= params.max_gram
    gram = costs["gram"]
    gram_fits = gram.memory <= budget
    over = (f"the Gram path would hold {gram.memory / 2**20:.0f} MiB, over the memory budget of "
            f"{budget / 2**20:.0f} MiB")
    compared = [c for c in costs.values() if c.method == "randomized" or
                (c.method == "gram" and gram_ok and (gram_fits or not randomized_ok))]
    shown = tuple(c for c in costs.values() if c.method != "svd")
    if not compared:
        raise ParameterError("per_layer" if params.per_layer else "drop_nonfinite",
                             f"needs the Gram method (windows of at most {params.max_gram} snapshots)")
    best = min(compared, key=lambda c: c.seconds)
    others = [c for c in compared if c is not best]
    if others:
        why = f"{best.describe()}, cheaper than {others[0].method}: {others[0].describe()}"
    elif best.method == "gram":
        why = f"{best.describe()}; randomized does not do per_layer or drop_nonfinite"
        if not gram_fits:
            why += f" ({over})"
    elif not gram_ok:
        why = f"{best.describe()}; the window holds {n_snapshots} snapshots, too many for a Gram (max {params.max_gram})"
    else:
        why = f"{best.describe()}; {over} (gram: {gram.describe()})"
    if best.method == "randomized" and not isinstance(rank, int):
        why += ("; rank auto by Gavish–Donoho's known-noise threshold with the noise level from the energy outside "
                "the sketch (tr XᵀX − Σ kept σ²)")
    return MethodChoice(best.method, why, shown)


def _mib(n_bytes: float) -> str:
    """Bytes as MiB for a message: whole MiB, two decimals below 10 MiB (1.22, not 1)."""
    return f"{n_bytes / 2**20:.0f}" if n_bytes >= 10 << 20 else f"{n_bytes / 2**20:.2f}"

