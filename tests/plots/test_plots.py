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
