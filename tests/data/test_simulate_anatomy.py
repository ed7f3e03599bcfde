"""Tests of the simulator's brain mask, scanner randomisation and anatomy (issue 28, items 2
and 3): the mask outlines the contracted brain, a per-subject gamma, brain shape at two scales
and ventricular asymmetry. Each is opt-in (off by default): the tests select the issue-28
preset or the setting they test."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats

from brainage.data import simulate as sim
from brainage.data._anatomy import build_anatomy
from brainage.data.audit import tissue_fractions

RES = 4.0
NO_RATES = {f"{m}_sd": 0 for m in sim.INDIVIDUAL_MARKERS}
#: the varied preset with every individual rate 1
PRESET_NO_RATES = sim.varied_config({"individual": NO_RATES})


@pytest.fixture(scope="module")
def anat():
    return build_anatomy(RES)


def _images(anat, rows, cfg):
    return [sim.synthesise_subject(anat, row, cfg, np.zeros(9), np.random.SeedSequence(i))
            for i, row in enumerate(rows.to_dict("records"))]


@pytest.mark.parametrize("follows", [1.0, 0.0])
def test_brain_mask_follows_the_contracted_brain(anat, follows):
    # issue 28: the mask kept the young brain's outline while the whole brain contracted, so
    # the CSF rim inside the mask grew with age (CSF fraction +0.13 from 25 to 75 when all
    # parenchymal loss is contraction). A brain extraction outlines the brain it sees: the
    # mask shrinks with the brain and the CSF fraction inside it stays about level.
    cfg = sim.config_from_dict({"individual": NO_RATES, "ageing": {
        "wm_share": [[40, 1.0], [70, 1.0]], "ventricle_gain": 0.0,
        "hippocampus": [40, 75, 0.0], "subcortical": [20, 60, 0.0]},
        "anatomy": {"mask_contraction_share": follows}})
    people = sim.draw_cohort(4, 0, 0, cfg, np.random.default_rng(12))
    out = {}
    for age in (25.0, 75.0):
        rows = sim.add_doses(people.assign(biological_age=age), cfg, anat)
        fr = [tissue_fractions(nib.Nifti1Image(img, anat.affine)) for img in
              _images(anat, rows, cfg)]
        out[age] = (np.array([f["csf_fraction"] for f in fr]),
                    np.array([f["brain_voxels"] for f in fr], dtype=float),
                    rows["brain_shrink"].to_numpy())
    csf_rise = out[75.0][0] - out[25.0][0]
    if follows == 0:  # the young brain's outline (without the preset): the rim grows inside it
        assert np.all(csf_rise > 0.08), csf_rise
        np.testing.assert_allclose(out[75.0][1], out[25.0][1], rtol=0.01)
        return
    assert np.all(np.abs(csf_rise) < 0.02), csf_rise
    # the mask lost about the contracted volume (the shrink at 75 is about 12 %)
    mask_loss = 1 - out[75.0][1] / out[25.0][1]
    shrink = out[75.0][2] - out[25.0][2]
    assert shrink.min() > 0.08
    np.testing.assert_allclose(mask_loss, shrink, atol=0.04)


def test_cortical_thinning_still_widens_the_csf_inside_the_mask(anat):
    # the regional flows and GM-to-CSF conversion (sulci widening) stay inside the mask: the
    # default ageing still raises the CSF fraction of the same people from 25 to 75 when the
    # registration removes the whole brain's contraction (the varied preset)
    cfg = PRESET_NO_RATES
    people = sim.draw_cohort(4, 0, 0, cfg, np.random.default_rng(12))
    csf = {}
    for age in (25.0, 75.0):
        rows = sim.add_doses(people.assign(biological_age=age), cfg, anat)
        csf[age] = np.array([tissue_fractions(nib.Nifti1Image(img, anat.affine))["csf_fraction"]
                             for img in _images(anat, rows, cfg)])
    rise_per_decade = (csf[75.0] - csf[25.0]) / 5
    assert np.all(rise_per_decade > 0.004) and np.all(rise_per_decade < 0.02), rise_per_decade


def test_gamma_is_drawn_per_subject_around_one():
    cfg = sim.varied_config()
    table = sim.draw_cohort(3000, 0, 0, cfg, np.random.default_rng(6))
    logs = np.log(table["scan_gamma"])
    assert logs.std() == pytest.approx(cfg.scanner.gamma_sd, rel=0.06)
    assert abs(logs.mean()) < 0.01
    assert abs(stats.spearmanr(table["age"], logs)[0]) < 0.06


def test_gamma_changes_the_tissue_levels_relative_to_white_matter(anat):
    # the same brain with gamma 0.8 and 1.25: GM and CSF relative to WM move as level**gamma
    cfg = sim.config_from_dict({"scanner": {"gamma_sd": 0.0}})
    one = sim.add_doses(sim.draw_cohort(1, 0, 0, cfg, np.random.default_rng(3)), cfg, anat)
    wm = anat_prob(anat, "wm") > 0.95
    gm = anat_prob(anat, "gm") > 0.8
    ratios = {}
    for gamma in (0.8, 1.0, 1.25):
        row = one.assign(scan_gamma=gamma, scan_noise=0.0, scan_bias=0.0, scan_texture=0.0,
                         scan_blur_mm=0.0).to_dict("records")[0]
        img = sim.synthesise_subject(anat, row, cfg, np.zeros(9), np.random.SeedSequence(0))
        ratios[gamma] = np.median(img[gm]) / np.median(img[wm])
    for gamma in (0.8, 1.25):
        assert ratios[gamma] == pytest.approx(ratios[1.0] ** gamma, abs=0.02), (gamma, ratios)
    assert ratios[0.8] > ratios[1.0] > ratios[1.25]


def anat_prob(anat, tissue):
    """The template's GM or WM partial-volume map on the full grid."""
    box = getattr(anat, tissue)
    full = np.zeros(anat.shape, dtype=np.float32)
    full[anat.box] = box
    return full


