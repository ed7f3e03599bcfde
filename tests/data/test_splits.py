from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainage.data.splits import (
    CLINICAL,
    EXTERNAL_TEST,
    SPLITS,
    benchmark_splits,
    load_splits,
    make_splits,
    save_splits,
)


def make_cohort(rng: np.random.Generator, n_hc: int, n_ad: int = 0, n_pd: int = 0,
                sites: dict[str, float] | None = None, sessions: int = 1) -> pd.DataFrame:
    """A Cohort-like table: ``sessions`` scans per subject, ages 20-90 (older at later sites)."""
    sites = sites or {"A": 1.0}
    groups = ["HC"] * n_hc + ["AD"] * n_ad + ["PD"] * n_pd
    n = len(groups)
    site = rng.choice(list(sites), size=n, p=np.asarray(list(sites.values())) / sum(sites.values()))
    shift = np.array([list(sites).index(s) for s in site]) * 8.0  # site and age correlate
    age = np.clip(rng.uniform(20, 82, n) + shift, 18, 95).round(1)
    ids = [f"sub-{i:04d}" for i in range(n)]
    rows = [{"participant_id": ids[i], "session": f"ses-{k}" if sessions > 1 else "",
             "dataset": "toy", "age": age[i], "site": site[i], "group": groups[i]}
            for i in range(n) for k in range(sessions)]
    return pd.DataFrame(rows)


def _ages(cohort: pd.DataFrame, splits: pd.DataFrame, split: str) -> np.ndarray:
    ids = splits.loc[splits["split"] == split, "participant_id"]
    per_subject = cohort.drop_duplicates("participant_id").set_index("participant_id")["age"]
    return per_subject.loc[ids].to_numpy()


def test_subjects_stay_in_one_split_and_patients_are_clinical(rng):
    cohort = make_cohort(rng, n_hc=40, n_ad=7, n_pd=5, sessions=2)
    splits = make_splits(cohort, seed=0)
    assert list(splits.columns) == ["participant_id", "split"]
    assert splits["participant_id"].is_unique  # no subject in two splits
    assert set(splits["participant_id"]) == set(cohort["participant_id"])
    groups = cohort.drop_duplicates("participant_id").set_index("participant_id")["group"]
    split_group = splits.set_index("participant_id")["split"]
    assert (split_group[groups[groups != "HC"].index] == CLINICAL).all()
    assert set(split_group[groups[groups == "HC"].index]) == set(SPLITS)
    assert splits["split"].value_counts().to_dict() == {
        "train": 24, "val": 8, "test": 8, CLINICAL: 12}


def test_same_seed_same_splits_different_seed_different(rng):
    cohort = make_cohort(rng, n_hc=60, n_ad=5)
    first = make_splits(cohort, seed=7)
    pd.testing.assert_frame_equal(first, make_splits(cohort, seed=7))
    pd.testing.assert_frame_equal(first, make_splits(cohort.sample(frac=1, random_state=3)
                                                     .reset_index(drop=True), seed=7))
    other = make_splits(cohort, seed=8)
    assert (first["split"] != other["split"]).sum() > 10
    assert other["split"].value_counts().equals(first["split"].value_counts())


def test_age_distributions_match_across_splits(rng):
    cohort = make_cohort(rng, n_hc=300, n_ad=30)
    splits = make_splits(cohort, seed=1)
    ages = {s: _ages(cohort, splits, s) for s in SPLITS}
    assert [len(ages[s]) for s in SPLITS] == [180, 60, 60]
    for s in ("val", "test"):
        assert stats.ks_2samp(ages["train"], ages[s]).pvalue > 0.5
        assert abs(ages["train"].mean() - ages[s].mean()) < 1.0
        assert abs(ages["train"].std() - ages[s].std()) < 1.5


def test_site_stratification(rng):
    cohort = make_cohort(rng, n_hc=300, sites={"A": 0.5, "B": 0.3, "C": 0.2})
    splits = make_splits(cohort, seed=2, stratify_site=True)
    table = cohort.drop_duplicates("participant_id").merge(splits, on="participant_id")
    shares = pd.crosstab(table["site"], table["split"], normalize="index")
    sizes = table["site"].value_counts()
    for site in ("A", "B", "C"):
        for split, target in zip(SPLITS, (0.6, 0.2, 0.2)):
            # within one subject of the exact share at every site
            assert abs(shares.loc[site, split] - target) <= 1.0 / sizes[site] + 1e-9
        ages = table[table["site"] == site]
        train, test = (ages.loc[ages["split"] == s, "age"] for s in ("train", "test"))
        assert abs(train.mean() - test.mean()) < 3.0


def test_site_column_needed_only_for_site_stratification(rng):
    cohort = make_cohort(rng, n_hc=12).drop(columns="site")
    assert len(make_splits(cohort, seed=0)) == 12
    with pytest.raises(ValueError, match=r"cohort: missing column\(s\) site; needed: "
                                         r"participant_id, age, group, site"):
        make_splits(cohort, seed=0, stratify_site=True)


