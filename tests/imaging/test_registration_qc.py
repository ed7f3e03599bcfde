"""Tests of the registration QC figure (brainage.imaging.registration.outline_misfit) and of
the misregistrations it must catch (brainage.imaging.perturb.misregister): flat against
atrophy, high for a brain that is shifted, rotated or flipped, the same on every grid and
voxel order, and one figure stored per scan by the preprocessing cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nilearn import image
from scipy import ndimage

from brainage.imaging import perturb
from brainage.imaging import preprocess as pp
from brainage.imaging import registration as reg


def _brain(grid_mm: float = 4.0, *, erode_mm: float = 0.0, ventricles_mm: float = 0.0,
           rng: np.random.Generator | None = None) -> nib.Nifti1Image:
    """The template brain on the cropped grid of ``grid_mm`` (unequal sides, e.g. (41, 49, 43)
    at 4 mm), 0 outside its mask: a preprocessed volume. ``erode_mm`` shrinks the brain
    everywhere (atrophy, a tighter mask), ``ventricles_mm`` opens a dark hole of that radius at
    the lateral ventricles (it fills with CSF, not with 0), ``rng`` adds noise."""
    shape, affine = reg.template_grid(grid_mm, crop_to_brain=True)
    template, mask = reg.template_images()
    kwargs = dict(target_affine=affine, target_shape=shape, force_resample=True,
                  copy_header=True)
    data = image.resample_img(template, interpolation="continuous", **kwargs).get_fdata()
    brain = image.resample_img(mask, interpolation="nearest", **kwargs).get_fdata() > 0
    if erode_mm:
        inside = ndimage.distance_transform_edt(brain, sampling=(grid_mm,) * 3)
        brain &= inside > erode_mm
    if ventricles_mm:
        xyz = nib.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)
        centre = np.array([0.0, -15.7, 17.3])  # the simulator's lateral ventricles
        near = (np.linalg.norm(xyz - centre, axis=1) < ventricles_mm).reshape(shape)
        data[near] = 0.1 * data[brain].mean()
    if rng is not None:
        data = data + rng.normal(scale=0.05 * data[brain].mean(), size=shape)
    out = np.where(brain, np.maximum(data, 1e-3), 0.0).astype(np.float32)
    return nib.Nifti1Image(out, affine)


def test_aligned_template_brain_passes() -> None:
    misfit = reg.outline_misfit(_brain())
    assert 0.0 <= misfit < 2.0  # the outline on the template's, within half a 4 mm voxel
    assert reg.registration_passes(misfit)
    assert "passed" in reg.registration_qc_text(misfit)
    assert f"threshold {reg.MISFIT_THRESHOLD_MM:.1f} mm" in reg.registration_qc_text(misfit)


@pytest.mark.parametrize("erode_mm, ventricles_mm", [(4.0, 0.0), (8.0, 0.0), (0.0, 20.0),
                                                     (8.0, 20.0)])
def test_atrophy_does_not_move_the_misfit(erode_mm: float, ventricles_mm: float,
                                          rng: np.random.Generator) -> None:
    """A brain smaller than the template everywhere, with enlarged ventricles, noise: the
    misfit stays within 1 mm of the aligned brain's and passes, while the template
    correlation (the old QC figure) falls."""
    aligned = reg.outline_misfit(_brain())
    atrophied = _brain(erode_mm=erode_mm, ventricles_mm=ventricles_mm, rng=rng)
    misfit = reg.outline_misfit(atrophied)
    assert abs(misfit - aligned) < 1.0, (misfit, aligned)
    assert reg.registration_passes(misfit)
    if ventricles_mm:
        assert reg.alignment_score(atrophied) < reg.alignment_score(_brain()) - 0.1


@pytest.mark.parametrize("kind", sorted(perturb.MISREGISTRATIONS))
def test_misregistrations_raise_the_misfit(kind: str) -> None:
    aligned = reg.outline_misfit(_brain())
    for kwargs in perturb.MISREGISTRATIONS[kind]:
        misfit = reg.outline_misfit(perturb.misregister(_brain(), **kwargs))
        assert misfit > aligned + 1.0, (kwargs, misfit, aligned)
        if kind in ("shift 12 mm", "rotation 20 deg", "flipped axis"):
            assert not reg.registration_passes(misfit), (kwargs, misfit)


def test_misregister_moves_the_brain_by_the_shift() -> None:
    brain = _brain()
    moved = perturb.misregister(brain, shift_mm=(0.0, 12.0, 0.0))
    def centre(img: nib.Nifti1Image) -> np.ndarray:
        ijk = ndimage.center_of_mass(np.asarray(img.dataobj) > 0)
        return nib.affines.apply_affine(img.affine, ijk)
    np.testing.assert_allclose(centre(moved) - centre(brain), [0.0, 12.0, 0.0], atol=1.0)
    assert moved.shape == brain.shape and np.allclose(moved.affine, brain.affine)


@pytest.mark.parametrize("kwargs", [{"rotation": (3, 10.0)}, {"flip_axis": -1}])
def test_misregister_rejects_bad_axes(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="axis"):
        perturb.misregister(_brain(), **kwargs)


def test_misfit_is_the_same_for_any_voxel_order_and_grid() -> None:
    """World coordinates, not voxel indices: axes permuted and reversed give the same figure;
    a 2 mm grid one within 0.5 mm of the 4 mm grid's."""
    shifted = perturb.misregister(_brain(), shift_mm=(6.0, 0.0, 0.0))
    reordered = perturb.reorder_axes(shifted, (2, 0, 1), (True, False, True))
    assert reg.outline_misfit(reordered) == pytest.approx(reg.outline_misfit(shifted), abs=1e-6)
    fine = perturb.misregister(_brain(2.0), shift_mm=(6.0, 0.0, 0.0))
    assert reg.outline_misfit(fine) == pytest.approx(reg.outline_misfit(shifted), abs=0.5)