@pytest.mark.parametrize(("setting", "words"), [
    ({"scanner": {"gamma_sd": -0.1}}, ["scanner.gamma_sd", "[0, 0.5]", "-0.1"]),
    ({"scanner": {"gamma_sd": True}}, ["scanner.gamma_sd", "a number"]),
    ({"anatomy": {"fine_deformation_sd_mm": 6}}, ["anatomy.fine_deformation_sd_mm", "[0, 5]"]),
    ({"anatomy": {"fine_control_spacing_mm": 2}}, ["anatomy.fine_control_spacing_mm", "[6, 40]"]),
    ({"anatomy": {"ventricle_asymmetry_sd": 0.7}}, ["anatomy.ventricle_asymmetry_sd",
                                                    "[0, 0.5]"]),
    ({"anatomy": {"ventricle_asymetry_sd": 0.1}}, ["unknown setting", "ventricle_asymmetry_sd"]),
    ({"anatomy": {"mask_contraction_share": 1.5}}, ["anatomy.mask_contraction_share",
                                                     "[0, 1]"]),
    ({"anatomy": {"mask_contraction_share": True}}, ["anatomy.mask_contraction_share",
                                                      "a number"]),
])
def test_bad_anatomy_and_scanner_settings_name_the_setting(setting, words):
    with pytest.raises(sim.SimulationConfigError) as err:
        sim.config_from_dict(setting)
    for word in words:
        assert word in str(err.value)


