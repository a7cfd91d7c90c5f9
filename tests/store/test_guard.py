"""The guarded store's pieces: codec bounds against real encoders, header parsing, and a property
test that whatever an array's zarr.json holds, opening the store raises a TrajError or succeeds."""

from __future__ import annotations

import json
import shutil

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_store
from traj.errors import DamagedStoreError, TrajError
from traj.store import RunStore
from traj.store.guard import ArraySpec, _zstd_content_size


@pytest.mark.parametrize("shape", [(1, 14), (256, 40), (4096,), (3, 100_000)])
@pytest.mark.parametrize("codec", ["blosc", "zstd", "bytes"])
def test_real_encodings_pass_and_stay_within_the_bound(shape, codec, rng):
    """Incompressible data is the worst case for the stored size; every real encoding passes the check."""
    spec = ArraySpec("a", shape, shape, np.dtype("float32"), codec)
    data = rng.standard_normal(shape).astype(np.float32)
    encoded = {
        "blosc": lambda: numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE).encode(data),
        "zstd": lambda: numcodecs.Zstd(level=3).encode(data),
        "bytes": lambda: data.tobytes(),
    }[codec]()
    assert len(encoded) <= spec.max_stored_bytes
    spec.check_chunk(encoded, "here")
    smaller = ArraySpec("a", shape, tuple(max(1, s // 2) for s in shape), np.dtype("float32"), codec)
    with pytest.raises(DamagedStoreError, match="here"):  # the same bytes for a smaller chunk shape
        smaller.check_chunk(encoded, "here")


def test_zstd_frame_content_size_is_read_from_the_header():
    for n in (1, 255, 256, 65_791, 65_792, 1 << 20):  # 1-, 2- (+256) and 4-byte content-size fields
        assert _zstd_content_size(numcodecs.Zstd(level=1).encode(np.zeros(n, np.uint8))) == n
    assert _zstd_content_size(b"\x28\xb5\x2f\xfd\x00\x58" + bytes(10)) is None  # no content size
    assert _zstd_content_size(b"not zstd at all") is None


def _store(tmp_path):
    rng = np.random.default_rng(0)
    return write_store(tmp_path / "s.zarr", np.cumsum(rng.standard_normal((6, 10)), axis=0).astype(np.float32), loss=1.0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(["shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
                          "zarr_format", "node_type", "storage_transformers", "attributes", "dimension_names"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=st.sampled_from(["params", "step", "epoch", "time", "loss"]),
       changes=st.dictionaries(fields, json_values, min_size=1, max_size=3))
def test_any_array_metadata_opens_or_raises_a_traj_error(tmp_path_factory, array, changes):
    tmp = tmp_path_factory.mktemp("meta")
    path = _store(tmp)
    meta_path = path / array / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))
    try:
        store = RunStore(path)
        store.read()
    except TrajError as exc:
        assert "\n" not in str(exc)
    shutil.rmtree(tmp)
