from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def write_store(path, data, *, layout=None, dtype=None, chunk_bytes=2 << 20, steps=None, **append_kw):
    """Write a (T, N) array as a run store, one commit per 3 rows (exercises partial chunks)."""
    from traj.store import Layout, StoreWriter

    data = np.asarray(data)
    layout = layout or Layout.from_shapes([("w", (data.shape[1],))], prunable=["w"])
    dtype = dtype or data.dtype.name
    steps = range(data.shape[0]) if steps is None else steps
    with StoreWriter(path, layout, dtype=dtype, chunk_bytes=chunk_bytes) as writer:
        for k, (row, step) in enumerate(zip(data, steps, strict=True)):
            writer.append(row, step=step, epoch=k // 5, **append_kw)
            if k % 3 == 2:
                writer.commit()
    return path
