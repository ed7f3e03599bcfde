"""Tests of brainage.inference.qc_figures: the registration-QC picture (moved from
tests/study/test_figures.py with the function)."""

from __future__ import annotations

import matplotlib
import nibabel as nib
import numpy as np
import pytest

from brainage.inference import qc_figures

matplotlib.use("Agg")


def test_registration_qc_one_panel_per_scan_with_outline():
    data = np.zeros((9, 10, 11), dtype=np.float32)
    data[2:7, 2:8, 2:9] = 1.0
    img = nib.Nifti1Image(data, np.eye(4))
    mask = nib.Nifti1Image((data > 0).astype(np.float32), np.eye(4))
    rows = [(f"sub-{i}: 0.5", img, i == 3) for i in range(4)]
    inner = nib.Nifti1Image((data * 0).astype(np.float32), np.eye(4))
    inner.dataobj[3:6, 3:7, 3:8] = 1.0
    fig = qc_figures.registration_qc(rows, [(inner, "cyan"), (mask, "red")], n_cols=3,
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
    fig = qc_figures.registration_qc(rows[:1], [(mask, "red")], cut_coords=(4, 5, 5),
                                  brain_colour="yellow")
    ax = [a for a in fig.axes if a.get_title()][0]
    assert [c.get_edgecolor()[0][:3].tolist() for c in ax.collections] == [[1, 0, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="at least one"):
        qc_figures.registration_qc([], [(mask, "red")])
    with pytest.raises(ValueError, match="n_cols must be at least 1; got 0"):
        qc_figures.registration_qc(rows, [(mask, "red")], n_cols=0)
    with pytest.raises(ValueError, match="outlines must name at least one"):
        qc_figures.registration_qc(rows, [])



def test_registration_qc_letters_every_panel():
    data = np.zeros((9, 10, 11), dtype=np.float32)
    data[2:7, 2:8, 2:9] = 1.0
    img = nib.Nifti1Image(data, np.eye(4))
    fig = qc_figures.registration_qc([("a", img, False)], [(img, "red")], cut_coords=(4, 5, 5))
    ax = [a for a in fig.axes if a.get_title()][0]
    assert sorted(t.get_text() for t in ax.texts) == ["A", "L", "L", "P", "R", "R"]

