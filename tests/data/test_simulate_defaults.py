"""The issue-28 additions to the simulator are opt-in: with the defaults (every new effect
off) the simulator is the one before issue 28, draw for draw, and the preset
(:data:`brainage.data.simulate.VARIED_SETTINGS`) turns each effect on."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage.data import simulate as sim
from brainage.data._anatomy import build_anatomy

RES = 4.0

#: every issue-28 setting at its off value, written out
OFF = {"individual": {f"{m}_sd": 0.0 for m in sim.INDIVIDUAL_MARKERS},
       "anatomy": {"fine_deformation_sd_mm": 0.0, "ventricle_asymmetry_sd": 0.0,
                   "mask_contraction_share": 0.0, "template_contraction_share": 1.0},
       "scanner": {"gamma_sd": 0.0}}

#: A cohort drawn with the default simulator (main 5bda2ba): draw_cohort(2, 1, 1,
#: default config, default_rng(7)) with add_doses at 4 mm, and each subject's image
#: (synthesise_subject, zero site bias, SeedSequence(i)): mean, SD and voxels above 0. The
#: issue-28 branch's defaults gave the same tables and images bit for bit (also a 9-subject
#: cohort of simulate_cohort, seed 0); compared with a tolerance, as other CPUs change the last
#: bits of resampling.
MAIN_TABLE = {
    "age": [69.5, 70.0, 91.8, 61.4],
    "biological_age": [72.891, 70.1804, 95.8206, 68.5667],
    "realised_biological_age": [72.991, 70.1804, 95.8206, 68.9132],
    "head_scale": [0.9875891555, 0.9545700434, 1.0563423015, 0.9546110761],
    "ventricle_scale": [1.0628368248, 0.8702347528, 1.0389187651, 0.7003617033],
    "scan_noise": [0.0344631744, 0.0204803195, 0.0412332666, 0.0530563866],
    "scan_mask_margin_mm": [2.5777014571, 1.6712577901, 5.4429846365, 3.6047859757],
    "brain_loss": [0.1569948598, 0.1448235925, 0.2587311821, 0.1375696219],
    "ventricle_ratio": [2.1189831524, 2.0072290177, 3.2995053537, 1.9434897396],
}
MAIN_GROUPS = ["PD", "HC", "HC", "AD"]
MAIN_IMAGES = [(220.75831604003906, 312.2568054199219, 31613),
               (213.84463500976562, 316.533935546875, 29247),
               (175.92869567871094, 233.72398376464844, 35122),
               (283.73162841796875, 398.1273193359375, 32077)]


@pytest.fixture(scope="module")
def anat():
    return build_anatomy(RES)


def _images(anat, table, cfg):
    return [sim.synthesise_subject(anat, row, cfg, np.zeros(9), np.random.SeedSequence(i))
            for i, row in enumerate(table.to_dict("records"))]


def test_every_issue28_effect_is_off_by_default():
    default = sim.SimulationConfig()
    assert default == sim.config_from_dict(OFF) == sim.config_from_dict({})
    assert not default.individual.active
    preset = sim.varied_config()
    assert preset.individual.active
    for group, values in sim.VARIED_SETTINGS.items():
        for key, value in values.items():
            assert getattr(getattr(preset, group), key) == value
            assert getattr(getattr(default, group), key) != value, (group, key)
    # overrides merge into the preset's groups
    tuned = sim.varied_config({"anatomy": {"template_contraction_share": 1.0}})
    assert tuned.anatomy.template_contraction_share == 1.0
    assert tuned.anatomy.ventricle_asymmetry_sd == preset.anatomy.ventricle_asymmetry_sd
    assert tuned.individual == preset.individual


def test_default_cohort_is_the_simulator_before_issue28(anat):
    cfg = sim.SimulationConfig()
    table = sim.add_doses(sim.draw_cohort(2, 1, 1, cfg, np.random.default_rng(7)), cfg, anat)
    assert table["group"].tolist() == MAIN_GROUPS
    for col, expected in MAIN_TABLE.items():
        np.testing.assert_allclose(table[col], expected, rtol=1e-8, atol=1e-9, err_msg=col)
    # the new columns hold the off values, exactly
    for m in sim.INDIVIDUAL_MARKERS:
        assert (table[f"rate_{m}"] == 1.0).all(), m
    assert (table["scan_gamma"] == 1.0).all() and (table["ventricle_asymmetry"] == 0.0).all()
    for img, (mean, sd, voxels) in zip(_images(anat, table, cfg), MAIN_IMAGES):
        assert img.mean() == pytest.approx(mean, rel=1e-5)
        assert img.std() == pytest.approx(sd, rel=1e-5)
        assert abs(int((img > 0).sum()) - voxels) <= 2


def test_off_effects_draw_nothing():
    # the default draws none of the new effects (the generator's use is pinned by
    # test_default_cohort_is_the_simulator_before_issue28); the preset with every effect set
    # to its off value is the default; an effect turned on keeps the draws before it (each is
    # drawn after the earlier ones) and consumes draws of its own
    cfg = sim.SimulationConfig()
    rng = np.random.default_rng(3)
    table = sim.draw_cohort(5, 2, 2, cfg, rng)
    assert sim.varied_config(OFF) == cfg
    for group, key in (("scanner", "gamma_sd"), ("individual", "wmh_sd"),
                       ("anatomy", "ventricle_asymmetry_sd")):
        on_rng = np.random.default_rng(3)
        on = sim.draw_cohort(5, 2, 2, sim.config_from_dict(
            {group: {key: sim.VARIED_SETTINGS[group][key]}}), on_rng)
        head = ["age", "biological_age", "sex", "site", "head_scale", "ventricle_scale"]
        assert on[head].equals(table[head]), key
        # an effect that is on consumes draws the default does not
        assert on_rng.bit_generator.state != rng.bit_generator.state, key


@pytest.mark.parametrize(("group", "key"), [
    ("individual", None), ("anatomy", "fine_deformation_sd_mm"),
    ("anatomy", "ventricle_asymmetry_sd"), ("anatomy", "template_contraction_share"),
    ("scanner", "gamma_sd")])
def test_each_issue28_effect_changes_the_images(anat, group, key):
    base = sim.SimulationConfig()
    settings = sim.VARIED_SETTINGS[group] if key is None else {
        key: sim.VARIED_SETTINGS[group][key]}
    on = sim.config_from_dict({group: settings})
    people = sim.draw_cohort(3, 0, 0, on, np.random.default_rng(5)).assign(biological_age=75.0)
    if key == "ventricle_asymmetry_sd":  # a clear asymmetry for each of the three
        people["ventricle_asymmetry"] = [0.3, -0.3, 0.3]
    off_rows = people.copy()
    for m in sim.INDIVIDUAL_MARKERS:
        off_rows[f"rate_{m}"] = 1.0
    off_rows["scan_gamma"], off_rows["ventricle_asymmetry"] = 1.0, 0.0
    a = _images(anat, sim.add_doses(off_rows, base, anat), base)
    b = _images(anat, sim.add_doses(people, on, anat), on)
    for x, y in zip(a, b):
        assert not np.allclose(x, y, atol=1e-3 * float(x.max())), (group, key)
    # the same rows with the effect's own values at off are the default's images, exactly
    c = _images(anat, sim.add_doses(off_rows, sim.config_from_dict(OFF), anat),
                sim.config_from_dict(OFF))
    for x, z in zip(a, c):
        np.testing.assert_array_equal(x, z)


def test_preset_from_a_settings_file(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("anatomy:\n  mask_contraction_share: 0.25\n", encoding="utf-8")
    assert sim.load_config_file(path).anatomy.mask_contraction_share == 0.25
    assert not sim.load_config_file(path).individual.active  # on top of the defaults
    tuned = sim.load_config_file(path, preset="varied")
    assert tuned == sim.varied_config({"anatomy": {"mask_contraction_share": 0.25}})
    with pytest.raises(sim.SimulationConfigError, match="preset"):
        sim.load_config_file(path, preset="issue29")


def test_cli_simulate_preset(tmp_path):
    from brainage.cli import main

    assert main(["-q", "simulate", str(tmp_path / "bids"), "--n-healthy", "2",
                 "--resolution-mm", "4", "--preset", "varied"]) == 0
    written = sim.config_from_dict(sim.read_truth(tmp_path / "bids")["config"])
    assert written == sim.varied_config()
    table = pd.read_csv(tmp_path / "bids" / "derivatives" / "ground_truth"
                        / "participants_truth.tsv", sep="\t")
    assert (table["scan_gamma"] != 1.0).all() and (table["rate_wmh"] != 1.0).all()


def test_preset_config_names_the_presets():
    assert sim.preset_config(None) == sim.SimulationConfig()
    assert sim.preset_config("varied") == sim.varied_config()
    assert sim.PRESETS == ("varied",)
    with pytest.raises(sim.SimulationConfigError, match="varied"):
        sim.preset_config("issue-28")


def test_template_contraction_share_checked():
    assert sim.SimulationConfig().anatomy.template_contraction_share == 1.0
    assert sim.config_from_dict(
        {"anatomy": {"template_contraction_share": 0}}).anatomy.template_contraction_share == 0
    for bad in (-0.1, 1.5, True, "0"):
        with pytest.raises(sim.SimulationConfigError, match="template_contraction_share"):
            sim.config_from_dict({"anatomy": {"template_contraction_share": bad}})


def _at_ages(anat, cfg, ages=(25.0, 75.0)):
    people = sim.draw_cohort(3, 0, 0, cfg, np.random.default_rng(12))
    return {age: _images(anat, sim.add_doses(people.assign(biological_age=age), cfg, anat), cfg)
            for age in ages}


def test_template_contraction_share_removes_the_contraction(anat):
    # share 0 stands for the affine registration rescaling a contracted brain to the template's
    # size (benchmarks/bench_registered_contraction.py): the same person at 25 and 75 keeps
    # the young brain's mask, and the CSF inside it rises less than with the whole contraction
    from brainage.data.audit import tissue_fractions

    def csf(img):
        return tissue_fractions(nib.Nifti1Image(img, anat.affine))["csf_fraction"]

    kept = _at_ages(anat, sim.SimulationConfig())
    removed = _at_ages(anat, sim.config_from_dict({"anatomy": {"template_contraction_share": 0}}))
    follows = _at_ages(anat, sim.config_from_dict({"anatomy": {"mask_contraction_share": 1}}))
    for young, old in zip(removed[25.0], removed[75.0]):
        np.testing.assert_array_equal(young > 0, old > 0)  # the mask does not move
    for young, old in zip(follows[25.0], follows[75.0]):  # the failure it avoids: a mask
        assert (old > 0).sum() < 0.95 * (young > 0).sum()  # that shrinks with age
    rise = {name: np.mean([csf(o) - csf(y) for y, o in zip(images[25.0], images[75.0])])
            for name, images in (("kept", kept), ("removed", removed))}
    assert 0.02 < rise["removed"] < 0.8 * rise["kept"], rise
    # the other ageing processes stay: an old brain is not the young one
    for young, old in zip(removed[25.0], removed[75.0]):
        assert not np.allclose(young, old, atol=1e-3 * float(young.max()))


def test_native_images_keep_the_whole_contraction(anat):
    # a native-space image is registered by the project: it shows all of the contraction,
    # whatever template_contraction_share says
    native = {"native_space": True}
    a = _at_ages(anat, sim.config_from_dict(native), ages=(75.0,))[75.0]
    b = _at_ages(anat, sim.config_from_dict(
        {**native, "anatomy": {"template_contraction_share": 0}}), ages=(75.0,))[75.0]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_mask_atrophy_share_outlines_the_receding_cortex(anat):
    # share 1: the brain mask follows the regional flows (a brain extraction outlining the
    # receding cortex), so the CSF a thinner cortex leaves at the brain's edge falls outside
    # it: the mask shrinks with age and the CSF inside it rises less than with share 0
    from brainage.data.audit import tissue_fractions

    def csf(img):
        return tissue_fractions(nib.Nifti1Image(img, anat.affine))["csf_fraction"]

    removed = {"template_contraction_share": 0.0}
    ignores = _at_ages(anat, sim.config_from_dict({"anatomy": removed}))
    follows = _at_ages(anat, sim.config_from_dict(
        {"anatomy": {**removed, "mask_atrophy_share": 1.0}}))
    for young, old in zip(follows[25.0], follows[75.0]):
        assert (old > 0).sum() < 0.97 * (young > 0).sum()
    rise = {name: np.mean([csf(o) - csf(y) for y, o in zip(images[25.0], images[75.0])])
            for name, images in (("ignores", ignores), ("follows", follows))}
    assert rise["follows"] < 0.5 * rise["ignores"], rise
    for bad in (-0.5, 2.0, False):
        with pytest.raises(sim.SimulationConfigError, match="mask_atrophy_share"):
            sim.config_from_dict({"anatomy": {"mask_atrophy_share": bad}})