def test_misfit_of_an_empty_volume_is_nan_and_fails() -> None:
    empty = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))
    misfit = reg.outline_misfit(empty)
    assert math.isnan(misfit)
    assert not reg.registration_passes(misfit)
    assert "not measured" in reg.registration_qc_text(misfit)


def test_misfit_rejects_4d() -> None:
    with pytest.raises(ValueError, match=r"3D image; got shape \(7, 8, 9, 2\)"):
        reg.outline_misfit(nib.Nifti1Image(np.zeros((7, 8, 9, 2), np.float32), np.eye(4)))


def test_cache_stores_one_misfit_per_scan(tmp_path: Path) -> None:
    """The cache computes the figure once, stores it in the sidecar, and a second read (and
    :class:`CohortItem`) returns the same number; an entry written before the figure existed
    (only the old correlation under ``alignment``) gets it on first read."""
    scan = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(_brain(), scan)
    params = pp.PreprocessParams(space="MNI152NLin2009cSym", grid_mm=4.0, skull_stripped=True,
                                 crop_to_brain=True)
    cache = pp.PreprocessCache(tmp_path / "cache")
    misfit = cache.alignment(scan, params)
    assert misfit == pytest.approx(reg.outline_misfit(cache.get_or_compute(scan, params)))
    sidecar = cache.path_for(scan, params).with_suffix("").with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    assert meta["registration_misfit_mm"] == pytest.approx(misfit)
    del meta["registration_misfit_mm"]
    meta["alignment"] = 0.55  # an entry of the old figure
    sidecar.write_text(json.dumps(meta))
    item, = pp.preprocess_cohort([scan], params, cache)
    assert item.alignment == pytest.approx(misfit)
    assert json.loads(sidecar.read_text())["registration_misfit_mm"] == pytest.approx(misfit)


def test_template_masked_volume_has_no_misfit(tmp_path: Path) -> None:
    """Skull removed by the template's own mask: the outline is the template's, so the figure
    would pass any registration; it is NaN (not measured) instead."""
    params = pp.PreprocessParams(space="native", grid_mm=4.0, crop_to_brain=True,
                                 brain_extraction="template")
    shifted = perturb.misregister(_brain(), shift_mm=(0.0, 12.0, 0.0))
    assert math.isnan(pp.registration_misfit(shifted, params))
    own = pp.PreprocessParams(space="native", grid_mm=4.0, crop_to_brain=True)
    assert not reg.registration_passes(pp.registration_misfit(shifted, own))


def test_audit_and_predict_fail_the_same_scans(rng: np.random.Generator) -> None:
    """The audit (notebook 01), with the library's threshold, flags exactly the registered
    scans that brainage predict refuses (registration_passes false: above the threshold or
    not measured), and qc_removals counts the same ones."""
    import pandas as pd

    from brainage.data import audit

    values = [*rng.uniform(2.0, 9.0, 20), reg.MISFIT_THRESHOLD_MM, float("nan")]
    table = pd.DataFrame({"dataset": "d", "participant_id": [f"sub-{i}" for i in range(22)],
                          "path": [f"/d/{i}.nii.gz" for i in range(22)], "group": "HC",
                          "age": rng.uniform(20.0, 90.0, 22), "registration_misfit_mm": values})
    scores = dict(zip(table["path"], values))
    problems = audit.alignment_problems(table, {}, scores, reg.MISFIT_THRESHOLD_MM)
    refused = {p for p, v in scores.items() if not reg.registration_passes(v)}
    assert set(problems["path"]) == refused and len(refused) > 2
    removed = audit.qc_removals(table, reg.MISFIT_THRESHOLD_MM)
    assert removed.set_index("age_band").loc["all", "failed"] == len(refused)


@pytest.mark.slow
def test_real_scans_pass_and_their_misregistrations_fail(ixi10: Path, ixi10_cache: Path) -> None:
    """The ten raw IXI scans (23-51 y), preprocessed with the default parameters (deepbet,
    ANTs affine, 2 mm; the cache is shared with test_preprocess's IXI tests): every one passes
    (measured 2.72-3.41 mm); each shifted by 12 mm, rotated by 20 degrees or flipped fails."""
    paths = sorted(ixi10.glob("sub-*/anat/*_T1w.nii.gz"))
    items = pp.preprocess_cohort(paths, pp.PreprocessParams(), pp.PreprocessCache(ixi10_cache),
                                 n_jobs=2)
    assert all(item.ok for item in items), [item.error for item in items]
    for item in items:
        assert reg.registration_passes(item.alignment), (item.path, item.alignment)
        for kwargs in ({"shift_mm": (0.0, 12.0, 0.0)}, {"rotation": (0, 20.0)},
                       {"flip_axis": 1}):
            moved = reg.outline_misfit(perturb.misregister(item.image, **kwargs))
            assert not reg.registration_passes(moved), (item.path, kwargs, moved)
