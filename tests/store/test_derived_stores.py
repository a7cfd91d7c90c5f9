"""cmd.zarr, masks.zarr and modes.zarr are read through the guard (issue 27): each file as traj writes it reads
back equal to what was computed; every damaged or hostile variant (wrong dtype, wrong shape, missing array,
truncated or linked chunk, a shape edited to billions, garbage attributes, not the file at all) is refused with
one typed line, before anything of the declared size is allocated.

Each case is built from one valid file written by the real writer (the control), so a refusal is the damage's doing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.conftest import planted_modes, write_store
from traj.analysis.cmd import cmd, load
from traj.analysis.dmd import dmd, save_modes
from traj.analysis.masks import load_mask, read_masks, write_masks
from traj.analysis.prune import prune
from traj.errors import DamagedStoreError, ModelFormatError, ParameterError, StoreFormatError, TrajError
from traj.store import Layout, RunStore
from traj.store.derived import CMD, EVERY_CHUNK, MASKS, MODES, DerivedFile, read_cmd_model, read_modes, write_attrs

GiB = 1 << 30
HUGE = 3_200_000_000


# ---------------------------------------------------------------------- the three files, as traj writes them
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One valid file of each kind and what it must read back as."""
    root = tmp_path_factory.mktemp("derived")
    rng = np.random.default_rng(0)
    # CMD: 4 planted modes over 600 weights
    data, *_ = planted_modes(n_params=600, n_snapshots=16, n_modes=4)
    store = RunStore(write_store(root / "cmd-run.zarr", data))
    fitted = cmd(store, modes=4, out=root / "cmd.zarr")
    # DMD modes of a random walk
    walk = np.cumsum(rng.standard_normal((14, 90)), axis=0)
    walk_store = RunStore(write_store(root / "walk.zarr", walk, chunk_bytes=400))
    dmd_result = dmd(walk_store, rank=4)
    save_modes(dmd_result, walk_store, root / "modes.zarr")
    # masks of a two-tensor model (a prunable weight and a bias that is always kept)
    layout = Layout.from_shapes([("lin.weight", (6, 10)), ("lin.bias", (6,))], prunable=["lin.weight"])
    steps = np.cumsum(rng.standard_normal((10, 66)) * 0.1, axis=0) + rng.standard_normal(66)
    prune_store = RunStore(write_store(root / "prune-run.zarr", steps, layout=layout))
    pruned = prune(prune_store, window="0:9", methods=["kmp", "gmp"], compressions=[2, 4], evaluate=False, seeds=1)
    write_masks(pruned, root / "masks.zarr", layout)
    expected = {
        "cmd": fitted.model,
        "modes": (walk[:14].T @ dmd_result.operator.coefficients, dmd_result.eigenvalues),
        "masks": {m: {c: pruned.mask(m, float(c)) for c in ("2", "4")} for m in ("kmp", "gmp")},
    }
    return root, expected


def copy_of(files, tmp_path: Path, kind: str) -> Path:
    root, _ = files
    target = tmp_path / f"{kind}.zarr"
    shutil.copytree(root / f"{kind}.zarr", target, symlinks=True)
    return target


def read(kind: str, path: Path) -> object:
    """What a user calls to read the file."""
    if kind == "cmd":
        return load(path)
    if kind == "modes":
        return read_modes(path).read()
    return load_mask(path, "kmp", 4)


