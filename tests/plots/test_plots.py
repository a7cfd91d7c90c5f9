"""Figures draw what their result holds: point counts, data, labels and titles (never pyplot)."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from traj.plots.cmd import plot_corr_matrix, plot_mode_bands, plot_references
from traj.plots.common import CLASS_COLOURS
from traj.plots.dmd import plot_eigenvalues, plot_layer_spectra, plot_reconstruction, plot_singular_values
from traj.plots.prune import plot_accuracy, plot_overlap, plot_spectrum


def _points(ax):
    """Eigenvalue markers drawn by the class scatters (one collection per class present)."""
    return np.concatenate([c.get_offsets() for c in ax.collections if c.get_label() in _class_labels(ax)])


def _class_labels(ax):
    return {c.get_label() for c in ax.collections if c.get_label().split(" ")[0] in CLASS_COLOURS}


def test_eigenvalues_one_marker_per_eigenvalue_coloured_by_class(dmd_result):
    fig = plot_eigenvalues(dmd_result)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    points = _points(ax)
    assert len(points) == dmd_result.rank == 6
    np.testing.assert_allclose(np.sort_complex(points[:, 0] + 1j * points[:, 1]),
                               np.sort_complex(dmd_result.eigenvalues), atol=1e-12)
    counts = dmd_result.class_counts
    assert _class_labels(ax) == {f"{c} ({n})" for c, n in counts.items() if n}
    assert ax.get_title() == f"DMD eigenvalues (rank 6, ε = {dmd_result.eps:g})"


def test_singular_values_mark_the_kept_rank(dmd_result):
    (ax,) = plot_singular_values(dmd_result).axes
    all_line, kept_line = ax.get_lines()[:2]
    sigma = dmd_result.operator.singular_values
    np.testing.assert_allclose(all_line.get_ydata(), np.clip(sigma / sigma[0], 1e-18, None))
    assert len(kept_line.get_xdata()) == 6 and kept_line.get_label() == "kept (r = 6)"


def test_reconstruction_one_panel_per_sample_with_its_data(dmd_result):
    fig = plot_reconstruction(dmd_result)
    axes = [a for a in fig.axes if a.axison]
    assert len(axes) == len(dmd_result.sample_names) == 4
    for j, a in enumerate(axes):
        recorded, fitted, forecast = a.get_lines()[:3]
        np.testing.assert_array_equal(recorded.get_ydata(), dmd_result.sample_trajectories[:, j])
        assert len(fitted.get_ydata()) == dmd_result.sample_trajectories.shape[0]
        assert len(forecast.get_ydata()) == 5 + 1  # the forecast starts at the last recorded snapshot
        assert a.get_title() == dmd_result.sample_names[j]
        # issue 25: the x-axis is the training step, not "snapshot in window"; the forecast continues dt apart
        np.testing.assert_array_equal(recorded.get_xdata(), dmd_result.steps)
        np.testing.assert_array_equal(forecast.get_xdata(), dmd_result.steps[-1] + dmd_result.dt * np.arange(6))
    assert fig.get_supxlabel() == "training step"


def test_layer_spectra_one_panel_per_layer(dmd_result):
    axes = [a for a in plot_layer_spectra(dmd_result).axes if a.axison]
    assert [a.get_title() for a in axes] == [f"{s.name} (r = {s.rank})" for s in dmd_result.per_layer]
    for a, spectrum in zip(axes, dmd_result.per_layer, strict=True):
        assert len(_points(a)) == spectrum.rank


def test_a_given_axes_is_drawn_into(dmd_result):
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_eigenvalues(dmd_result, ax=ax) is fig and len(_points(ax)) == 6


def test_prune_overlap_draws_every_pair_with_its_values(prune_result):
    (ax,) = plot_overlap(prune_result).axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"{a}-{b}".upper() for a, b in prune_result.overlap}
    for (a, b), values in prune_result.overlap.items():
        line = lines[f"{a}-{b}".upper()]
        np.testing.assert_array_equal(line.get_xdata(), prune_result.compressions)
        np.testing.assert_array_equal(line.get_ydata(), values)


def test_prune_spectrum_marks_lambda1_and_the_kgp_modes(prune_result):
    (ax,) = plot_spectrum(prune_result).axes
    labels = [c.get_label() for c in ax.collections]
    lam = prune_result.lambda1
    assert f"λ1 = {lam.real:.4f}{lam.imag:+.4f}i (KMP)" in labels
    kgp = next(c for c in ax.collections if c.get_label() == "KGP modes")
    np.testing.assert_allclose(kgp.get_offsets()[:, 0], [m.eigenvalue.real for m in prune_result.kgp_modes])
    assert len(_points(ax)) == len(prune_result.eigenvalues)
    with pytest.raises(ValueError, match="no accuracy"):
        plot_accuracy(prune_result)  # evaluate=False: nothing to draw


def test_cmd_figures_draw_the_result(cmd_result):
    (ax, _colorbar) = plot_corr_matrix(cmd_result).axes
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), cmd_result.ordered_corr)
    assert ax.get_title() == f"|corr| of {cmd_result.sample_order.size} sampled weights, 3 modes"
    (ax,) = plot_references(cmd_result).axes
    assert [line.get_label() for line in ax.get_lines()] == [f"mode {m} ({cmd_result.mode_sizes[m]})" for m in range(3)]
    axes = [a for a in plot_mode_bands(cmd_result).axes if a.axison]
    assert len(axes) == 3
    for m, a in enumerate(axes):
        np.testing.assert_array_equal(a.get_lines()[0].get_ydata(), cmd_result.bands.reference[m])


def _history(n_tensors, metrics=None, n_snapshots=12):
    from traj.analysis.overview import LayerNorms

    steps = np.arange(0, 10 * n_snapshots, 10)
    norms = np.outer(1 + 0.1 * np.arange(n_snapshots), np.arange(1, n_tensors + 1, dtype=float))
    norms[:, 0] = 0.0  # a tensor that stays zero (a bias initialised to 0)
    names = tuple(f"h.{i}.attn.weight" for i in range(n_tensors))
    return LayerNorms(steps, np.linspace(2, 1, n_snapshots), names, norms, np.zeros(0, dtype=int), metrics or {})


def test_overview_of_many_tensors_is_a_heatmap_naming_every_tensor():
    """Issue 25: with 28 tensors the legend covered the curves and named 12 of them."""
    from traj.plots.run import plot_run_overview

    history = _history(28)
    fig = plot_run_overview(history)
    ax_norm = fig.axes[1]
    (image,) = ax_norm.get_images()
    np.testing.assert_allclose(image.get_array(), history.relative_norms.T)
    assert [t.get_text() for t in ax_norm.get_yticklabels()] == list(history.names)
    # each tensor over its largest norm: the last snapshot is 1 for every moving tensor, 0 for the zero one
    np.testing.assert_allclose(history.relative_norms[-1], [0.0] + [1.0] * 27)
    np.testing.assert_allclose(history.relative_norms[0, 1:], 1 / 2.1)
    assert ax_norm.get_legend() is None and not ax_norm.get_lines()


def test_overview_of_few_tensors_keeps_the_legend_off_the_curves():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from traj.plots.run import plot_run_overview

    history = _history(5)
    fig = plot_run_overview(history)
    FigureCanvasAgg(fig).draw()
    ax_norm = fig.axes[1]
    legend = ax_norm.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(history.names)
    assert legend.get_window_extent().x0 >= ax_norm.get_window_extent().x1  # beside the axes, not over them
    assert fig.get_window_extent().x1 >= legend.get_window_extent().x1  # and inside the figure


def test_overview_plots_the_logged_metrics():
    """Issue 25: a logged eval_loss was never plotted. Each metric is drawn at the snapshots that have it."""
    from traj.plots.run import plot_run_overview

    eval_loss = np.full(12, np.nan)
    eval_loss[::4] = [3.0, 2.0, 1.5]
    history = _history(3, {"eval_loss": eval_loss, "never": np.full(12, np.nan)})
    fig = plot_run_overview(history)
    assert len(fig.axes) == 3
    ax_metrics = fig.axes[1]
    (line,) = ax_metrics.get_lines()  # a metric with no value anywhere is not drawn
    np.testing.assert_array_equal(line.get_xdata(), [0, 40, 80])
    np.testing.assert_array_equal(line.get_ydata(), [3.0, 2.0, 1.5])
    assert [t.get_text() for t in ax_metrics.get_legend().get_texts()] == ["eval_loss"]


def test_layer_norms_carry_the_stores_metrics(tmp_path):
    from traj.analysis.overview import layer_norms
    from traj.store import Layout, StoreWriter

    with StoreWriter(tmp_path / "m.zarr", Layout.from_shapes([("w", (4,))]), dtype="float64") as writer:
        for k in range(4):
            writer.append(np.full(4, k + 1.0), step=k, metrics={"eval_loss": 1.0 / (k + 1)} if k % 2 else None)
    from traj.store import RunStore

    history = layer_norms(RunStore(tmp_path / "m.zarr"))
    np.testing.assert_allclose(history.norms[:, 0], 2.0 * np.arange(1, 5))
    np.testing.assert_array_equal(np.isfinite(history.metrics["eval_loss"]), [False, True, False, True])
    np.testing.assert_allclose(history.metrics["eval_loss"][1::2], [0.5, 0.25])
