"""The README's notebook example (section "Python API (notebooks)") runs as written, and to_dataframe()
gives the numbers the results hold; without pandas it says what to install."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- notebook-example:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its notebook example"
    return match.group(1)


@pytest.fixture(scope="module")
def namespace():
    pytest.importorskip("pandas")
    import os

    here = os.getcwd()
    os.chdir(ROOT)  # the example names sample_data/ relative to the repository root; it writes nothing
    try:
        names: dict = {}
        exec(compile(_readme_example(), "README.md", "exec"), names)  # noqa: S102 - the repository's own README
    finally:
        os.chdir(here)
    return names


def test_dmd_table_is_the_spectrum(namespace):
    spectrum, modes = namespace["spectrum"], namespace["modes"]
    assert list(modes.index) == list(range(spectrum.rank))
    np.testing.assert_array_equal(modes["eigenvalue"].to_numpy(), spectrum.eigenvalues)
    np.testing.assert_allclose(modes["abs_eigenvalue"].to_numpy(), np.abs(spectrum.eigenvalues))
    assert list(modes["class"]) == spectrum.classes


def test_cmd_table_is_the_modes(namespace):
    clusters, sizes = namespace["clusters"], namespace["sizes"]
    np.testing.assert_array_equal(sizes["size"].to_numpy(), clusters.mode_sizes)
    assert int(sizes["size"].sum()) == clusters.n_params


def test_prune_table_is_the_kept_counts_and_accuracy(namespace):
    pruned, table = namespace["pruned"], namespace["table"]
    assert list(table.index) == [("kmp", 2.0), ("kmp", 8.0), ("gmp", 2.0), ("gmp", 8.0)]
    for method in ("kmp", "gmp"):
        np.testing.assert_array_equal(table.loc[method, "kept"].to_numpy(), pruned.kept[method])
        np.testing.assert_array_equal(table.loc[method, "mean"].to_numpy(), pruned.accuracy[method].mean)
    assert table.loc[("gmp", 8.0), "kept"] == -(-pruned.n_prunable // 8)


def test_conjugacy_and_history_tables(namespace):
    same, pairs = namespace["same"], namespace["pairs"]
    verdict = same.verdicts[0]
    assert pairs.loc[(verdict.a, verdict.b), "distance"] == verdict.distance
    assert pairs.loc[(verdict.a, verdict.b), "verdict"] == verdict.verdict
    norms, store = namespace["norms"], namespace["store"]
    np.testing.assert_array_equal(norms.index.to_numpy(), store.steps)
    np.testing.assert_allclose(norms["val_accuracy"].to_numpy(), store.metric("val_accuracy"), equal_nan=True)
    first = store.layout.entries[0]
    np.testing.assert_allclose(norms[f"norm {first.name}"].iloc[-1],
                               np.linalg.norm(store.snapshot(-1)[first.offset:first.stop].astype(np.float64)))


def test_without_pandas_to_dataframe_says_what_to_install(namespace, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"to_dataframe\(\) needs pandas, which is not installed: pip install pandas"):
        namespace["spectrum"].to_dataframe()
