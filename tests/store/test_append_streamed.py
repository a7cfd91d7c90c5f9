import numpy as np
import pytest

from traj.errors import LayoutMismatchError
from traj.store import Layout, RunStore, StoreWriter


def _pieces(row, widths):
    at = 0
    for w in widths:
        yield row[at : at + w]
        at += w


# rows over several one-row shards; rows stacked in one shard; version 1: rows over several one-row chunks
LAYOUTS = {"row-shards": {"stack_bytes": 1, "chunk_bytes": 256, "shard_chunks": 2}, "stacked": {},
           "v1-row-chunks": {"format_version": 1, "chunk_bytes": 64}}


@pytest.mark.parametrize("layout_kw", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_streamed_rows_equal_appended_rows(tmp_path, rng, layout_kw):
    data = rng.standard_normal((5, 1000)).astype(np.float32)
    layout = Layout.from_shapes([("w", (1000,))])
    with StoreWriter(tmp_path / "s.zarr", layout, **layout_kw) as writer:
        writer.append(data[0], step=0, loss=1.0)  # buffered, committed by the streamed row that follows
        writer.append_streamed(_pieces(data[1], [7, 300, 0, 693]), step=5, epoch=1, loss=0.5, metrics={"acc": 0.25})
        writer.append_streamed(iter([data[2]]), step=6)
        writer.append(data[3], step=9)
        writer.append_streamed(_pieces(data[4].astype(np.float64), [999, 1]), step=12, metrics={"acc": 0.75})
    store = RunStore(tmp_path / "s.zarr")
    assert (store.chunks[0] == 1) == (layout_kw != {})
    assert (store.shards is None) == ("format_version" in layout_kw)
    assert store.read().tobytes() == data.tobytes()
    np.testing.assert_array_equal(store.steps, [0, 5, 6, 9, 12])
    np.testing.assert_array_equal(store.epochs, [-1, 1, -1, -1, -1])
    np.testing.assert_array_equal(store.loss, [1.0, 0.5, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(store.metric("acc"), [np.nan, 0.25, np.nan, np.nan, 0.75])


@pytest.mark.parametrize("widths, message", [([600, 300], "has 900 values"), ([600, 600], "more than the 1000")])
def test_a_short_or_long_streamed_row_is_not_committed(tmp_path, rng, widths, message):
    row = rng.standard_normal(1200).astype(np.float32)
    layout = Layout.from_shapes([("w", (1000,))])
    with StoreWriter(tmp_path / "s.zarr", layout, **LAYOUTS["row-shards"]) as writer:
        writer.append_streamed(iter([row[:1000]]), step=0)
        with pytest.raises(LayoutMismatchError, match=message):
            writer.append_streamed(_pieces(row, widths), step=1)
        assert writer.n_snapshots == 1
        writer.append_streamed(iter([row[200:1200]]), step=1)
    store = RunStore(tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.steps, [0, 1])
    assert store.read().tobytes() == np.stack([row[:1000], row[200:1200]]).tobytes()