@pytest.mark.parametrize(
    ("n", "counts"),
    [(3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)), (7, (4, 2, 1)), (10, (6, 2, 2)),
     (11, (7, 2, 2))],
)
def test_small_cohorts_fill_every_split(rng, n, counts):
    cohort = make_cohort(rng, n_hc=n, n_ad=2)
    for seed in range(5):
        splits = make_splits(cohort, seed=seed)
        sizes = splits["split"].value_counts()
        assert tuple(int(sizes.get(s, 0)) for s in SPLITS) == counts
        assert sizes[CLINICAL] == 2


def test_ten_subjects_split_by_age(rng):
    cohort = make_cohort(rng, n_hc=10)
    cohort["age"] = np.arange(20.0, 70.0, 5.0)  # two age bins of five
    splits = make_splits(cohort, seed=0).merge(cohort[["participant_id", "age"]])
    young, old = splits[splits["age"] < 45], splits[splits["age"] >= 45]
    for half in (young, old):  # each age bin gets 3 train, 1 val, 1 test
        assert half["split"].value_counts().to_dict() == {"train": 3, "val": 1, "test": 1}


def test_too_few_controls(rng):
    cohort = make_cohort(rng, n_hc=2, n_ad=10)
    with pytest.raises(ValueError, match=r"need at least 3 healthy controls \(group HC\); got 2"):
        make_splits(cohort, seed=0)
    splits = make_splits(cohort, seed=0, fractions=(0.5, 0.5, 0.0))  # two splits: enough
    assert splits["split"].value_counts().to_dict() == {CLINICAL: 10, "train": 1, "val": 1}


def test_zero_fraction_leaves_split_empty(rng):
    splits = make_splits(make_cohort(rng, n_hc=20), seed=0, fractions=(0.8, 0.0, 0.2))
    assert splits["split"].value_counts().to_dict() == {"train": 16, "test": 4}


@pytest.mark.parametrize(
    ("fractions", "error", "pattern"),
    [((0.6, 0.2), ValueError, r"fractions: expected 3 non-negative numbers .* got \(0.6, 0.2\)"),
     ((0.7, 0.4, -0.1), ValueError, r"fractions: expected 3 non-negative"),
     ((0.5, 0.2, 0.2), ValueError, r"fractions: .* must sum to 1, got .* \(sum 0.9\)"),
     ((0.0, 0.5, 0.5), ValueError, r"fractions: the train share must be positive"),
     (("a", 0.5, 0.5), TypeError, r"fractions: expected 3 numbers"),
     ((0.6, float("nan"), 0.4), ValueError, r"fractions: expected 3 non-negative")],
)
def test_bad_fractions(rng, fractions, error, pattern):
    with pytest.raises(error, match=pattern):
        make_splits(make_cohort(rng, n_hc=10), seed=0, fractions=fractions)


def test_bad_cohorts(rng):
    cohort = make_cohort(rng, n_hc=10)
    with pytest.raises(TypeError, match="cohort: expected a pandas DataFrame"):
        make_splits(cohort.to_dict(), seed=0)
    with pytest.raises(TypeError, match="seed: expected an int, got NoneType"):
        make_splits(cohort, seed=None)
    with pytest.raises(ValueError, match=r"missing column\(s\) age"):
        make_splits(cohort.drop(columns="age"), seed=0)
    bad = cohort.assign(group=["HC"] * 9 + ["MCI"])
    with pytest.raises(ValueError, match=r"column group must hold HC, AD, PD; got \['MCI'\]"):
        make_splits(bad, seed=0)
    bad = cohort.assign(age=[np.nan] + [50.0] * 9)
    with pytest.raises(ValueError, match=r"healthy control\(s\) sub-0000 have no age"):
        make_splits(bad, seed=0)
    two = pd.concat([cohort, cohort.iloc[[0]].assign(group="AD")])
    with pytest.raises(ValueError, match=r"sub-0000 have scans with different group values"):
        make_splits(two, seed=0)
    two = pd.concat([cohort, cohort.iloc[[0]].assign(dataset="other")])
    with pytest.raises(ValueError, match=r"different dataset values.*unique across datasets"):
        make_splits(two, seed=0)


def test_save_and_load_round_trip(tmp_path, rng):
    splits = make_splits(make_cohort(rng, n_hc=20, n_pd=3), seed=0)
    path = save_splits(splits, tmp_path / "run" / "splits.csv")
    assert path.read_text().splitlines()[0] == "participant_id,split"
    pd.testing.assert_frame_equal(load_splits(path), splits, check_dtype=False)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("participant_id,fold\nsub-1,train\n", r"missing column\(s\) split"),
     ("participant_id,split\nsub-1,training\n", r"unknown split label\(s\) \['training'\]; "
                                                r"allowed: train, val, test, external_test, "
                                                r"clinical"),
     ("participant_id,split\nsub-1,train\nsub-1,test\n", r"subject\(s\) sub-1 appear more than "
                                                         r"once")],
)
def test_load_bad_splits_file(tmp_path, text, pattern):
    path = tmp_path / "splits.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"splits file {path}: {pattern}"):
        load_splits(path)