def test_each_file_reads_back_what_was_computed(files):
    root, expected = files
    model = load(root / "cmd.zarr")
    fitted = expected["cmd"]
    np.testing.assert_array_equal(model.labels, np.asarray(fitted.labels[:]))
    np.testing.assert_array_equal(model.a, np.asarray(fitted.a[:]))
    np.testing.assert_array_equal(model.references, fitted.references)
    np.testing.assert_allclose(model.reconstruct_snapshot(3), fitted.reconstruct_snapshot(3), rtol=1e-12)
    modes, eigenvalues = expected["modes"]
    saved = read_modes(root / "modes.zarr")
    assert saved.shape == (90, 4) and saved.window == (0, 13) and saved.layers is None
    np.testing.assert_array_equal(saved.eigenvalues, eigenvalues)
    np.testing.assert_allclose(saved.read(), modes, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(saved.read(slice(10, 20)), modes[10:20], rtol=1e-10, atol=1e-12)
    back = read_masks(root / "masks.zarr")
    assert {m: sorted(v) for m, v in back.items()} == {"kmp": ["2", "4"], "gmp": ["2", "4"]}
    for m, by_c in expected["masks"].items():
        for c, mask in by_c.items():
            np.testing.assert_array_equal(back[m][c], mask)
    mask, layout, prunable = load_mask(root / "masks.zarr", "kmp", 4)
    assert layout.n_params == 66 and int(prunable.sum()) == 60 and int(mask[prunable].sum()) == 15  # ⌈60/4⌉ kept


def test_each_file_carries_its_marker_and_every_chunk(files):
    root, _ = files
    for schema, name in ((CMD, "cmd.zarr"), (MASKS, "masks.zarr"), (MODES, "modes.zarr")):
        attrs = json.loads((root / name / "zarr.json").read_text())["attributes"]
        assert attrs["traj"] == {"format": schema.format, "version": 1}
    # fill-valued chunks are written too: modes.zarr of 90 x 4 complex in chunks of (rows, 4)
    spec = DerivedFile(root / "modes.zarr", MODES).spec("")
    assert len(list((root / "modes.zarr" / "c").iterdir())) == -(-90 // spec.chunks[0])


# ---------------------------------------------------------------------- damage
def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def array_json(kind: str, s: Path) -> Path:
    return {"cmd": s / "labels" / "zarr.json", "modes": s / "zarr.json", "masks": s / "kmp" / "c4" / "zarr.json"}[kind]


def a_chunk(kind: str, s: Path) -> Path:
    folder = {"cmd": s / "labels" / "c", "modes": s / "c", "masks": s / "kmp" / "c4" / "c"}[kind]
    return sorted(p for p in folder.rglob("*") if p.is_file())[0]


def wrong_dtype(kind: str, s: Path) -> None:
    edit_json(array_json(kind, s), lambda m: m.update(data_type={"cmd": "int64", "modes": "float64",
                                                                  "masks": "uint8"}[kind]))


def wrong_shape(kind: str, s: Path) -> None:
    """One value fewer along N (modes.zarr: one mode fewer than its eigenvalues)."""
    if kind == "modes":
        edit_json(array_json(kind, s), lambda m: m.update(shape=[m["shape"][0], m["shape"][1] - 1]))
    else:
        edit_json(array_json(kind, s), lambda m: m.update(shape=[m["shape"][0] - 1]))


def missing_array(kind: str, s: Path) -> None:
    if kind == "modes":
        (s / "zarr.json").unlink()
    else:
        shutil.rmtree(array_json(kind, s).parent)


def truncated_chunk(kind: str, s: Path) -> None:
    chunk = a_chunk(kind, s)
    chunk.write_bytes(chunk.read_bytes()[: max(1, chunk.stat().st_size // 2)])


def corrupt_header(kind: str, s: Path) -> None:
    """The codec's header overwritten (Blosc: its sizes; zstd: its magic number), the rest of the chunk kept."""
    chunk = a_chunk(kind, s)
    data = bytearray(chunk.read_bytes())
    data[:16] = b"\xff" * 16
    chunk.write_bytes(bytes(data))


def chunk_links_out(kind: str, s: Path) -> None:
    chunk = a_chunk(kind, s)
    outside = s.parent / f"outside-{kind}"
    outside.write_bytes(chunk.read_bytes())  # the same bytes: only the link is wrong
    chunk.unlink()
    chunk.symlink_to(outside)


def folder_links_out(kind: str, s: Path) -> None:
    folder = a_chunk(kind, s).parent
    outside = s.parent / f"outside-{kind}-folder"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)


def garbage_attrs(kind: str, s: Path) -> None:
    key = {"cmd": "reference_samples", "modes": "eigenvalues", "masks": "window"}[kind]
    edit_json(s / "zarr.json", lambda m: m["attributes"].update({key: "garbage"}))


def attrs_not_an_object(kind: str, s: Path) -> None:
    edit_json(s / "zarr.json", lambda m: m.update(attributes=[1, 2, 3]))


def zarr_json_not_json(kind: str, s: Path) -> None:
    (s / "zarr.json").write_bytes(b"\x00\xff{{{ not json")


def future_version(kind: str, s: Path) -> None:
    edit_json(s / "zarr.json", lambda m: m["attributes"]["traj"].update(version=2))


def no_marker(kind: str, s: Path) -> None:
    edit_json(s / "zarr.json", lambda m: m["attributes"].pop("traj"))


def a_plain_file(kind: str, s: Path) -> None:
    shutil.rmtree(s)
    s.write_text("hello")


def a_run_store(kind: str, s: Path) -> None:
    shutil.rmtree(s)
    write_store(s, np.zeros((4, 8), dtype=np.float32))


CASES: dict[str, tuple[Callable[[str, Path], None], dict[str, tuple[type[Exception], str]]]] = {
    "wrong dtype": (wrong_dtype, {"cmd": (DamagedStoreError, "data type 'int64', expected int32"),
                                  "modes": (DamagedStoreError, "data type 'float64', expected complex128"),
                                  "masks": (DamagedStoreError, "data type 'uint8', expected bool")}),
    "wrong shape": (wrong_shape, {"cmd": (ModelFormatError, "'a' declares shape [600], 'labels' has 599"),
                                  "modes": (StoreFormatError, "'modes' declares shape [90, 3], its 'eigenvalues' "
                                                              "attribute has 4"),
                                  "masks": (StoreFormatError, "'kmp/c4' declares shape [65], its layout has 66")}),
    "missing array": (missing_array, {"cmd": (ModelFormatError, "has no array 'labels'"),
                                      "modes": (StoreFormatError, "not a modes.zarr written by traj dmd --save-modes "
                                                                  "(no zarr.json)"),
                                      "masks": (ParameterError, "has no kmp mask at compression 4 (it has gmp at c = 2, "
                                                                "4; kmp at c = 2)")}),
    "truncated chunk": (truncated_chunk, {k: (DamagedStoreError, "") for k in ("cmd", "modes", "masks")}),
    "corrupt header": (corrupt_header, {"cmd": (DamagedStoreError, "the Blosc header declares"),
                                        "modes": (DamagedStoreError, "not a zstd frame"),
                                        "masks": (DamagedStoreError, "not a zstd frame")}),
    "chunk links out": (chunk_links_out, {k: (DamagedStoreError, "a symbolic link") for k in ("cmd", "modes", "masks")}),
    "folder links out": (folder_links_out, {k: (DamagedStoreError, "leads outside the store")
                                            for k in ("cmd", "modes", "masks")}),
    "garbage attrs": (garbage_attrs, {"cmd": (DamagedStoreError, "'reference_samples' attribute holds a JSON string, "
                                                                 "not a list of integers"),
                                      "modes": (DamagedStoreError, "'eigenvalues' attribute holds a JSON string"),
                                      "masks": (DamagedStoreError, "'window' attribute holds a JSON string, not two "
                                                                   "integers")}),
    "attrs not an object": (attrs_not_an_object, {k: (DamagedStoreError, "the attributes are a JSON array")
                                                  for k in ("cmd", "modes", "masks")}),
    "zarr.json not json": (zarr_json_not_json, {k: (DamagedStoreError, "zarr.json is not valid JSON")
                                                for k in ("cmd", "modes", "masks")}),
    "future version": (future_version, {"cmd": (ModelFormatError, "traj-cmd format version 2; this traj reads "
                                                                  "version 1"),
                                        "modes": (StoreFormatError, "traj-modes format version 2"),
                                        "masks": (StoreFormatError, "traj-masks format version 2")}),
    "no marker": (no_marker, {"cmd": (ModelFormatError, "not a CMD model written by traj cmd"),
                              "modes": (StoreFormatError, "not a modes.zarr written by traj dmd --save-modes"),
                              "masks": (StoreFormatError, "not a masks.zarr written by traj prune")}),
    "a plain file": (a_plain_file, {"cmd": (ModelFormatError, "(not a folder)"),
                                    "modes": (StoreFormatError, "(not a folder)"),
                                    "masks": (StoreFormatError, "(not a folder)")}),
    "a run store": (a_run_store, {"cmd": (ModelFormatError, "not a CMD model written by traj cmd"),
                                  "modes": (StoreFormatError, "(zarr.json describes no Zarr v3 array)"),
                                  "masks": (StoreFormatError, "not a masks.zarr written by traj prune")}),
}


@pytest.mark.parametrize("kind", ["cmd", "modes", "masks"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_file_is_one_typed_line(files, tmp_path, case, kind):
    path = copy_of(files, tmp_path, kind)
    read(kind, path)  # the control: the untouched copy reads
    damage, expected = CASES[case]
    error, text = expected[kind]
    damage(kind, path)
    with pytest.raises(TrajError) as caught:
        read(kind, path)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert text in message and "\n" not in message and len(message) < 400, message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ModelFormatError, match="no such CMD model"):
        load(tmp_path / "nothing.zarr")
    with pytest.raises(StoreFormatError, match="no such masks.zarr"):
        load_mask(tmp_path / "nothing.zarr", "kmp", 2)
    with pytest.raises(StoreFormatError, match="no such modes.zarr"):
        read_modes(tmp_path / "nothing.zarr")


def test_a_cmd_model_whose_labels_name_no_reference_is_refused(files, tmp_path):
    path = copy_of(files, tmp_path, "cmd")
    labels = zarr.open_array(str(path / "labels"), mode="r+")
    labels[5] = 4  # the model has references 0..3
    with pytest.raises(DamagedStoreError, match=r"'labels' holds mode 4, the model has 4 references \(0 to 3\)"):
        load(path)


def test_a_cmd_model_whose_steps_disagree_with_its_references_is_refused(files, tmp_path):
    path = copy_of(files, tmp_path, "cmd")
    group = zarr.open_group(str(path), mode="r+")
    del group["steps"]
    group.create_array("steps", data=np.arange(3, dtype=np.int64))
    with pytest.raises(ModelFormatError, match=r"'steps' declares shape \[3\], 'references' has 16"):
        read_cmd_model(path)


def _blocked(*_: object) -> None:
    raise TimeoutError("blocked on a FIFO")


def test_a_fifo_chunk_is_refused_not_waited_on(files, tmp_path):
    for kind in ("cmd", "modes", "masks"):
        path = copy_of(files, tmp_path, kind)
        chunk = a_chunk(kind, path)
        chunk.unlink()
        os.mkfifo(chunk)
        signal.signal(signal.SIGALRM, _blocked)
        signal.alarm(20)
        try:
            with pytest.raises(DamagedStoreError, match="not a regular file"):
                read(kind, path)
        finally:
            signal.alarm(0)


# ---------------------------------------------------------------------- declared sizes that no file backs
def run_python(code: str, *, address_space: int = 2 * GiB, timeout: float = 120) -> str:
    """stdout and stderr of ``python -c CODE`` under an address-space limit (a regression fails, never takes the
    machine)."""
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))\n"
    done = subprocess.run([sys.executable, "-c", limit + code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return done.stdout + done.stderr


def huge_cmd(s: Path) -> None:
    for name in ("labels", "a", "b"):  # consistent with each other: only the chunk files can tell
        edit_json(s / name / "zarr.json", lambda m: m.update(shape=[HUGE]))


def huge_modes(s: Path) -> None:
    edit_json(s / "zarr.json", lambda m: m.update(shape=[HUGE, m["shape"][1]]))


def huge_masks(s: Path) -> None:
    layout = [{"name": "lin.weight", "shape": [HUGE], "offset": 0, "prunable": True}]
    edit_json(s / "zarr.json", lambda m: m["attributes"].update(layout=layout))
    for array in ("prunable", "kmp/c2", "kmp/c4", "gmp/c2", "gmp/c4"):
        edit_json(s / array / "zarr.json", lambda m: m.update(shape=[HUGE]))


@pytest.mark.parametrize(("kind", "edit", "call"), [
    ("cmd", huge_cmd, "from traj.analysis.cmd import load; load(PATH)"),
    ("modes", huge_modes, "from traj.store.derived import read_modes; read_modes(PATH).read()"),
    ("masks", huge_masks, "from traj.analysis.masks import load_mask; load_mask(PATH, 'kmp', 4)"),
])
def test_a_shape_edited_to_billions_is_refused_before_allocating(files, tmp_path, kind, edit, call):
    path = copy_of(files, tmp_path, kind)
    edit(path)
    code = (f"PATH = {str(path)!r}\ntry:\n    " + call.replace("; ", "\n    ")
            + "\nexcept Exception as e:\n    print(type(e).__name__, e)\nelse:\n    print('read')")
    output = run_python(code)
    assert output.startswith("DamagedStoreError") and f"declares {HUGE} rows" in output and "has no file" in output, \
        output[-2000:]


def test_a_file_of_an_older_writer_without_fill_chunks_still_reads(tmp_path, monkeypatch):
    """Writers before issue 27 skipped chunks holding only the fill value (labels all 0 where M = 1): a chunk another
    array over the same N holds backs the shape."""
    import traj.store.derived as derived

    monkeypatch.setattr(derived, "SMALL_ARRAY_BYTES", 0)  # check the backing of every array
    path = tmp_path / "cmd.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("labels", shape=(12,), chunks=(4,), dtype="int32")[:] = 0  # no chunk file written
    for name in ("a", "b"):
        group.create_array(name, shape=(12,), chunks=(4,), dtype="float64", config=dict(EVERY_CHUNK))[:] = 1.5
    group.create_array("references", data=np.ones((1, 3)))
    group.create_array("steps", data=np.arange(3, dtype=np.int64))
    write_attrs(group, CMD, {"reference_samples": [0]})
    assert not (path / "labels" / "c").exists()
    model = load(path)
    np.testing.assert_array_equal(model.reconstruct_snapshot(0), np.full(12, 3.0))
    shutil.rmtree(path / "b" / "c")
    for chunk in (path / "a" / "c").iterdir():
        if chunk.name == "2":
            chunk.unlink()
    with pytest.raises(DamagedStoreError, match=r"'labels' declares 12 rows in 3 chunk\(s\), but chunk 2 has no file"):
        load(path)
