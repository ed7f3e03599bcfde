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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PlotlyFigure", "example_slices", "registration_qc", "show"]


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


def example_slices(rows: list[tuple[str, Any, Any]], *,
                   cut_coords: tuple[float, float, float] = (0, -18, 4)) -> Any:
    """Orthogonal slices of example scans: each row a subject, raw scan left, preprocessed right.

    Parameters
    ----------
    rows : list of (label, raw image, preprocessed image)
        Images as nibabel images or paths (NIfTI, or OpenBHB ``.npy`` arrays); the raw one is
        shown in its own space (centred on its centre of mass), the preprocessed one at
        ``cut_coords`` in MNI space.
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
        plotting.plot_anat(_readable(raw), axes=ax_raw, title=f"{label}: as read", draw_cross=False,
                           annotate=False, dim=-0.5)
        plotting.plot_anat(prep, axes=ax_prep, title=f"{label}: preprocessed",
                           cut_coords=cut_coords, draw_cross=False, annotate=False, dim=-0.5)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.02, hspace=0.15, wspace=0.02)
    return fig


def _readable(image: Any) -> Any:
    """An image nilearn can open: OpenBHB ``.npy`` arrays are read into NIfTI images."""
    if isinstance(image, (str, Path)) and str(image).endswith(".npy"):
        from brainage.data.cohort import open_image

        return open_image(image)
    return image


def registration_qc(rows: list[tuple[str, Any, bool]], outlines: Sequence[tuple[Any, str]], *,
                    n_cols: int = 3,
                    cut_coords: tuple[float, float, float] = (0, -18, 4),
                    brain_colour: str | None = None) -> Any:
    """One panel per scan: the preprocessed scan with template outlines on top.

    Typical outlines are the template's white-matter boundary, which should follow the scan's
    ventricles and grey-white border, and its brain mask (for scans skull-stripped with that
    mask the brain fills it by construction; for scans delivered skull-stripped it should hug
    the brain). A shifted, tilted or mis-scaled scan shows both out of place. With
    ``brain_colour``, each scan's own brain mask (its voxels > 0: what its preprocessing kept,
    the subject's extracted mask for native scans) is outlined too: it should follow the
    brain's edge, and where it departs from the template's mask the subject's brain differs in
    shape or the registration is off. The panels
    are drawn with plain matplotlib (sagittal, coronal and axial slices side by side): nilearn's
    slicers lay their own sub-axes out over the figure and overlap in a dense grid.

    Parameters
    ----------
    rows : list of (label, preprocessed image, flagged)
        Images as nibabel images or paths in MNI space; ``flagged`` panels (e.g. an alignment
        score under the threshold) get a red title.
    outlines : sequence of (image, colour)
        Template-space images (nibabel images or paths, any grid: resampled onto each scan's),
        each drawn as its 0.5 contour in the matplotlib colour given.
    n_cols : int, default=3
        Panels per figure row.
    cut_coords : tuple of float, default=(0, -18, 4)
        MNI coordinates (mm) of the sagittal, coronal and axial slices.
    brain_colour : str, optional
        Matplotlib colour of each scan's own brain-mask outline (default: not drawn).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import image as nimg

    if not rows:
        raise ValueError("registration_qc needs at least one (label, image, flagged) row")
    if n_cols < 1:
        raise ValueError(f"n_cols must be at least 1; got {n_cols}")
    if not outlines:
        raise ValueError("outlines must name at least one (template image, colour) pair")
    n_cols = min(n_cols, len(rows))
    n_rows = -(-len(rows) // n_cols)  # ceil
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 1.75 * n_rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    templates = [_as_float(img) for img, _ in outlines]
    on_grid: dict[tuple, list[np.ndarray]] = {}  # outlines resampled once per scan grid
    for (label, image, flagged), ax in zip(rows, axes.flat):
        scan_img = nib.as_closest_canonical(nimg.load_img(image))
        key = (scan_img.shape, scan_img.affine.tobytes())
        if key not in on_grid:
            on_grid[key] = [_resampled(t, scan_img) for t in templates]
        own = [] if brain_colour is None else [
            (np.asarray(scan_img.dataobj) > 0).astype(np.float32)]
        scan, masks = _ortho_montage(scan_img, [*on_grid[key], *own], cut_coords)
        ax.imshow(scan, cmap="gray", vmin=0, vmax=float(np.percentile(scan, 99.5)) or 1.0,
                  interpolation="nearest")
        colours = [colour for _, colour in outlines] + ([brain_colour] if own else [])
        for mask, colour in zip(masks, colours):
            ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.7)
        ax.set_title(label, fontsize=9, color="red" if flagged else "black", pad=2)
    fig.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.3)
    return fig


def _as_float(image: Any) -> Any:
    """An image (or path) as float32: a smooth 0.5 contour, also for binary masks."""
    import nibabel as nib
    from nilearn import image as nimg

    img = nimg.load_img(image)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)


def _resampled(template: Any, scan_img: Any) -> np.ndarray:
    """``template`` resampled (linearly) onto the grid of ``scan_img``."""
    from nilearn import image as nimg

    with warnings.catch_warnings():  # intended: linear resampling of a binary mask
        warnings.filterwarnings("ignore", message="Resampling binary images")
        resampled = nimg.resample_to_img(template, scan_img, interpolation="linear",
                                         force_resample=True, copy_header=True)
    return np.asarray(resampled.dataobj, dtype=np.float32)


def _ortho_montage(scan_img: Any, masks: Sequence[np.ndarray],
                   cut_mm: tuple[float, float, float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sagittal, coronal and axial slices through ``cut_mm``, side by side (scan and masks).

    ``scan_img`` is in RAS voxel order (``nib.as_closest_canonical``) and ``masks`` are on its
    grid; slices are shown with superior (or anterior, for the axial slice) at the top and, on
    coronal and axial slices, the subject's left on the right (as nilearn shows them).
    """
    scan = np.asarray(scan_img.dataobj, dtype=np.float32)
    ijk = np.linalg.solve(scan_img.affine, [*cut_mm, 1.0])[:3]
    i, j, k = (int(np.clip(round(v), 0, n - 1)) for v, n in zip(ijk, scan.shape))

    def montage(vol: np.ndarray) -> np.ndarray:
        views = [vol[i, :, :].T[::-1], vol[:, j, :].T[::-1], vol[:, :, k].T[::-1]]
        height = max(v.shape[0] for v in views)
        padded = [np.pad(v, ((height - v.shape[0], 0), (0, 2))) for v in views]  # 2-voxel gap
        return np.hstack(padded)

    return montage(scan), [montage(mask) for mask in masks]
