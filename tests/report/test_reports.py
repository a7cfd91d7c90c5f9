"""Reports render a result: summary.json is its to_dict(), report.md/html hold its numbers and figures."""

import json

from traj.display import markdown
from traj.report.cmd import cmd_report
from traj.report.dmd import dmd_report
from traj.report.prune import prune_report
from traj.report.writer import jsonable


def _written(out):
    summary = json.loads((out / "summary.json").read_text())
    return summary, (out / "report.md").read_text(), (out / "report.html").read_text(), {p.name for p in out.glob("*.png")}


def _as_json(result):
    return json.loads(json.dumps(result.to_dict(), default=jsonable))


def test_dmd_report(tmp_path, dmd_result):
    from traj.analysis.dmd import DMDRun

    summary, md, html, pngs = _written(dmd_report(dmd_result, tmp_path / "r"))
    assert summary == _as_json(DMDRun(dmd_result))
    assert summary["modes"] is None and summary["evaluation"] is None
    assert {"store", "rank", "rank_threshold", "singular_values", "eigenvalues", "abs_eigenvalues", "rates_per_step",
            "classes", "reconstruction_error", "window", "steps"} <= set(summary)
    assert summary["rank"] == 6 and len(summary["eigenvalues"]) == 6
    assert pngs == {"eigenvalues.png", "singular_values.png", "reconstruction.png", "layer_spectra.png"}
    assert html.count("data:image/png;base64,") == 4
    assert "with a forecast of 5 snapshots" in md and "## Eigenvalues" in md and "## Per layer" in md
    table = md[md.index("## Eigenvalues"):md.index("## Per layer")]
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 6  # header and one row per mode
    for layer in dmd_result.per_layer:
        assert f"| {layer.name} | {layer.n_params} | {layer.rank} |" in md
    # the method and why it was chosen, and each eigenvalue's rounding-error estimate, as in the JSON
    assert f"Method {dmd_result.choice.method}: {dmd_result.choice.reason}" in md
    first = table.splitlines()[4]
    assert first.endswith(f" | {summary['eigenvalue_errors'][0]:.2g} |"), first
    assert table.splitlines()[2].endswith("| rounding error (est.) |")
    # under the table, what the estimate covers and what it does not (as the JSON says)
    caption = table.splitlines()[4 + 6 + 1]
    assert caption == markdown(f"Rounding error (est.): {summary['eigenvalue_errors_cover']}.", block=True)
    assert "does not cover truncation" in caption


def test_prune_report(tmp_path, prune_result):
    summary, md, html, pngs = _written(prune_report(prune_result, tmp_path / "r"))
    assert summary == _as_json(prune_result)
    assert {"epoch", "eigenvalues", "lambda1", "kgp_modes", "kept", "overlap", "n_prunable"} <= set(summary)
    assert summary["kept"]["kmp"] == {"2": 300, "4": 150, "8": 75}
    assert pngs == {"overlap.png", "spectrum.png"}  # no accuracy (evaluate=False), one epoch
    assert html.count("data:image/png;base64,") == 2
    assert f"{prune_result.n_prunable} prunable weights" in md and "## Overlap" in md
    for (a, b), values in prune_result.overlap.items():
        assert f"| {a}-{b}".upper() + " | " + " | ".join(f"{v:.3f}" for v in values) + " |" in md
    assert "Validation" not in md


def test_cmd_report(tmp_path, cmd_result):
    from traj.analysis.cmd import CMDRun

    summary, md, html, pngs = _written(cmd_report(cmd_result, tmp_path / "r"))
    assert summary == _as_json(CMDRun(cmd_result))
    assert summary["evaluation"] is None and summary["model"] is None and summary["sweep"] is None
    assert summary["modes"] == 3
    assert pngs == {"corr_matrix.png", "references.png", "mode_bands.png", "modes_per_layer.png", "sample_fits.png"}
    assert html.count("data:image/png;base64,") == 5
    modes = md[md.index("## Modes"):]
    assert sum(line.startswith("| ") for line in modes.splitlines()) == 1 + 3
    assert f"| 0 | {int(cmd_result.mode_sizes[0])} |" in modes
