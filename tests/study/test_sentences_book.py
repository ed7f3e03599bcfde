"""Sentences of the book's non-clinical pages (issue 32): what the simulator planted."""

from __future__ import annotations

import pytest

from brainage.study.sentences import planted_effects_sentence


def _truth(**changes):
    truth = {"counts": {"HC": 30, "AD": 5, "PD": 5},
             "true_mean_brain_age_gap": {"AD": 8.4659, "HC": -0.0, "PD": 3.2116},
             "config": {"sigma_bio": 3.0},
             "true_correlations": {
                 "mmse": {"score_group": "AD", "configured": -0.7},
                 "updrs3": {"score_group": "PD", "configured": 0.6},
                 "hoehn_yahr": {"score_group": "PD", "configured": 0.6}}}
    truth.update(changes)
    return truth


def test_planted_effects_names_gaps_control_deviation_and_correlations():
    text = planted_effects_sentence(_truth())
    for part in ("+8.5 years in AD and +3.2 years in PD", "δ ~ N(0, 3²) years",
                 "MMSE -0.7 in AD", "MDS-UPDRS-III +0.6, Hoehn and Yahr stage +0.6 in PD"):
        assert part in text, part
    assert "{" not in text and "['" not in text and "True" not in text  # no Python reprs


def test_planted_effects_without_patients_speaks_of_controls_only():
    text = planted_effects_sentence(_truth(counts={"HC": 30, "AD": 0, "PD": 0}))
    assert "AD" not in text and "PD" not in text and "δ ~ N(0, 3²)" in text


def test_planted_effects_rejects_an_older_record():
    with pytest.raises(ValueError, match=r"simulation record lacks \['config.sigma_bio'\]"):
        planted_effects_sentence(_truth(config={}))
    truth = _truth()
    del truth["true_correlations"]
    with pytest.raises(ValueError, match="true_correlations"):
        planted_effects_sentence(truth)


def test_abstract_truth_pastes_planted_and_recovered_numbers_for_a_simulated_cohort():
    import re

    from brainage.study.sentences import abstract_truth_markdown

    text = abstract_truth_markdown(True)
    keys = re.findall(r"\{glue:text\}`results/(\w+)\.ipynb::(\w+):s`", text)
    assert ("01_data_audit", "planted_gap_ad") in keys and ("05_clinical", "gap_pd_rnc") in keys
    assert ("04_interpretability", "ageing_auc_permuted") in keys
    assert ("04_interpretability", "ageing_p_rnc") in keys and ("05_clinical", "pd_power_n") in keys
    assert "permuted-age network" in text and text.endswith("\n")
    # every role is complete: nothing left that MyST would show as source
    assert text.count("{glue:text}") == len(keys)


def test_abstract_truth_states_the_real_scans_only_where_they_were_predicted():
    import re

    from brainage.study.sentences import abstract_truth_markdown

    for simulated in (True, False):
        without, with_real = (abstract_truth_markdown(simulated, real=r) for r in (False, True))
        keys = re.findall(r"\{glue:text\}`results/(\w+)\.ipynb::(\w+):s`", with_real)
        assert ("03_evaluation", "real_r_rnc") in keys and ("03_evaluation", "real_gap_rnc") in keys
        assert "real_r_rnc" not in without and with_real.startswith(without)
        assert with_real.count("{glue:text}") == len(keys) and with_real.endswith("\n")


def test_abstract_truth_of_real_data_has_no_simulated_truth():
    from brainage.study.sentences import abstract_truth_markdown

    text = abstract_truth_markdown(False)
    assert "clinical_sentence" in text and "no truth is known" in text
    assert "01_data_audit" not in text and "04_interpretability" not in text  # no truth glued
