"""Figure helpers the notebooks call (plotly for charts, nilearn for brain slices).

Plotly figures are shown through :func:`show`, which emits the figure as an HTML ``<div>``
without plotly.js. The book serves one copy of plotly.js from its ``_static`` folder, so pages
draw offline and stay small. (Plotly's default Jupyter renderer emits a mime type the Sphinx
build drops; its ``notebook`` renderer inlines 4.8 MB of plotly.js per figure; its
``notebook_connected`` renderer loads plotly.js from a CDN.) In JupyterLab the figure's own
plotly mime type is offered too, so figures also draw when a notebook is run by hand.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["PlotlyFigure", "example_slices", "show"]


class PlotlyFigure:
    """A plotly figure with an offline-friendly rich display.

    Parameters
    ----------
    figure : plotly.graph_objects.Figure
        The figure to display.
    """

    def __init__(self, figure: Any) -> None:
        self.figure = figure

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        html = self.figure.to_html(full_html=False, include_plotlyjs=False,
                                   config={"displaylogo": False, "responsive": True})
        return {
            "text/html": html,
            "application/vnd.plotly.v1+json": json.loads(self.figure.to_json()),
            "text/plain": f"<plotly figure: {self.figure.layout.title.text or 'untitled'}>",
        }


def show(figure: Any) -> None:
    """Display a plotly figure in a notebook and in the offline book (also inside loops)."""
    from IPython.display import display

    display(PlotlyFigure(figure))


def example_slices(rows: list[tuple[str, Any, Any]], *, cut_coords: tuple[float, float, float] = (0, -18, 4)) -> Any:
    """Orthogonal slices of example scans: each row a subject, raw scan left, preprocessed right.

    Parameters
    ----------
    rows : list of (label, raw image, preprocessed image)
        Images as nibabel images or paths; the raw one is shown in its own space (centred on
        its centre of mass), the preprocessed one at ``cut_coords`` in MNI space.
    cut_coords : tuple of float, default=(0, -18, 4)
        MNI coordinates (mm) of the preprocessed slices: through the ventricles and hippocampi.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    if not rows:
        raise ValueError("example_slices needs at least one (label, raw, preprocessed) row")
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.4 * len(rows)), squeeze=False)
    for (label, raw, prep), (ax_raw, ax_prep) in zip(rows, axes):
        plotting.plot_anat(raw, axes=ax_raw, title=f"{label}: as read", draw_cross=False,
                           annotate=False, dim=-0.5)
        plotting.plot_anat(prep, axes=ax_prep, title=f"{label}: preprocessed",
                           cut_coords=cut_coords, draw_cross=False, annotate=False, dim=-0.5)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.02, hspace=0.15, wspace=0.02)
    return fig
