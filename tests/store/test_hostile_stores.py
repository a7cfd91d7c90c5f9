"""A corpus of damaged and hostile stores (issue 12): every command that reads a store answers
with exit 2 and one ``error:`` line, no traceback, nothing written outside ``--out`` (and no
``--out`` left behind), the store untouched; the memory bombs and the FIFO run in a child with
an address-space limit and a timeout, and its peak RSS is measured.

Each case is built programmatically from one small, valid store; the valid store itself passes
every command (the control), so a refusal is the damage's doing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app
from traj.store import RunStore

runner = CliRunner()
GiB = 1 << 30


# ---------------------------------------------------------------------- building the corpus
def base_store(path: Path) -> Path:
    """12 snapshots x 40 parameters in format version 1, chunks (1, 14): 36 params chunk files, loss and one metric."""
    rng = np.random.default_rng(0)
    data = np.cumsum(rng.standard_normal((12, 40)), axis=0).astype(np.float32)
    write_store(path, data, chunk_bytes=64, format_version=1, loss=0.5, metrics={"acc": 0.9})
    (path / ".traj-writer.lock").unlink(missing_ok=True)
    return path


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def meta(array: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda s: edit_json(s / array / "zarr.json", change)


def setter(**fields) -> Callable[[dict], None]:
    return lambda m: m.update(fields)


def chunk_file(s: Path, array: str) -> Path:
    """The chunk of ``array`` that holds the last snapshot (every command reads it; prune reads only the last epoch)."""
    c = s / array / "c"
    return c / "11" / "0" if array in ("params", "grads") else c / "0"


def replace_chunk(array: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(s: Path) -> None:
        target = chunk_file(s, array)
        target.unlink()
        make(target)
    return apply


def write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def blosc_header(change: Callable[[bytearray], None]) -> Callable[[Path], None]:
    """Rewrite a field of a real chunk's Blosc header (bytes 4..16: nbytes, blocksize, cbytes)."""
    def apply(p: Path) -> None:
        data = bytearray(p.read_bytes())
        change(data)
        p.write_bytes(bytes(data))
    return apply


def patch_chunk(array: str, change: Callable[[bytearray], None]) -> Callable[[Path], None]:
    return lambda s: blosc_header(change)(chunk_file(s, array))


def put_u32(offset: int, value: int) -> Callable[[bytearray], None]:
    def change(data: bytearray) -> None:
        data[offset : offset + 4] = value.to_bytes(4, "little")
    return change


_BOMB: dict[str, bytes] = {}


def blosc_bomb() -> bytes:
    """A real Blosc stream (zstd inside) of 117 KB that decodes to 2 GiB of zeros."""
    if "blosc" not in _BOMB:
        import numcodecs

        _BOMB["blosc"] = numcodecs.Blosc(cname="zstd", clevel=9, shuffle=0).encode(np.zeros(2 * GiB - 64, np.uint8))
    return _BOMB["blosc"]


def zstd_bomb() -> bytes:
    """A zstd frame that declares (and decodes to) 512 MiB."""
    if "zstd" not in _BOMB:
        import numcodecs

        _BOMB["zstd"] = numcodecs.Zstd(level=1).encode(np.zeros(512 << 20, np.uint8))
    return _BOMB["zstd"]


