import pytest

from traj.errors import LayoutMismatchError, StoreFormatError
from traj.store import Layout
from traj.store.schema import choose_chunks


def test_layout_offsets_and_round_trip():
    layout = Layout.from_shapes([("a.weight", (3, 4)), ("a.bias", (3,)), ("b.weight", (2, 3))], prunable=["a.weight", "b.weight"])
    assert [e.offset for e in layout.entries] == [0, 12, 15]
    assert layout.n_params == 21
    assert layout["b.weight"].columns == slice(15, 21)
    assert [e.name for e in layout.prunable_entries] == ["a.weight", "b.weight"]
    assert Layout.from_attrs(layout.to_attrs()) == layout


@pytest.mark.parametrize(
    "raw, message",
    [
        (None, "missing"),
        ([], "missing"),
        ([{"name": "a", "shape": [2], "offset": 1}], "offset"),
        ([{"name": "a", "shape": [2], "offset": 0, "size": 3}], "size"),
        ([{"name": "a", "shape": [-1], "offset": 0}], "invalid shape"),
        ([{"shape": [2], "offset": 0}], "lacks"),
        ([{"name": "a", "shape": [2], "offset": 0}, {"name": "a", "shape": [2], "offset": 2}], "twice"),
    ],
)
def test_layout_from_bad_attrs(raw, message):
    with pytest.raises(StoreFormatError, match=message):
        Layout.from_attrs(raw)


def test_layout_mismatch_names_the_difference():
    a = Layout.from_shapes([("w", (3, 4)), ("b", (3,))])
    with pytest.raises(LayoutMismatchError, match=r"'w' has shape \[4, 3\]"):
        Layout.from_shapes([("w", (4, 3)), ("b", (3,))]).check_same(a)
    with pytest.raises(LayoutMismatchError, match="'v' where the store has 'w'"):
        Layout.from_shapes([("v", (3, 4)), ("b", (3,))]).check_same(a)
    with pytest.raises(LayoutMismatchError, match="3 parameter tensors"):
        Layout.from_shapes([("w", (3, 4)), ("b", (3,)), ("c", (1,))]).check_same(a)


@pytest.mark.parametrize("n, itemsize, expected", [(100, 4, (256, 100)), (10_000, 4, (26, 10_000)), (1_000_000, 4, (1, 250_000)), (1_000_001, 4, (1, 250_001)), (3_000_000, 4, (1, 250_000))])
def test_choose_chunks(n, itemsize, expected):
    assert choose_chunks(n, itemsize) == expected
    t, w = choose_chunks(n, itemsize)
    assert t * w * itemsize <= 1 << 20 or t == 1