def test_load_missing_and_save_bad(tmp_path):
    with pytest.raises(ValueError, match=r"splits file .*absent.csv does not exist"):
        load_splits(tmp_path / "absent.csv")
    bad = pd.DataFrame({"participant_id": ["sub-1"], "split": ["holdout"]})
    with pytest.raises(ValueError, match=r"splits \(to be saved to .*s.csv\): unknown split"):
        save_splits(bad, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


# --- benchmark splits (OpenBHB's official split) ----------------------------------------------


def make_benchmark(rng: np.random.Generator, n_train: int = 100, n_internal: int = 20,
                   n_external: int = 15, n_ad: int = 0) -> pd.DataFrame:
    """A Cohort table with official splits: train and internal test share sites A, B; the
    external test is site X; ``n_ad`` patients are added to the official train split."""
    cohort = make_cohort(rng, n_hc=n_train + n_internal, n_ad=n_ad, sites={"A": 1.0, "B": 1.0})
    official = ["train"] * n_train + ["internal_test"] * n_internal + ["train"] * n_ad
    cohort["official_split"] = official
    external = make_cohort(rng, n_hc=n_external, sites={"X": 1.0})
    external["participant_id"] = [f"sub-x{i:03d}" for i in range(n_external)]
    external["official_split"] = "external_test"
    return pd.concat([cohort, external], ignore_index=True)


def test_benchmark_splits_follow_the_official_split(rng):
    cohort = make_benchmark(rng, n_ad=4)
    splits = benchmark_splits(cohort, seed=0)
    assert list(splits.columns) == ["participant_id", "split"]
    assert splits["participant_id"].is_unique  # no subject in two splits
    assert set(splits["participant_id"]) == set(cohort["participant_id"])
    merged = cohort.merge(splits, on="participant_id")
    by_split = merged.groupby("split")["official_split"].agg(set).to_dict()
    assert by_split == {"train": {"train"}, "val": {"train"}, "test": {"internal_test"},
                        EXTERNAL_TEST: {"external_test"}, CLINICAL: {"train"}}
    assert (merged.loc[merged["group"] != "HC", "split"] == CLINICAL).all()
    assert splits["split"].value_counts().to_dict() == {
        "train": 80, "val": 20, "test": 20, EXTERNAL_TEST: 15, CLINICAL: 4}
    for _, site in merged[merged["split"].isin(["train", "val"])].groupby("site"):
        assert abs((site["split"] == "val").mean() - 0.2) < 0.05  # each site split alike


def test_benchmark_splits_are_deterministic_and_round_trip(tmp_path, rng):
    cohort = make_benchmark(rng)
    first = benchmark_splits(cohort, seed=3)
    pd.testing.assert_frame_equal(first, benchmark_splits(cohort, seed=3))
    other = benchmark_splits(cohort, seed=4)
    assert (first["split"] != other["split"]).sum() > 10
    fixed = first["split"].isin(["test", EXTERNAL_TEST])
    assert first[fixed].equals(other[fixed])  # only train/val depend on the seed
    path = save_splits(first, tmp_path / "splits.csv")
    pd.testing.assert_frame_equal(load_splits(path), first, check_dtype=False)
    assert benchmark_splits(cohort, seed=0, val_fraction=0.0)["split"].value_counts().to_dict() \
        == {"train": 100, "test": 20, EXTERNAL_TEST: 15}


def test_benchmark_splits_bad_inputs(rng):
    cohort = make_benchmark(rng)
    with pytest.raises(ValueError, match=r"cohort: missing column\(s\) official_split; "
                                         r"benchmark splits need"):
        benchmark_splits(cohort.drop(columns="official_split"), seed=0)
    bad = cohort.assign(official_split=cohort["official_split"].replace("internal_test", "dev"))
    with pytest.raises(ValueError, match=r"official_split must hold train, internal_test, "
                                         r"external_test; got \['dev'\]"):
        benchmark_splits(bad, seed=0)
    two = pd.concat([cohort.iloc[[0]].assign(official_split="internal_test"), cohort])
    with pytest.raises(ValueError, match=r"subject\(s\) sub-0000 have scans in different "
                                         r"official splits"):
        benchmark_splits(two, seed=0)
    for fraction in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match=rf"val_fraction must be a finite number >= 0 and "
                                             rf"< 1, got {fraction!r}"):
            benchmark_splits(cohort, seed=0, val_fraction=fraction)
    tests_only = cohort[cohort["official_split"] != "train"]
    with pytest.raises(ValueError, match=r"no subject has official_split 'train'"):
        benchmark_splits(tests_only, seed=0)