def symlink_to(target: Callable[[Path], Path] | str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        where = target if isinstance(target, str) else str(target(p))
        p.symlink_to(where)
    return make


def outside_copy(p: Path) -> Path:
    """A valid chunk placed outside the store (the symlink points there)."""
    out = p.parents[4] / "outside-chunk"
    shutil.copy(p.with_name("1") if p.with_name("1").exists() else p.parent.parent / "1" / "0", out)
    return out


def recoded(codec: str | None, first: bytes | str) -> Callable[[Path], None]:
    """Re-encode every params chunk with ``codec`` (None: uncompressed), then make chunk 0/0 ``first``."""
    def apply(s: Path) -> None:
        import numcodecs

        codecs = list(BYTES_ONLY) + ([{"name": "zstd", "configuration": {"level": 1, "checksum": False}}] if codec else [])
        edit_json(s / "params" / "zarr.json", setter(codecs=codecs))
        for chunk in (s / "params" / "c").rglob("*"):
            if chunk.is_file():
                raw = numcodecs.Blosc().decode(chunk.read_bytes())
                chunk.write_bytes(numcodecs.Zstd(level=1).encode(raw) if codec else bytes(raw))
        chunk_file(s, "params").write_bytes(zstd_bomb() if first == "bomb" else first)
    return apply


# A zstd frame header declaring 512 MiB (single segment, 4-byte content size) and one RLE block of
# 1000 bytes: 13 bytes that a decoder trusting the header answers with a 512 MiB allocation.
ZSTD_512MIB_HEADER = (b"\x28\xb5\x2f\xfd\xa0" + (512 << 20).to_bytes(4, "little")
                      + ((1000 << 3) | (1 << 1) | 1).to_bytes(3, "little") + b"\x00")


def directory_link_outside(s: Path) -> None:
    """params/c is a symlink to a copy of itself outside the store."""
    outside = s.parent / "outside-c"
    shutil.copytree(s / "params" / "c", outside)
    shutil.rmtree(s / "params" / "c")
    (s / "params" / "c").symlink_to(outside)


def many_metrics(s: Path) -> None:
    for k in range(300):
        shutil.copytree(s / "metrics" / "acc", s / "metrics" / f"m{k}")


def lying_columns(s: Path) -> None:
    n = 10**12
    edit_json(s / "zarr.json", lambda m: m["attributes"].update(layout=[{"name": "w", "shape": [n], "offset": 0, "prunable": True}]))
    edit_json(s / "params" / "zarr.json", setter(shape=[12, n]))


def truncate(path: str, keep: int) -> Callable[[Path], None]:
    return lambda s: (s / path).write_bytes((s / path).read_bytes()[:keep])


def overwrite(path: str, text: str | bytes) -> Callable[[Path], None]:
    return lambda s: (s / path).write_bytes(text.encode() if isinstance(text, str) else text)


def sparse(size: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        with open(p, "wb") as f:
            f.truncate(size)
    return make


BYTES_ONLY = [{"name": "bytes", "configuration": {"endian": "little"}}]

# name -> (build, what the one error line must say, found when the store is opened?)
CASES: dict[str, tuple[Callable[[Path], None], str, bool]] = {
    # metadata
    "group-json-truncated": (truncate("zarr.json", 40), "not valid JSON", True),
    "group-json-list": (overwrite("zarr.json", "[1, 2]"), "JSON array, not an object", True),
    "group-attributes-list": (lambda s: edit_json(s / "zarr.json", setter(attributes=[1])), "attributes are not an object", True),
    "params-json-truncated": (truncate("params/zarr.json", 60), "not valid JSON", True),
    "params-json-list": (overwrite("params/zarr.json", "[]"), "JSON array, not an object", True),
    "params-json-binary": (overwrite("params/zarr.json", b"\xff\xfe\x00garbage"), "not valid JSON", True),
    "params-json-huge": (overwrite("params/zarr.json", " " * (2 << 20) + "{}"), "bytes, more than", True),
    "step-json-truncated": (truncate("step/zarr.json", 50), "'step': zarr.json is not valid JSON", True),
    "epoch-json-list": (overwrite("epoch/zarr.json", '["x"]'), "'epoch': zarr.json holds a JSON array", True),
    "time-json-number": (overwrite("time/zarr.json", "3"), "'time': zarr.json holds a JSON number", True),
    "loss-json-truncated": (truncate("loss/zarr.json", 10), "'loss': zarr.json is not valid JSON", True),
    "metric-json-list": (overwrite("metrics/acc/zarr.json", "[]"), "'metrics/acc'", True),
    "metrics-group-list": (overwrite("metrics/zarr.json", "[]"), "metrics/zarr.json holds a JSON array", True),
    "codecs-unknown": (meta("params", setter(codecs=[*BYTES_ONLY, {"name": "evil"}])), "not supported", True),
    "codecs-empty": (meta("params", setter(codecs=[])), "no codecs", True),
    "codecs-missing": (meta("step", lambda m: m.pop("codecs")), "no codecs", True),
    "codecs-gzip": (meta("params", setter(codecs=[*BYTES_ONLY, {"name": "gzip", "configuration": {"level": 1}}])),
                    "not supported", True),
    "codecs-two-blosc": (meta("time", lambda m: m.update(codecs=m["codecs"] + m["codecs"][1:])), "not supported", True),
    "codecs-sharding": (meta("params", setter(codecs=[{"name": "sharding_indexed", "configuration": {}}])),
                        "invalid sharding configuration", True),
    "codecs-not-list": (meta("epoch", setter(codecs="blosc")), "no codecs", True),
    "dtype-int8": (meta("params", setter(data_type="int8")), "data type 'int8'", True),
    "dtype-string": (meta("params", setter(data_type="string")), "data type 'string'", True),
    "dtype-complex": (meta("params", setter(data_type="complex128")), "data type 'complex128'", True),
    "dtype-object": (meta("params", setter(data_type={"name": "x"})), "data type", True),
    "step-float": (meta("step", setter(data_type="float64")), "'step': data type 'float64'", True),
    "loss-int8": (meta("loss", setter(data_type="int8")), "'loss': data type 'int8'", True),
    "metric-string": (meta("metrics/acc", setter(data_type="string")), "'metrics/acc': data type 'string'", True),
    "grads-other-dtype": (lambda s: (shutil.copytree(s / "params", s / "grads"),
                                     edit_json(s / "grads" / "zarr.json", setter(data_type="float64"))),
                          "'grads': data type 'float64'", True),
    "params-rank-1": (meta("params", setter(shape=[12], chunk_grid={"name": "regular", "configuration": {"chunk_shape": [12]}})),
                      "1 dimension(s), expected 2", True),
    "params-chunks-rank-1": (meta("params", setter(chunk_grid={"name": "regular", "configuration": {"chunk_shape": [14]}})),
                             "invalid chunk grid", True),
    "params-negative-shape": (meta("params", setter(shape=[-1, 40])), "invalid shape", True),
    "step-negative-shape": (meta("step", setter(shape=[-5])), "invalid shape", True),
    "params-float-shape": (meta("params", setter(shape=[12.5, 40])), "invalid shape", True),
    "params-zero-chunk": (meta("params", setter(chunk_grid={"name": "regular", "configuration": {"chunk_shape": [0, 14]}})),
                          "invalid chunk grid", True),
    "params-chunk-4gib": (meta("params", setter(chunk_grid={"name": "regular", "configuration": {"chunk_shape": [1, GiB]}})),
                          "exceed the 64 MiB", True),
    "step-chunk-huge": (meta("step", setter(chunk_grid={"name": "regular", "configuration": {"chunk_shape": [10**9]}})),
                        "exceed the 8 MiB", True),
    "params-rows-1e12": (meta("params", setter(shape=[10**12, 40])), "declares 1000000000000 rows", True),
    "step-rows-1e12": (meta("step", setter(shape=[10**12])), "'step' declares 1000000000000 rows", True),
    "loss-rows-1e12": (meta("loss", setter(shape=[10**12])), "'loss' declares 1000000000000 rows", True),
    "columns-1e12": (lying_columns, "declares 1000000000000 columns", True),
    "key-encoding-v2": (meta("params", setter(chunk_key_encoding={"name": "v2", "configuration": {"separator": "."}})),
                        "chunk key encoding", True),
    "key-encoding-dot": (meta("params", setter(chunk_key_encoding={"name": "default", "configuration": {"separator": "."}})),
                         "chunk key encoding", True),
    "storage-transformer": (meta("params", setter(storage_transformers=[{"name": "x"}])), "storage transformers", True),
    "fill-value-garbage": (meta("params", setter(fill_value="hello")), "'params' has invalid metadata", True),
    "params-is-group": (meta("params", setter(node_type="group")), "does not describe a Zarr v3 array", True),
    "params-zarr-v2": (meta("params", setter(zarr_format=2)), "does not describe a Zarr v3 array", True),
    "params-json-symlink-out": (lambda s: ((s.parent / "evil.json").write_text((s / "params" / "zarr.json").read_text()),
                                           (s / "params" / "zarr.json").unlink(),
                                           (s / "params" / "zarr.json").symlink_to(s.parent / "evil.json")),
                                "symbolic link", True),
    "group-json-symlink": (lambda s: (shutil.copy(s / "zarr.json", s.parent / "g.json"), (s / "zarr.json").unlink(),
                                      (s / "zarr.json").symlink_to(s.parent / "g.json")), "symbolic link", True),
    "metrics-symlink": (lambda s: (s / "metrics" / "evil").symlink_to(s / "metrics" / "acc"), "symbolic link", True),
    "too-many-metrics": (many_metrics, "traj reads at most 256", True),
    # series data (read when the store opens)
    "step-chunk-garbage": (replace_chunk("step", write_bytes(b"\x02\x01\x21\x08" + os.urandom(60))), "step/c/0", True),
    "step-chunk-truncated": (lambda s: chunk_file(s, "step").write_bytes(chunk_file(s, "step").read_bytes()[:9]), "too short", True),
    "step-chunk-bomb": (replace_chunk("step", lambda p: p.write_bytes(blosc_bomb())), "bytes, more than the 32784", True),
    "step-chunk-dev-zero": (replace_chunk("step", symlink_to("/dev/zero")), "symbolic link", True),
    "epoch-chunk-garbage": (replace_chunk("epoch", write_bytes(os.urandom(64))), "epoch/c/0", True),
    "time-chunk-truncated": (lambda s: chunk_file(s, "time").write_bytes(chunk_file(s, "time").read_bytes()[:20]), "time/c/0", True),
    "loss-chunk-bomb": (replace_chunk("loss", lambda p: p.write_bytes(blosc_bomb())), "bytes, more than the", True),
    "loss-chunk-cbytes": (patch_chunk("loss", put_u32(12, 999)), "declares 999 compressed bytes", True),
    "metric-chunk-garbage": (replace_chunk("metrics/acc", write_bytes(b"\x00" * 16)), "metrics/acc/c/0", True),
    "metric-chunk-bomb": (replace_chunk("metrics/acc", lambda p: p.write_bytes(blosc_bomb())), "bytes, more than the", True),
    "step-chunk-directory": (replace_chunk("step", lambda p: p.mkdir()), "a directory where a file belongs", True),
    # params data (read by the analysis)
    "params-chunk-garbage": (replace_chunk("params", write_bytes(os.urandom(70))), "params/c/11/0", False),
    "params-chunk-truncated": (lambda s: chunk_file(s, "params").write_bytes(chunk_file(s, "params").read_bytes()[:10]),
                               "too short for a Blosc chunk", False),
    "params-chunk-bomb": (replace_chunk("params", lambda p: p.write_bytes(blosc_bomb())), "bytes, more than the 72", False),
    "params-chunk-nbytes": (patch_chunk("params", put_u32(4, 1 << 31)), "declares 2147483648 decoded", False),
    "params-chunk-cbytes": (patch_chunk("params", put_u32(12, 10**6)), "compressed bytes", False),
    "params-chunk-blocksize": (patch_chunk("params", put_u32(8, 0)), "invalid block size", False),
    "params-chunk-oversized": (lambda s: chunk_file(s, "params").write_bytes(chunk_file(s, "params").read_bytes() + b"\0" * 100),
                               "more than the", False),
    "params-chunk-missing": (lambda s: (s / "params" / "c" / "11" / "1").unlink(), "params/c/11/1 of committed snapshots is missing", False),
    "params-row-missing": (lambda s: shutil.rmtree(s / "params" / "c" / "10"), "of committed snapshots is missing", False),
    "params-all-missing": (lambda s: shutil.rmtree(s / "params" / "c"), "chunk file(s)", True),
    "params-chunk-symlink-in": (replace_chunk("params", symlink_to(lambda p: p.parent.parent / "1" / "0")), "symbolic link", False),
    "params-chunk-symlink-out": (replace_chunk("params", symlink_to(outside_copy)), "symbolic link", False),
    "params-chunk-dev-zero": (replace_chunk("params", symlink_to("/dev/zero")), "symbolic link", False),
    "params-dir-symlink-out": (directory_link_outside, "leads outside the store", False),
    "params-chunk-sparse-20gb": (replace_chunk("params", sparse(20 * GiB)), "21474836480 bytes", False),
    "params-uncompressed-short": (recoded(None, b"\0" * 20), "an uncompressed chunk holds 56", False),
    "params-zstd-bomb": (recoded("zstd", ZSTD_512MIB_HEADER), "zstd frame declares 536870912", False),
    "params-zstd-real-bomb": (recoded("zstd", "bomb"), "bytes, more than the", False),
    "params-zstd-no-size": (recoded("zstd", b"\x28\xb5\x2f\xfd\x00\x58" + bytes(40)), "declares its decoded size", False),
    "params-zstd-garbage": (recoded("zstd", os.urandom(56)), "declares its decoded size", False),
}

# Every command that reads a store; {s} the hostile store, {g} a good one, {o} the --out directory.
COMMANDS = {
    "info": ["info", "{s}"],
    "info-out": ["info", "{s}", "--out", "{o}"],
    "dmd": ["dmd", "{s}", "--out", "{o}"],
    "dmd-dask": ["dmd", "{s}", "--backend", "dask", "--out", "{o}"],
    "cmd": ["cmd", "{s}", "--modes", "2", "--out", "{o}"],
    "prune": ["prune", "{s}", "--epoch", "2", "--out", "{o}"],  # the last epoch (partial: 2 of 5 snapshots), where the damage is
    "conjugacy": ["conjugacy", "{g}", "{s}", "--out", "{o}"],
    "report": ["report", "{s}", "--out", "{o}"],
    "kga-replay": ["kga-replay", "{s}", "--out", "{o}"],
}


def _pairs() -> list:
    """Cases found at the door (open_store, shared by every command) run under ``info`` and one other
    command in turn; cases found while reading snapshots run under every command that reads them."""
    pairs = []
    others = [c for c in COMMANDS if c not in ("info", "dmd-dask")]
    for k, (case, (_, _, at_open)) in enumerate(CASES.items()):
        if at_open:
            commands = ["info", others[k % len(others)]]
        else:  # kga-replay reads no snapshot before it replays
            commands = [c for c in COMMANDS if c != "kga-replay"]
        pairs += [pytest.param(case, command, id=f"{case}-{command}") for command in commands]
    return pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    template = base_store(root / "template" / "s.zarr")
    good = base_store(root / "good" / "good.zarr")
    built: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in built:
            path = root / case / "s.zarr"
            shutil.copytree(template, path, symlinks=True)
            CASES[case][0](path)
            built[case] = path
        return built[case]

    return get, good


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*"))


def _args(command: str, store: Path, good: Path, out: Path) -> list[str]:
    return [a.format(s=store, g=good, o=out) for a in COMMANDS[command]]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_untouched_store_passes_every_command(corpus, tmp_path, command):
    """The control: the store every case starts from is valid for every command."""
    get, good = corpus
    result = runner.invoke(app, _args(command, good, good, tmp_path / "out"))
    if command == "kga-replay":  # the base store records no recipe; that is the only refusal
        assert result.exit_code == 2 and "records no recipe" in result.stderr
    else:
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("case", "command"), _pairs())
def test_a_hostile_store_gives_one_line_and_exit_2(corpus, tmp_path, monkeypatch, case, command):
    get, good = corpus
    _check_refused(get(case), good, CASES[case][1], command, tmp_path, monkeypatch)


def _check_refused(store: Path, good: Path, expected: str, command: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a default --out would land here: it must not appear
    out = tmp_path / "out"
    before, store_before = _listing(tmp_path), _listing(store.parent)
    result = runner.invoke(app, _args(command, store, good, out))
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    assert str(store) in lines[0] or "steps" in lines[0]
    assert _listing(tmp_path) == before and not out.exists()
    assert _listing(store.parent) == store_before


# ---------------------------------------------------------------------- sharded stores (format version 2)
def sharded_store(path: Path) -> Path:
    """12 snapshots x 40 parameters in format version 2: one-row shards of inner chunks (1, 14), two shards
    per row (``params/c/<k>/0`` holds chunks 0 and 1, ``params/c/<k>/1`` chunk 2 and an empty slot past N)."""
    rng = np.random.default_rng(0)
    data = np.cumsum(rng.standard_normal((12, 40)), axis=0).astype(np.float32)
    write_store(path, data, chunk_bytes=64, stack_bytes=1, shard_chunks=2, loss=0.5, metrics={"acc": 0.9})
    (path / ".traj-writer.lock").unlink(missing_ok=True)
    return path


_INDEX = 2 * 16 + 4  # two (offset, length) pairs and a crc32c


def shard_of(s: Path) -> Path:
    return s / "params" / "c" / "11" / "0"


def with_index(body: bytes, entries: np.ndarray, *, valid_checksum: bool = True) -> bytes:
    import struct

    import google_crc32c

    raw = entries.astype("<u8").tobytes()
    crc = google_crc32c.value(raw) ^ (0 if valid_checksum else 1)
    return body + raw + struct.pack("<I", crc)


def edit_index(change: Callable[[np.ndarray], None], *, valid_checksum: bool = True) -> Callable[[Path], None]:
    """Rewrite the index of the shard holding the last snapshot (with a correct checksum unless told)."""
    def apply(s: Path) -> None:
        data = shard_of(s).read_bytes()
        entries = np.frombuffer(data[-_INDEX:-4], dtype="<u8").reshape(2, 2).copy()
        change(entries)
        shard_of(s).write_bytes(with_index(data[:-_INDEX], entries, valid_checksum=valid_checksum))
    return apply


def entry(k: int, column: int, value: int) -> Callable[[np.ndarray], None]:
    def change(entries: np.ndarray) -> None:
        entries[k, column] = value
    return change


def inner_chunk(change: Callable[[bytearray], None]) -> Callable[[Path], None]:
    """Change the bytes of inner chunk 0 of the shard holding the last snapshot (its index kept)."""
    def apply(s: Path) -> None:
        data = bytearray(shard_of(s).read_bytes())
        change(data)  # chunk 0 starts at offset 0
        shard_of(s).write_bytes(bytes(data))
    return apply


def bomb_shard(s: Path) -> None:
    """A real 2 GiB Blosc bomb as inner chunk 0, with an index that points at it correctly."""
    bomb = blosc_bomb()
    data = shard_of(s).read_bytes()
    entries = np.frombuffer(data[-_INDEX:-4], dtype="<u8").reshape(2, 2).copy()
    chunk1 = data[int(entries[1, 0]) : int(entries[1, 0] + entries[1, 1])]
    entries[0] = (0, len(bomb))
    entries[1] = (len(bomb), len(chunk1))
    shard_of(s).write_bytes(with_index(bomb + chunk1, entries))


def sharding(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return meta("params", lambda m: change(m["codecs"][0]["configuration"]))


def shard_grid(shard: list[int], inner: list[int]) -> Callable[[Path], None]:
    def change(m: dict) -> None:
        m["chunk_grid"]["configuration"]["chunk_shape"] = shard
        m["codecs"][0]["configuration"]["chunk_shape"] = inner
    return meta("params", change)


MAX = 2**64 - 1
SHARDED_CASES: dict[str, tuple[Callable[[Path], None], str, bool]] = {
    # metadata, refused at the door
    "sharding-inner-4gib": (shard_grid([1, GiB], [1, GiB]), "exceed the 64 MiB", True),
    "sharding-shard-1gib": (shard_grid([1, 1 << 28], [1, 1 << 14]), "exceed the 256 MiB", True),
    "sharding-2e20-inner-chunks": (shard_grid([1, 1 << 20], [1, 1]), "inner chunks exceed the 65536", True),
    "sharding-inner-not-dividing": (shard_grid([1, 28], [1, 5]), "must divide the shards", True),
    "sharding-index-at-start": (sharding(lambda c: c.update(index_location="start")), "index is at the end", True),
    "sharding-index-no-crc": (sharding(lambda c: c.update(index_codecs=BYTES_ONLY)), "then 'crc32c'", True),
    "sharding-inner-gzip": (sharding(lambda c: c.update(codecs=[*BYTES_ONLY, {"name": "gzip", "configuration": {"level": 1}}])),
                            "not supported", True),
    "sharding-inner-big-endian": (sharding(lambda c: c["codecs"][0].update(configuration={"endian": "big"})), "little endian", True),
    "sharding-on-step": (meta("step", setter(codecs=[{"name": "sharding_indexed", "configuration": {}}])),
                         "sharding is supported for 'params' and 'grads' only", True),
    # shard files, found when snapshots are read
    "shard-index-past-eof": (edit_index(entry(1, 0, 10**6)), "points past the end", False),
    "shard-index-huge-length": (edit_index(entry(0, 1, 1 << 40)), "declares an inner chunk of 1099511627776 bytes", False),
    "shard-index-overlap": (edit_index(lambda e: e.__setitem__((1, 0), e[0, 0] + 1)), "overlapping inner chunks", False),
    "shard-index-empty-committed": (edit_index(lambda e: e.__setitem__(1, MAX)), "of committed snapshots is missing", False),
    "shard-index-half-empty": (edit_index(entry(1, 0, MAX)), "half-empty entry", False),
    "shard-index-checksum": (edit_index(lambda e: None, valid_checksum=False), "checksum does not match", False),
    "shard-inner-nbytes-2gib": (inner_chunk(put_u32(4, 1 << 31)), "declares 2147483648 decoded", False),
    "shard-inner-cbytes": (inner_chunk(put_u32(12, 10**6)), "compressed bytes", False),
    "shard-inner-bomb": (bomb_shard, "bytes, more than the", False),
    "shard-truncated": (lambda s: shard_of(s).write_bytes(shard_of(s).read_bytes()[:20]), "too short for a shard index", False),
    "shard-missing": (lambda s: shard_of(s).unlink(), "of committed snapshots is missing", False),
    "shard-symlink-out": (replace_chunk("params", symlink_to(outside_copy)), "symbolic link", False),
    "shard-sparse-20gb": (replace_chunk("params", sparse(20 * GiB)), "21474836480 bytes", False),
}
# Every read path: the scan (blocks), dmd (blocks and selected columns), dask (zarr's own sharding codec
# through the guarded store), prune (single snapshots).
SHARDED_COMMANDS = ["info", "dmd", "dmd-dask", "prune"]


@pytest.fixture(scope="module")
def sharded_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    template = sharded_store(root / "template" / "s.zarr")
    good = sharded_store(root / "good" / "good.zarr")
    built: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in built:
            path = root / case / "s.zarr"
            shutil.copytree(template, path, symlinks=True)
            SHARDED_CASES[case][0](path)
            built[case] = path
        return built[case]

    return get, good


def _sharded_pairs() -> list:
    pairs = []
    for k, (case, (_, _, at_open)) in enumerate(SHARDED_CASES.items()):
        commands = ["info", SHARDED_COMMANDS[1 + k % 3]] if at_open else SHARDED_COMMANDS
        pairs += [pytest.param(case, command, id=f"{case}-{command}") for command in commands]
    return pairs


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "kga-replay"])
def test_the_untouched_sharded_store_passes_every_command(sharded_corpus, tmp_path, command):
    _, good = sharded_corpus
    assert RunStore(good).shards == (1, 28)
    result = runner.invoke(app, _args(command, good, good, tmp_path / "out"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("case", "command"), _sharded_pairs())
def test_a_hostile_sharded_store_gives_one_line_and_exit_2(sharded_corpus, tmp_path, monkeypatch, case, command):
    get, good = sharded_corpus
    _check_refused(get(case), good, SHARDED_CASES[case][1], command, tmp_path, monkeypatch)


# ---------------------------------------------------------------------- memory and hangs, in a child
CHILD = "from traj.cli.app import main; main()"
# A child's ru_maxrss counts the pages of the process it was forked from (Linux folds the old mm's
# high-water mark into it at exec), so traj is forked from this small launcher, never from pytest
# (whose own RSS would count): the launcher reports its child's peak through a pipe.
LAUNCHER = """
import os, resource, signal, sys
limit, fd = int(sys.argv[1]), int(sys.argv[2])
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[3], *sys.argv[4:]])
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def run_child(args: list[str], *, timeout: float = 60, address_space: int = 3 * GiB) -> tuple[int, str, float]:
    """Exit code, stderr and peak RSS (MiB) of ``traj ARGS`` in a fresh process.

    The address-space limit keeps a regression from taking the machine (the original bombs
    reached 21 GB); the timeout keeps a FIFO from hanging the suite (the launcher's whole
    session is killed).
    """
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(address_space), str(write_end), CHILD, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(write_end,),
                            start_new_session=True, env={**os.environ, "COLUMNS": "1000"})
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            os.close(read_end)
            pytest.fail(f"traj {' '.join(args)} still running after {timeout} s")
        time.sleep(0.05)
    with os.fdopen(read_end) as report:
        peak_kib = int(report.read() or 0)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.returncode, stderr, peak_kib / 1024


def ten_bombs(s: Path) -> None:
    """The issue's case: ten chunks of ``params`` that each decode to 2 GiB."""
    bomb = blosc_bomb()
    for k in range(10):
        (s / "params" / "c" / str(k) / "0").write_bytes(bomb)


def fifo(p: Path) -> None:
    os.mkfifo(p)


CHILD_CASES = {
    "ten-2gib-chunks": (ten_bombs, "dmd", "bytes, more than the 72"),
    "params-dev-zero": (replace_chunk("params", symlink_to("/dev/zero")), "dmd", "symbolic link"),
    "params-fifo": (replace_chunk("params", fifo), "dmd", "FIFO"),
    "step-fifo": (replace_chunk("step", fifo), "info", "FIFO"),
    "params-json-fifo": (lambda s: ((s / "params" / "zarr.json").unlink(), os.mkfifo(s / "params" / "zarr.json")), "info", "FIFO"),
    "params-sparse-20gb": (replace_chunk("params", sparse(20 * GiB)), "dmd", "21474836480 bytes"),
    "step-rows-1e12": (CASES["step-rows-1e12"][0], "info", "declares 1000000000000 rows"),
    "zstd-512mib": (CASES["params-zstd-real-bomb"][0], "dmd", "bytes, more than the"),
    "blosc-header-2gib": (CASES["params-chunk-nbytes"][0], "dmd", "declares 2147483648 decoded"),
}


SHARDED_CHILD_CASES = {
    "shard-inner-2gib-header": (SHARDED_CASES["shard-inner-nbytes-2gib"][0], "dmd", "declares 2147483648 decoded"),
    "shard-inner-bomb-dask": (bomb_shard, "dmd --backend dask", "bytes, more than the"),
    "shard-index-huge-length-dask": (SHARDED_CASES["shard-index-huge-length"][0], "dmd --backend dask", "1099511627776 bytes"),
}


@pytest.mark.parametrize("case", [*CHILD_CASES, *SHARDED_CHILD_CASES])
def test_bombs_and_fifos_stay_bounded(tmp_path, case):
    sharded = case in SHARDED_CHILD_CASES
    build, command, expected = SHARDED_CHILD_CASES[case] if sharded else CHILD_CASES[case]
    command, *options = command.split()
    store = (sharded_store if sharded else base_store)(tmp_path / "s.zarr")
    build(store)
    code, stderr, peak = run_child([command, str(store), *options, "--out", str(tmp_path / "out")])
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], stderr
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"
    assert not (tmp_path / "out").exists()


def test_a_fifo_for_the_writer_lock_neither_hangs_nor_counts_as_a_writer(tmp_path):
    store = base_store(tmp_path / "s.zarr")
    os.mkfifo(store / ".traj-writer.lock")
    code, stderr, _ = run_child(["info", str(store), "--json"])
    assert code == 0, stderr


def test_a_lock_symlink_is_never_followed_by_a_writer(tmp_path):
    """A store whose lock file links to a user's file: resuming must not truncate that file."""
    from traj.errors import DamagedStoreError
    from traj.store import Layout, StoreWriter

    store = base_store(tmp_path / "s.zarr")
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    (store / ".traj-writer.lock").symlink_to(precious)
    with pytest.raises(DamagedStoreError, match="symbolic link"):
        StoreWriter(store, Layout.from_shapes([("w", (40,))], prunable=["w"]))
    assert precious.read_text() == "years of work"
