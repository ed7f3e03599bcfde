"""The registration-QC picture of a preprocessed scan: the scan under the template's outlines.

Drawn for every scan by ``brainage bids``, for each refused one by ``brainage predict``, and for
the audit's examples (notebook 01), so that a user judges a scan the QC refused from the same
picture everywhere. The montage helpers (:func:`ortho_montage`, :func:`label_orientation`) are
shared with the study's figures (:mod:`brainage.study.figures`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainage._utils import atomic_write

__all__ = [
    "label_orientation",
    "ortho_montage",
    "panel_widths",
    "registration_qc",
    "save_registration_qc",
]


#: Orientation letters of the three panels of a montage, (left edge, right edge).
_ORIENTATION = (("P", "A"), ("L", "R"), ("L", "R"))



def label_orientation(ax: Any, widths: Sequence[int], colour: str = "white") -> None:
    """Orientation letters at the left and right edge of each panel of a montage."""
    x0 = 0
    for width, (left, right) in zip(widths, _ORIENTATION):
        for x, letter, ha in ((x0 + 0.5, left, "left"), (x0 + width - 1.5, right, "right")):
            ax.text(x, 1.0, letter, color=colour, fontsize=7, ha=ha, va="top",
                    fontweight="bold")
        x0 += width + 2  # the montage's 2-voxel gap



def panel_widths(img: Any) -> list[int]:
    """Widths (voxels) of the sagittal, coronal and axial panels of ``ortho_montage``."""
    shape = img.shape
    return [shape[1], shape[0], shape[0]]



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
    are drawn with plain matplotlib (sagittal, coronal and axial slices side by side, their
    edges lettered P/A and L/R): nilearn's slicers lay their own sub-axes out over the figure
    and overlap in a dense grid.

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
        scan, masks = ortho_montage(scan_img, [*on_grid[key], *own], cut_coords)
        ax.imshow(scan, cmap="gray", vmin=0, vmax=float(np.percentile(scan, 99.5)) or 1.0,
                  interpolation="nearest")
        colours = [colour for _, colour in outlines] + ([brain_colour] if own else [])
        for mask, colour in zip(masks, colours):
            ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.7)
        ax.set_title(label, fontsize=9, color="red" if flagged else "black", pad=2)
        label_orientation(ax, panel_widths(scan_img))
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



def ortho_montage(scan_img: Any, masks: Sequence[np.ndarray],
                   cut_mm: tuple[float, float, float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sagittal, coronal and axial slices through ``cut_mm``, side by side (scan and masks).

    ``scan_img`` is in RAS voxel order (``nib.as_closest_canonical``) and ``masks`` are on its
    grid; slices are shown with superior (or anterior, for the axial slice) at the top,
    posterior on the left of the sagittal slice and, on coronal and axial slices, the
    subject's left on the left (neurological convention, as nilearn shows them).
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



def save_registration_qc(path: str | Path, img: Any, label: str, *, flagged: bool) -> Path:
    """The registration-QC picture of one scan as a PNG (written atomically): the registered
    scan under the template's white-matter boundary (cyan) and brain mask (red), with the
    scan's own brain outline (yellow), whose fit to the red one the QC figure measures
    (:func:`brainage.imaging.registration.outline_misfit`). Drawn for every scan by
    ``brainage bids`` and for each refused one by ``brainage predict``, so that a user can
    judge a scan the QC refused.

    Parameters
    ----------
    path : str or Path
        The PNG (its folder is created).
    img : nibabel image or path
        The preprocessed scan (MNI space).
    label : str
        Panel title, e.g. the scan and its QC text.
    flagged : bool
        Red title: the scan failed the QC.
    """
    import matplotlib.pyplot as plt
    from nilearn import datasets

    # ANTs (imported by the registration module) takes seconds: imported here, not at the top,
    # so that the command line, which imports brainage.inference.predict, starts fast
    from brainage.imaging.registration import template_images


    path = Path(path)
    fig = registration_qc([(label, img, flagged)],
                          [(datasets.load_mni152_wm_template(resolution=2), "cyan"),
                           (template_images()[1], "red")], brain_colour="yellow")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return path