def test_brain_shape_varies_at_two_scales(anat):
    # the fine displacement adds its own SD (1 mm) and varies over a shorter distance than the
    # coarse one: neighbours 12 mm apart along x correlate less
    coarse_only = sim.AnatomyConfig(fine_deformation_sd_mm=0.0)
    both = sim.varied_config().anatomy
    fine_only = dataclasses.replace(both, deformation_sd_mm=0.0)
    a = sim._shape_displacement(anat, coarse_only, np.random.default_rng(1))
    b = sim._shape_displacement(anat, both, np.random.default_rng(1))
    f = sim._shape_displacement(anat, fine_only, np.random.default_rng(1))
    np.testing.assert_allclose(b - a, f, atol=1e-5)  # the fine one is drawn after the coarse
    fine_mm = np.concatenate([sim._shape_displacement(anat, fine_only, np.random.default_rng(s))
                              for s in range(8)], axis=1) * RES
    assert fine_mm.std() == pytest.approx(1.0, rel=0.3)

    def lag_corr(disp):
        vol = np.zeros((3, anat.gm.size), dtype=np.float32)
        vol[:, anat.support_flat] = disp
        vol = vol.reshape(3, *anat.box_shape)
        inside = anat.support.reshape(anat.box_shape)
        lag = int(12 / RES)
        both_in = inside[lag:] & inside[:-lag]
        return np.corrcoef(vol[0][lag:][both_in], vol[0][:-lag][both_in])[0, 1]

    coarse_mm = sim._shape_displacement(anat, coarse_only, np.random.default_rng(2))
    assert lag_corr(f) < lag_corr(coarse_mm) - 0.2


def _ventricle_sides(anat):
    vent = np.isin(anat.labels, [r["index"] for r in anat.regions
                                 if r["group"] == "lateral_ventricles"])
    vent = ndi.binary_dilation(vent, iterations=2)
    x_mm = (anat.affine @ np.vstack([np.arange(anat.shape[0]), np.zeros((2, anat.shape[0])),
                                     np.ones(anat.shape[0])]))[0]
    right = (x_mm > 0)[:, None, None] & vent
    left = (x_mm < 0)[:, None, None] & vent
    return left, right


def test_ventricles_differ_between_hemispheres(anat):
    # the same brain with asymmetry 0 and +-0.4: one lateral ventricle grows more than the
    # other, the sign picks the side (measured with the whole contraction kept, as the test
    # was written: the dark voxels of a dilated template ventricle)
    cfg = sim.varied_config({"individual": NO_RATES, "anatomy": {
        "template_contraction_share": 1.0, "mask_contraction_share": 1.0}})
    one = sim.draw_cohort(1, 0, 0, cfg, np.random.default_rng(5)).assign(
        biological_age=75.0, ventricle_scale=1.5, scan_noise=0.0)
    left, right = _ventricle_sides(anat)
    index = {}
    for a in (-0.4, 0.0, 0.4):
        rows = sim.add_doses(one.assign(ventricle_asymmetry=a), cfg, anat)
        img = _images(anat, rows, cfg)[0]
        dark = img < 0.6 * np.percentile(img[img > 0], 90)
        r, l_ = float((dark & right).sum()), float((dark & left).sum())
        index[a] = (r - l_) / (r + l_)
    assert index[0.4] > index[0.0] + 0.05 and index[-0.4] < index[0.0] - 0.05, index


def test_asymmetry_is_drawn_per_subject_and_keeps_earlier_draws():
    cfg = sim.varied_config()
    table = sim.draw_cohort(2000, 0, 0, cfg, np.random.default_rng(6))
    assert table["ventricle_asymmetry"].std() == pytest.approx(
        cfg.anatomy.ventricle_asymmetry_sd, rel=0.08)
    assert abs(stats.spearmanr(table["age"], table["ventricle_asymmetry"])[0]) < 0.06
    flat = sim.varied_config({"anatomy": {"ventricle_asymmetry_sd": 0.0}})
    other = sim.draw_cohort(2000, 0, 0, flat, np.random.default_rng(6))
    np.testing.assert_allclose(table["ventricle_scale"], other["ventricle_scale"])
    assert (other["ventricle_asymmetry"] == 0).all()
    # off, it draws nothing: the scanner's draws after it are those of a cohort without it
    plain = sim.draw_cohort(2000, 0, 0, sim.SimulationConfig(), np.random.default_rng(6))
    np.testing.assert_array_equal(plain["scan_noise"],
                                  sim.draw_cohort(2000, 0, 0, sim.config_from_dict(
                                      {"scanner": {"gamma_sd": 0.1}}),
                                      np.random.default_rng(6))["scan_noise"])
    assert not np.allclose(table["scan_noise"], plain["scan_noise"])
