"""The options of ``traj dmd``, declared once (:mod:`traj.options`), and the cost model's constants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ...checks import check_float
from ...engine.truncation import rank_option
from ...errors import ParameterError
from ...options import Params, choice, custom, integer, number, seed, switch
from ..windows import Window, check_window

#: Most time delays of a Hankel DMD (``delays``): each one adds N coordinates to every snapshot.
MAX_DELAYS = 10_000
#: Above this many snapshots in a window, "auto" uses the randomized range finder (docs/methods.md §1.7).
MAX_GRAM_SNAPSHOTS = 20_001
#: Snapshots a forecast may reach past the window (the sampled coordinates only; r x K numbers).
MAX_FORECAST = 100_000
#: Power iterations of the randomized range finder (each one reads the data twice; Halko et al. use q <= 2-7).
MAX_POWER_ITERATIONS = 50
#: A window whose float64 copy is at most this is read into memory and decomposed by an SVD of the data.
IN_MEMORY_BYTES = 128 << 20
#: Sketch columns the randomized range finder adds to the rank (p).
OVERSAMPLES = 10
#: The cost model's machine: decoded bytes read per second (guarded, lz4; measured: 2.4 GB in 8 s)
#: and float64 flops per second of BLAS-3 (dsyrk: N·T² = 1.8e12 in 28 s on 2 cores).
READ_BYTES_PER_S = 300e6
FLOPS_PER_S = 60e9
#: The (T+1)² eigendecomposition (~9T³ flops) is BLAS-2 bound: eigh of 3001² took 37-46 s on this
#: machine under load (~6.6e9 flop/s), so it is charged at this rate, not FLOPS_PER_S.
EIGH_FLOPS_PER_S = 10e9
#: The range finder's thin products (a T×width block times width ≈ 32-136 columns) run far below dsyrk's
#: rate: 10-20e9 flop/s measured on this machine for widths 34-136 (tall-skinny GEMMs are memory bound).
SKETCH_FLOPS_PER_S = 15e9
#: Working memory a DMD may hold besides the streamed blocks. Measured on T = 10 001 x N = 50k: the
#: interpreter with numpy and zarr ~100 MiB, the engine's blocks at the default 64 MiB block ~400 MiB
#: (float32 bands read ahead, the float64 block, products), so a process stays within ~1 GiB.
#: "auto" takes the Gram path only where its (T+1)² matrices fit; the range finder's basis stays within it.
MEMORY_BYTES = 512 << 20
#: (T+1)² float64 matrices the Gram path holds at its peak: the Gram, its symmetrised copy, the
#: pairs' XᵀX and the eigendecomposition's eigenvectors and LAPACK dsyevd's 2T² workspace.
GRAM_COPIES = 5
#: T×width float64 matrices the range finder holds (basis, A·basis, their stacked copies, V).
SKETCH_COPIES = 6
#: Copies of the window's float64 (T+1)×N the svd path holds at its peak: the window itself, LAPACK's copy of
#: it, U and dgesdd's workspace. Measured (peak RSS) on 201 x 100 000: 2.3 copies beyond the window.
SVD_COPIES = 3.5
Method = Literal["auto", "gram", "randomized", "svd"]



def _layers(name: str, value: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(value) if value else None


@dataclass(frozen=True)
class DMDParams(Params):
    """The options of a DMD, each checked when the class is built (see :func:`~traj.analysis.dmd.dmd`)."""

    rank: int | str | None = rank_option("auto", help="Modes to keep: an integer, or 'auto' (Gavish–Donoho).")
    window: Window = custom(None, check_window, help="Snapshots a:b, both included (negative counts from the end).")
    layers: tuple[str, ...] | None = custom(None, _layers, help="Use only this parameter tensor (repeatable).")
    per_layer: bool = switch(help="Also decompose every layer on its own.")
    eps: float = number(0.01, low=0, help="Neutral class tolerance: 1-ε <= |λ| <= 1+ε.")
    forecast: int = integer(0, low=0, high=MAX_FORECAST,
                            help="Snapshots to forecast past the window (sampled weights).")
    n_samples: int = integer(6, low=1, high=1000,
                             help="Coordinates sampled (random_state) to show beside their reconstruction.")
    method: Method = choice("auto", ("auto", "gram", "randomized", "svd"),
                            help="auto (by a cost model; the JSON says which and why), gram, randomized (range finder) "
                                 "or svd (in memory).")
    drop_nonfinite: bool = switch(help="Skip NaN/Inf snapshots instead of refusing.")
    max_gram: int = integer(MAX_GRAM_SNAPSHOTS, low=3, help="Most snapshots in a window \"auto\" gives the Gram path.")
    n_iter: int = integer(4, low=0, high=MAX_POWER_ITERATIONS, help="Power iterations of the randomized method.")
    random_state: int = seed(0, help="Seed of the sampled coordinates and the range finder.")
    in_memory_bytes: int = integer(IN_MEMORY_BYTES, low=0, help="Largest float64 window \"auto\" reads into memory "
                                                                 "for an SVD of the data (0: never).")
    memory_bytes: int = integer(MEMORY_BYTES, low=1 << 20, help="Working memory the method may hold (bytes), the "
                                                                "budget of every path.")
    delays: int = integer(0, low=0, high=MAX_DELAYS, help="Time delays d (Hankel DMD): snapshots [θ_k; …; θ_k+d]. "
                                                          "PyDMD's HankelDMD(d=m) is --delays m-1.")

    def validate(self) -> None:
        if self.delays:  # a delay-embedded run is one Hankel trajectory, decomposed whole by its Gram or an SVD
            if self.per_layer or self.drop_nonfinite:
                raise ParameterError("per_layer" if self.per_layer else "drop_nonfinite",
                                     "cannot be given with delays")
            if self.method == "randomized":
                raise ParameterError("method", "randomized does not embed delays: use auto, gram or svd")


def memory_bytes(memory_mb: float) -> int:
    """Bytes of a memory budget given in MiB (``--memory-mb``): at least 1 MiB, finite."""
    return int(check_float("memory_bytes", memory_mb, low=1.0, high=float(1 << 30)) * (1 << 20))
