"""``traj dmd --save-modes``: the N×r exact DMD modes Φ = D C written to ``modes.zarr`` (a second pass)."""

from __future__ import annotations

import os

from ...engine import Engine
from ...errors import NotApplicableError
from ...progress import Progress
from ...store import RunStore
from .result import DMDResult, complex_pairs


def save_modes(result: DMDResult, store: RunStore, path: str | os.PathLike[str], *, engine: Engine | None = None,
               progress: Progress | None = None) -> str:
    """Write the N×r exact DMD modes Φ = D C to a Zarr array at ``path`` (a second pass); read it back with
    :func:`traj.store.derived.read_modes`."""
    from ...store.derived import create_modes

    engine = engine or Engine()
    coefficients = result.operator.coefficients
    if coefficients is None:
        raise NotApplicableError("this operator has no modes over the store's coordinates")
    lo, hi = result.window
    entries = store.layout.select(result.layers) if result.layers else list(store.layout.entries)
    n = sum(e.size for e in entries)
    r = result.rank
    chunk_rows = max(1, min(n, (8 << 20) // (16 * r)))
    modes = create_modes(path, (n, r), (chunk_rows, r), {
        "eigenvalues": complex_pairs(result.eigenvalues), "window": list(result.window),
        "layers": list(result.layers) if result.layers else None, "store": result.store})
    offset = 0
    for e in entries:
        # with delays Φ's delay-0 block: C spans the first T+1-d snapshots
        for cols, part in engine.project_blocks(store, coefficients, rows=slice(lo, lo + coefficients.shape[0]),
                                                columns=e.columns,
                                                progress=progress):
            a = offset + cols.start - e.offset
            modes[a : a + part.shape[0]] = part
        offset += e.size
    return str(path)

