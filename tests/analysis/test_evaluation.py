from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainage.analysis import evaluation
from brainage.analysis.metrics import AgeBiasCorrection, mae


def _predictions(rng, n=40):
    """Two models whose predictions regress towards the mean (slope 0.7), rnc less noisy."""
    rows = []
    splits = ["val"] * n + ["test"] * n + ["clinical"] * 10
    ages = rng.uniform(20, 90, len(splits))
    for model, noise in (("rnc", 3.0), ("l1", 6.0)):
        predicted = 0.7 * ages + 0.3 * 55 + rng.normal(0, noise, len(ages))
        rows.append(pd.DataFrame({
            "participant_id": [f"sub-{i}" for i in range(len(ages))], "split": splits,
            "group": ["HC"] * (2 * n) + ["AD"] * 10, "age": ages, "sex": "F", "site": "a",
            "model": model, "predicted": predicted, "gap": predicted - ages}))
    return pd.concat(rows, ignore_index=True)


def test_correction_is_fitted_on_validation_only(rng):
    preds = _predictions(rng)
    out, corrections = evaluation.correct_predictions(preds)
    assert list(out.columns) == list(evaluation.EVALUATION_COLUMNS)
    val = preds[(preds["model"] == "rnc") & (preds["split"] == "val")]
    expected = AgeBiasCorrection.fit(val["age"].to_numpy(), val["predicted"].to_numpy())
    assert corrections["rnc"].coefficients == pytest.approx(expected.coefficients)
    # changing every test and clinical prediction changes nothing in the fitted correction
    tampered = preds.copy()
    held = tampered["split"] != "val"
    tampered.loc[held, "predicted"] = 200.0
    _, again = evaluation.correct_predictions(tampered)
    assert again["rnc"].coefficients == pytest.approx(corrections["rnc"].coefficients)
    np.testing.assert_allclose(out["corrected_gap"], out["corrected_predicted"] - out["age"])
    # the linear correction removes the age dependence of the validation gap
    val_out = out[(out["model"] == "rnc") & (out["split"] == "val")]
    assert abs(np.corrcoef(val_out["age"], val_out["corrected_gap"])[0, 1]) < 0.2


def test_evaluate_reports_metrics_comparison_and_floors(rng):
    preds, _ = evaluation.correct_predictions(_predictions(rng))
    test = preds[preds["split"] == "test"]
    truth = pd.DataFrame({"participant_id": test["participant_id"].unique()})
    truth["biological_age"] = test.drop_duplicates("participant_id")["age"].to_numpy() + 2.0
    result = evaluation.evaluate_predictions(preds, train_ages=[30.0, 50.0, 70.0], truth=truth,
                                             n_boot=200, seed=1)
    assert result["n_test"] == 40
    rnc = test[test["model"] == "rnc"]
    assert result["models"]["rnc"]["raw"]["mae"]["value"] == pytest.approx(
        mae(rnc["age"], rnc["predicted"]))
    assert result["comparison"]["mae_diff"] == pytest.approx(
        result["models"]["rnc"]["raw"]["mae"]["value"] - result["models"]["l1"]["raw"]["mae"]["value"])
    assert result["baselines"]["irreducible_mae"] == pytest.approx(2.0)
    assert result["baselines"]["mean_age_mae"] == pytest.approx(mae(rnc["age"], np.full(40, 50.0)))


def test_evaluate_needs_test_rows(rng):
    preds, _ = evaluation.correct_predictions(_predictions(rng))
    with pytest.raises(ValueError, match="no test rows"):
        evaluation.evaluate_predictions(preds[preds["split"] != "test"], train_ages=[50.0])


@pytest.mark.parametrize(("method", "omitted"), [("linear", False), ("beheshti", True),
                                                 ("quadratic", True)])
def test_circular_corrected_metrics_are_omitted(rng, method, omitted):
    # issue 15, item 9: beheshti and quadratic subtract an offset computed from the test
    # subject's own age, so their corrected MAE against that age is circular
    preds, corrections = evaluation.correct_predictions(_predictions(rng), method=method)
    assert corrections["rnc"].uses_age is omitted
    result = evaluation.evaluate_predictions(preds, train_ages=[50.0], n_boot=100,
                                             corrections=corrections)
    corrected = result["models"]["rnc"]["corrected"]
    assert ("omitted" in corrected) is omitted
    if omitted:
        assert method in corrected["omitted"] and "circular" in corrected["omitted"]
        # what the omission avoids: the age-dependent offset makes the corrected MAE look better
        test = preds[(preds["split"] == "test") & (preds["model"] == "rnc")]
        assert mae(test["age"], test["corrected_predicted"]) < mae(test["age"], test["predicted"])
    else:
        assert corrected["mae"]["value"] > 0
