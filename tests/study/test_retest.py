"""Tests of brainage.study.retest: which subjects are rescanned, and the whole retest of a tiny
model on a tiny simulated cohort (rescans predicted by the user's tool, paired, tabulated)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainage.analysis.metrics import AgeBiasCorrection
from brainage.data import simulate as sim
from brainage.inference import model_folder
from brainage.inference import predict as bp
from brainage.study import retest
from tests.dask_cluster import tree_bytes

MNI = "MNI152NLin2009cSym"


def _cohort_table(n: int = 12) -> pd.DataFrame:
    split = ["train"] * 4 + ["val"] * 2 + ["test"] * 3 + ["clinical"] * 3
    group = ["HC"] * 9 + ["AD", "AD", "PD"]
    return pd.DataFrame({"participant_id": [f"sub-{i:04d}" for i in range(1, n + 1)],
                         "split": split, "group": group})


def test_choose_rescan_subjects_takes_only_held_out_scans():
    table = _cohort_table()
    chosen = retest.choose_rescan_subjects(table, n_controls=2, n_patients=2, seed=0)
    rows = table.set_index("participant_id").loc[chosen]
    assert (rows["split"] == "test").sum() == 2
    assert (rows["split"] == "clinical").sum() == 2
    assert set(rows.loc[rows["split"] == "clinical", "group"]) == {"AD", "PD"}  # alternately
    assert not rows["split"].isin(["train", "val"]).any()
    assert chosen == retest.choose_rescan_subjects(table, n_controls=2, n_patients=2, seed=0)
    everyone = retest.choose_rescan_subjects(table, n_controls=50, n_patients=50)
    assert len(everyone) == 6


@pytest.mark.parametrize("kwargs", [{"n_controls": -1, "n_patients": 1},
                                    {"n_controls": 1.5, "n_patients": 1},
                                    {"n_controls": True, "n_patients": 1}])
def test_choose_rescan_subjects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="must be an int >= 0"):
        retest.choose_rescan_subjects(_cohort_table(), **kwargs)


def test_choose_rescan_subjects_needs_held_out_subjects():
    table = _cohort_table().assign(split="train")
    with pytest.raises(ValueError, match="no test-split"):
        retest.choose_rescan_subjects(table, n_controls=3, n_patients=3)


@pytest.mark.slow
def test_run_retest_end_to_end(tmp_path, model_dir):
    # the session's tiny rnc and l1 heads (tests/conftest.py: 8 mm grid cropped to the brain,
    # skull-stripped MNI input, one epoch each), copied for this module: the retest checks
    # counts, the correction's scaling of the SEM and the card, not what the heads learned
    models = model_dir
    correction = AgeBiasCorrection("linear", {"slope": 0.8, "intercept": 10.0}, 12, (20.0, 80.0))
    (models / "rnc" / model_folder.BIAS_CORRECTION_FILE).write_text(json.dumps(correction.to_dict()))

    made = sim.simulate_cohort(tmp_path / "cohort", n_healthy=5, n_ad=1, n_pd=1, seed=2,
                               resolution_mm=4)
    table = made.participants.copy()
    table["path"] = [str(made.root / p / "anat" / f"{p}_T1w.nii.gz")
                     for p in table["participant_id"]]
    table["split"] = ["test" if g == "HC" else "clinical" for g in table["group"]]
    chosen = retest.choose_rescan_subjects(table, n_controls=3, n_patients=2, seed=0)
    before = tree_bytes(made.root)
    result = retest.run_retest(table, made.root, models, tmp_path / "rescans",
                               participants=chosen, skull_stripped=True, n_boot=200,
                               cache=tmp_path / "cache")
    assert tree_bytes(made.root) == before  # the cohort is only read
    assert (result.predictions["error"].fillna("") == "").all()
    # 5 subjects x 3 scans x 2 heads
    assert len(result.predictions) == 30
    assert set(result.predictions["session"]) == {"", "ses-repeat", "ses-travel"}
    t = result.table.set_index(["subjects", "model", "comparison", "measure"])
    for model in ("rnc", "l1"):
        for comparison in retest.COMPARISONS:
            assert t.loc[("all", model, comparison, "predicted"), "n"] == 5
            assert t.loc[("controls", model, comparison, "predicted"), "n"] == 3
    # the rnc head's correction maps predicted p to (p - 10) / 0.8: every difference of the
    # corrected gap is the raw difference / 0.8, so its SEM is the raw SEM / 0.8
    for comparison in retest.COMPARISONS:
        raw = t.loc[("all", "rnc", comparison, "predicted"), "sem"]
        corrected = t.loc[("all", "rnc", comparison, "corrected_gap"), "sem"]
        assert corrected == pytest.approx(raw / 0.8, rel=1e-6)
    assert set(result.comparison["comparison"]) == {"within site"} | {"across sites"}
    assert set(result.offsets["model"]) == {"rnc"}  # l1 has no correction: no corrected gap
    assert (result.offsets["from"] != result.offsets["to"]).all()
    assert result.seconds["simulate_rescans"] > 0 and result.seconds["predict"] > 0

    # the card records the within-site SD; predict reports it beside the intervals
    scan = [table.loc[table["participant_id"] == chosen[0], "path"].iloc[0]]
    before = bp.predict_scans(scan, models, ages=[50.0], skull_stripped=True,
                              cache=tmp_path / "cache")
    assert before["retest_sd"].isna().all()
    with pytest.raises(model_folder.ModelFolderError, match="no head"):
        model_folder.record_retest(models, {"vit": {}})
    model_folder.record_retest(models, retest.card_values(result.table))
    after = bp.predict_scans(scan, models, ages=[50.0], skull_stripped=True,
                             cache=tmp_path / "cache").set_index("model")
    within = t.xs(("all", "within site", "corrected_gap"), level=(0, 2, 3))
    assert after.at["rnc", "retest_sd"] == pytest.approx(within.at["rnc", "sem"], abs=1e-4)
    assert np.isnan(after.at["l1", "retest_sd"])  # l1 has no corrected gap here


def _table(icc2: float, sdc: float) -> pd.DataFrame:
    rows = []
    for comparison, scale in (("within site", 1.0), ("across sites", 1.5)):
        rows.append({"subjects": "all", "model": "rnc", "comparison": comparison,
                     "measure": "corrected_gap", "n": 40, "icc2": icc2 / scale,
                     "icc2_low": icc2 / scale - 0.02, "icc2_high": min(icc2 / scale + 0.01, 1),
                     "sdc": sdc * scale, "sdc_low": sdc * scale - 0.5,
                     "sdc_high": sdc * scale + 0.5})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("icc2", "sdc", "place", "pd_word"),
                         [(0.99, 2.0, "above", "below the PD"),
                          (0.95, 3.5, "within", "not below the PD"),
                          (0.80, 9.0, "below", "not below the PD")])
def test_reliability_words_follow_the_numbers(icc2, sdc, place, pd_word):
    from brainage.study.sentences import icc_against_published, reliability_sentence

    table = _table(icc2, sdc)
    text = reliability_sentence(table, {"AD": 8.0, "PD": 3.0})
    assert text.startswith("Within site the ICC(2,1) of RNC's bias-corrected gap was")
    assert f"{pd_word} effect of 3" in text
    assert ("not below the AD" in text) == (sdc >= 8.0)
    assert icc_against_published(table) == place
    assert reliability_sentence(table.iloc[0:0], {"PD": 3.0}) == "no rescans were predicted"


def test_retest_bland_altman_draws_each_comparison_and_model():
    from brainage.study.figures import retest_bland_altman

    rng = np.random.default_rng(0)

    rows = []
    for model in ("rnc", "l1"):
        for comparison in retest.COMPARISONS:
            first = rng.normal(0, 5, 10)
            rows.append(pd.DataFrame({"participant_id": [f"s{i}" for i in range(10)],
                                      "model": model, "comparison": comparison,
                                      "measure": "corrected_gap", "first": first,
                                      "second": first + rng.normal(1, 1, 10)}))
    fig = retest_bland_altman(pd.concat(rows))
    assert len(fig.data) == 4  # one trace per model and panel
    assert {t.name for t in fig.data} == {"RNC", "L1"}
    assert len(fig.layout.shapes) == 2 * 2 * 3  # mean and two limits per model and panel


def test_perturbation_table_from_predictions():
    rng = np.random.default_rng(1)
    base = rng.uniform(50, 70, 5)
    frames = [pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(5)], "session": "",
                            "model": "rnc", "predicted": base, "corrected_gap": base - 60,
                            "error": ""})]
    for label, shift in (("ses-moved", 1.0), ("ses-vox3", -2.0)):
        frames.append(frames[0].assign(session=label, predicted=base + shift,
                                       corrected_gap=base - 60 + shift))
    table = retest.perturbation_table(pd.concat(frames, ignore_index=True))
    t = table.set_index(["change", "measure"])
    assert t.loc[("moved_3deg_4mm", "predicted"), "mean_change"] == pytest.approx(1.0)
    assert t.loc[("voxel_3mm", "corrected_gap"), "max_abs_change"] == pytest.approx(2.0)
    assert t.loc[("voxel_3mm", "predicted"), "sd_change"] == pytest.approx(0.0, abs=1e-9)
    assert t.loc[("moved_3deg_4mm", "predicted"), "icc3"] == pytest.approx(1.0)


def test_domain_summary_prints_the_recorded_retest_sd():
    from brainage.inference.trust import domain_summary

    card = {"preprocess": {"space": MNI, "grid_mm": 4.0}, "grid": {"shape": [7, 8, 9]}}
    assert "test-retest" not in domain_summary(card)
    card["retest"] = {"rnc": {"corrected_gap": {"sd_years": 2.91, "sdc_years": 8.07, "n": 50},
                              "predicted": {"sd_years": 2.64, "sdc_years": 7.32, "n": 50}}}
    text = domain_summary(card)
    assert ("rnc: test-retest SD of the corrected gap 2.9 y (two scans of one person differ "
            "really beyond 8.1 y)") in text
    assert "2.6" not in text  # the predicted age's SD is in the card, the gap's is printed
