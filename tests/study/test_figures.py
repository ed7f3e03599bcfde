from __future__ import annotations

import json

import matplotlib
import nibabel as nib
import numpy as np
import plotly.express as px
import pytest

from brainage.study import figures

matplotlib.use("Agg")


def test_plotly_figure_bundle_has_no_plotly_js():
    fig = px.scatter(x=[1, 2, 3], y=[3, 1, 2], title="demo")
    bundle = figures.PlotlyFigure(fig)._repr_mimebundle_()
    html = bundle["text/html"]
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html
    assert "<script src=" not in html and len(html) < 100_000  # plotly.js comes from _static
    assert json.loads(json.dumps(bundle["application/vnd.plotly.v1+json"]))["data"]
    assert bundle["text/plain"] == "<plotly figure: demo>"


def test_show_displays_immediately(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    assert figures.show(px.scatter(x=[1], y=[1])) is None
    assert len(shown) == 1 and isinstance(shown[0], figures.PlotlyFigure)


def test_example_slices_grid(tmp_path):
    img = nib.Nifti1Image(np.random.default_rng(0).random((7, 8, 9)).astype(np.float32), np.eye(4))
    fig = figures.example_slices([("a", img, img), ("b", img, img)], cut_coords=(3, 4, 4))
    assert len(fig.axes) >= 4
    with pytest.raises(ValueError, match="at least one"):
        figures.example_slices([])


def test_registration_qc_one_panel_per_scan_with_outline():
    data = np.zeros((9, 10, 11), dtype=np.float32)
    data[2:7, 2:8, 2:9] = 1.0
    img = nib.Nifti1Image(data, np.eye(4))
    mask = nib.Nifti1Image((data > 0).astype(np.float32), np.eye(4))
    rows = [(f"sub-{i}: 0.5", img, i == 3) for i in range(4)]
    inner = nib.Nifti1Image((data * 0).astype(np.float32), np.eye(4))
    inner.dataobj[3:6, 3:7, 3:8] = 1.0
    fig = figures.registration_qc(rows, [(inner, "cyan"), (mask, "red")], n_cols=3,
                                  cut_coords=(4, 5, 5))
    assert len(fig.axes) == 6  # 4 panels on a 2 x 3 grid
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == [r[0] for r in rows]
    assert [ax.title.get_color() for ax in titled] == ["black", "black", "black", "red"]
    for ax in titled:  # the scan, then one contour per outline in its colour
        assert len(ax.images) == 1
        assert [c.get_edgecolor()[0][:3].tolist() for c in ax.collections] == [[0, 1, 1], [1, 0, 0]]
    # the montage: sagittal (y, z), coronal (x, z), axial (x, y) slices through (4, 5, 5), each
    # followed by a 2-voxel gap, superior at the top
    montage = titled[0].images[0].get_array()
    assert montage.shape == (11, (10 + 2) + (9 + 2) + (9 + 2))
    np.testing.assert_array_equal(montage[:, :10], data[4, :, :].T[::-1])
    # each scan's own brain mask (its voxels > 0), outlined last in the colour asked for
    fig = figures.registration_qc(rows[:1], [(mask, "red")], cut_coords=(4, 5, 5),
                                  brain_colour="yellow")
    ax = [a for a in fig.axes if a.get_title()][0]
    assert [c.get_edgecolor()[0][:3].tolist() for c in ax.collections] == [[1, 0, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="at least one"):
        figures.registration_qc([], [(mask, "red")])
    with pytest.raises(ValueError, match="n_cols must be at least 1; got 0"):
        figures.registration_qc(rows, [(mask, "red")], n_cols=0)
    with pytest.raises(ValueError, match="outlines must name at least one"):
        figures.registration_qc(rows, [])
