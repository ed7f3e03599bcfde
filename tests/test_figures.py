from __future__ import annotations

import json

import matplotlib
import nibabel as nib
import numpy as np
import plotly.express as px
import pytest

from brainage import figures

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
