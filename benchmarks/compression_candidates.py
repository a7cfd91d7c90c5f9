"""Lossless compression candidates on a real trajectory, in bytes per value and encode speed.

Reads ``--columns`` columns of every snapshot of a store (default: a GPT-2 small bfloat16 run
recorded by ``benchmarks/native_dtype.py --keep``) and encodes each snapshot's row with:
  blosc lz4 / zstd(3) with bit or byte shuffle (lz4 + bit shuffle is what traj writes);
  XOR with the previous snapshot, then the same codecs (the delta a time-axis codec exploits);
for the stored dtype and for the same values as float32. Rows are encoded in 16 KiB pieces, as
the store's inner chunks are.

    python benchmarks/compression_candidates.py [--store /tmp/native-dtype/gpt2-bf16.zarr] [--columns 4000000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from numcodecs import Blosc

from traj.store import RunStore
from traj.store.dtypes import encode


def _codec(name: str, shuffle: int) -> Blosc:
    return Blosc(cname=name, clevel=5 if name == "lz4" else 3, shuffle=shuffle)


def measure(rows: np.ndarray, codec: Blosc, xor: bool, piece_bytes: int = 16 << 10) -> tuple[float, float]:
    """Bytes per value and encode MB/s over ``rows`` (T, n) of an unsigned integer view."""
    per = piece_bytes // rows.itemsize
    total = 0
    t0 = time.perf_counter()
    for k in range(rows.shape[0]):
        row = rows[k] ^ rows[k - 1] if xor and k else rows[k]
        for start in range(0, row.size, per):
            total += len(codec.encode(np.ascontiguousarray(row[start : start + per])))
    seconds = time.perf_counter() - t0
    return total / rows.size, rows.nbytes / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("/tmp/native-dtype/gpt2-bf16.zarr"))
    parser.add_argument("--columns", type=int, default=4_000_000)
    args = parser.parse_args()
    store = RunStore(args.store)
    n = min(args.columns, store.n_params)
    start = (store.n_params - n) // 2  # from the middle of θ: transformer blocks, not the embedding table
    values = store.read(columns=slice(start, start + n))
    variants = {"float32": values.astype(np.float32).view(np.uint32)}
    if store.stored_dtype == "bfloat16":
        variants["bfloat16"] = encode(values, "bfloat16")
    print(f"{args.store}: T = {store.n_snapshots}, {n} columns from {start}; bytes per value (raw: 4 or 2), encode MB/s")
    print(f"{'values':<9} {'codec':<6} {'shuffle':<8} {'plain':>12} {'xor-prev':>12}")
    for name, rows in variants.items():
        for cname in ("lz4", "zstd"):
            for shuffle, label in ((Blosc.BITSHUFFLE, "bit"), (Blosc.SHUFFLE, "byte")):
                codec = _codec(cname, shuffle)
                plain, plain_speed = measure(rows, codec, xor=False)
                delta, delta_speed = measure(rows, codec, xor=True)
                print(f"{name:<9} {cname:<6} {label:<8} {plain:>6.3f} {plain_speed:>5.0f} {delta:>6.3f} {delta_speed:>5.0f}")


if __name__ == "__main__":
    main()
