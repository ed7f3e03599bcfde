"""Tests of brainage.analysis.benchmark: site balanced accuracy, challenge score, the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainage.analysis.benchmark import benchmark_metrics, challenge_score, site_balanced_accuracy


def _sites(rng: np.random.Generator, n_per_site: int, n_sites: int) -> np.ndarray:
    return rng.permutation(np.repeat([f"s{i}" for i in range(n_sites)], n_per_site))


def test_site_bacc_of_site_encoding_features_is_one(rng):
    train, test = _sites(rng, 30, 4), _sites(rng, 20, 4)
    index = {f"s{i}": i for i in range(4)}

    def encode(sites):  # one-hot site plus a little noise, and noise features
        onehot = np.eye(4)[[index[s] for s in sites]] * 3.0
        return np.hstack([onehot, rng.normal(size=(len(sites), 3))]) + 0.1 * rng.normal(
            size=(len(sites), 7))

    assert site_balanced_accuracy(encode(train), train, encode(test), test) == 1.0


def test_site_bacc_of_noise_is_near_chance(rng):
    n_sites = 4
    train, test = _sites(rng, 60, n_sites), _sites(rng, 100, n_sites)
    bacc = site_balanced_accuracy(rng.normal(size=(len(train), 6)), train,
                                  rng.normal(size=(len(test), 6)), test, seed=3)
    assert abs(bacc - 1 / n_sites) < 0.08


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_site_bacc_with_few_scans_per_site(rng):
    x = rng.normal(size=(9, 2))
    x[:, 0] += np.repeat([0.0, 10.0, 20.0], 3)
    sites = np.repeat(["a", "b", "c"], 3)  # 3 per site: 3 folds, not 5
    first = site_balanced_accuracy(x, sites, x, sites, seed=1)
    assert first == 1.0 and site_balanced_accuracy(x, sites, x, sites, seed=1) == first
    with pytest.raises(ValueError, match=r"train_sites: site\(s\) \['c'\] have a single "
                                         r"training scan; stratified cross-validation needs"):
        site_balanced_accuracy(x[:7], sites[:7], x, sites)
    with pytest.raises(ValueError, match=r"train_sites: need at least 2 sites"):
        site_balanced_accuracy(x[:3], sites[:3], x, sites)
    with pytest.raises(ValueError, match=r"train_features and test_features must have the same "
                                         r"number of features; got 2 and 1"):
        site_balanced_accuracy(x, sites, x[:, :1], sites)
    with pytest.raises(ValueError, match=r"test_features and test_sites: expected shapes"):
        site_balanced_accuracy(x, sites, x, sites[:4])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"train_features: 1 NaN or infinite"):
        site_balanced_accuracy(bad, sites, x, sites)
    with pytest.warns(UserWarning, match=r"test_sites: site\(s\) \['z'\] have no training scan"):
        site_balanced_accuracy(x, sites, x[:1], ["z"], c_grid=(1.0,))


@pytest.mark.parametrize(("internal", "external", "bacc", "n_sites", "expected"), [
    (3.0, 6.0, 0.5, 64, 6.0 * 0.5 + 3.0 / 64),   # 3.046875
    (2.0, 4.0, 0.25, 4, 1.5),                    # 4 * 0.25 + 2 / 4
    (2.0, 4.0, 0.0, 1, 2.0),                     # no site information left: internal MAE only
])
def test_challenge_score(internal, external, bacc, n_sites, expected):
    assert challenge_score(internal, external, bacc, n_sites) == pytest.approx(expected)


@pytest.mark.parametrize(("args", "pattern"), [
    ((-1.0, 4.0, 0.5), r"mae_internal: expected a finite non-negative number, got -1.0"),
    ((1.0, float("nan"), 0.5), r"mae_external: expected a finite non-negative number, got nan"),
    ((1.0, 4.0, 1.5), r"bacc: expected a balanced accuracy in \[0, 1\], got 1.5"),
    ((1.0, 4.0, 0.5, 0), r"n_sites must be an integer >= 1, got 0"),
])
def test_challenge_score_bad_inputs(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        challenge_score(*args)


def _predictions() -> pd.DataFrame:
    rows = [("test", 20, 22), ("test", 30, 28), ("test", 40, 40), ("test", 50, 55),
            ("external_test", 60, 66), ("external_test", 70, 70), ("external_test", 80, 77),
            ("val", 25, 90)]  # a val row is ignored
    frame = pd.DataFrame(rows, columns=["split", "age", "predicted"])
    frame["participant_id"] = [f"sub-{i}" for i in range(len(frame))]
    return frame


def test_benchmark_metrics_hand_checked():
    table = benchmark_metrics(_predictions(), site_bacc=0.5, n_boot=200)
    assert list(table.columns) == ["model", "metric", "value", "ci_low", "ci_high",
                                   "ci_method", "n"]
    values = table.set_index("metric")["value"]
    assert values["mae_internal"] == pytest.approx((2 + 2 + 0 + 5) / 4)
    assert values["mae_external"] == pytest.approx((6 + 0 + 3) / 3)
    assert values["site_bacc"] == 0.5
    assert values["challenge_score"] == pytest.approx(3.0 * 0.5 + 2.25 / 64)
    internal = table.set_index("metric").loc["mae_internal"]
    assert internal["ci_low"] <= 2.25 <= internal["ci_high"] and internal["n"] == 4
    two = pd.concat([_predictions().assign(model="rnc"),
                     _predictions().assign(model="l1", predicted=lambda f: f["age"] + 1.0)])
    table = benchmark_metrics(two, site_bacc={"rnc": 0.5, "l1": 0.25}, n_boot=200)
    scores = table[table["metric"] == "challenge_score"].set_index("model")["value"]
    assert scores["l1"] == pytest.approx(1.0 * 0.25 + 1.0 / 64)
    assert benchmark_metrics(_predictions(), n_boot=200)["metric"].tolist() == [
        "mae_internal", "mae_external"]


def test_benchmark_metrics_bad_inputs():
    with pytest.raises(ValueError, match=r"model 'model' has 0 row\(s\) of split "
                                         r"'external_test'; the benchmark needs at least 2"):
        benchmark_metrics(_predictions().query("split != 'external_test'"), n_boot=200)
    with pytest.raises(ValueError, match=r"predictions: missing column\(s\) corrected_predicted"):
        benchmark_metrics(_predictions(), column="corrected_predicted")
    two = pd.concat([_predictions().assign(model="rnc"), _predictions().assign(model="l1")])
    with pytest.raises(ValueError, match=r"site_bacc: a single number is ambiguous for 2 models"):
        benchmark_metrics(two, site_bacc=0.5, n_boot=200)
    with pytest.raises(ValueError, match=r"site_bacc: no value for model\(s\) \['l1'\]"):
        benchmark_metrics(two, site_bacc={"rnc": 0.5}, n_boot=200)
