"""Subject-level, age-stratified train/validation/test splits of the healthy controls.

Only healthy controls (group ``HC``) train and evaluate the brain-age model; patients (``AD``,
``PD``) get the split ``clinical`` and are never seen in training, validation or test. All scans of
one subject share a split, so no subject leaks across splits.

Stratification. The controls are sorted by age (within each site when ``stratify_site``), cut
into consecutive age bins of ``round(1 / min(positive fractions))`` subjects (5 for the default
0.6/0.2/0.2; so the number of bins adapts to the cohort size: 2 bins for 10 subjects, 60 for
300), shuffled within each bin with the seed, and dealt a fixed, evenly interleaved sequence of
split labels (``train, val, train, test, train, ...``) that holds the exact split sizes. Every
bin, and every site, therefore gets each split in proportion (to within one subject): a
systematic stratified sample. The split sizes come from the fractions by largest remainders,
with at least one subject in each split of positive fraction (so 3 controls suffice for three
splits). scikit-learn's ``train_test_split(stratify=...)`` needs at least two members per
stratum and class and cannot hold age bins of a 10-subject cohort, hence this small routine.

Benchmark splits. :func:`benchmark_splits` follows a benchmark's official split (the Cohort
table's ``official_split`` column, as OpenBHB's reader writes it [1]_): the official training
subjects are divided into ``train`` and ``val`` by the routine above (stratified by age and
site), the internal test set becomes ``test`` and the external test set (sites unseen in
training) ``external_test``.

References
----------
.. [1] Dufumier B et al. OpenBHB: a large-scale multi-site brain MRI data-set for age prediction
   and debiasing. NeuroImage 263, 119637 (2022).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainage._utils import GROUPS, check_number

logger = logging.getLogger(__name__)

__all__ = [
    "CLINICAL",
    "EXTERNAL_TEST",
    "SPLITS",
    "benchmark_splits",
    "load_splits",
    "make_splits",
    "save_splits",
]

#: Splits of the healthy controls, in order.
SPLITS = ("train", "val", "test")
#: Split of a benchmark's healthy controls from sites unseen in training (:func:`benchmark_splits`).
EXTERNAL_TEST = "external_test"
#: Split of the patients (AD, PD).
CLINICAL = "clinical"
#: Official benchmark split (``official_split`` column) -> split of its held-out controls.
_OFFICIAL_HELD_OUT = {"internal_test": "test", "external_test": EXTERNAL_TEST}
_OFFICIAL_TRAIN = "train"


def make_splits(
    cohort: pd.DataFrame,
    *,
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    stratify_site: bool = False,
) -> pd.DataFrame:
    """Assign every subject of a Cohort table to ``train``, ``val``, ``test`` or ``clinical``.

    Parameters
    ----------
    cohort : pandas.DataFrame
        Cohort table (one row per scan) with ``participant_id``, ``age``, ``group`` and, when
        ``stratify_site``, ``site``. A subject's scans must agree on group (and site).
    seed : int
        Seed of the random order within age bins; the same seed gives the same splits.
    fractions : sequence of 3 float, default=(0.6, 0.2, 0.2)
        Shares of the healthy controls in train, val and test; non-negative, summing to 1,
        train positive. A zero share leaves that split empty.
    stratify_site : bool, default=False
        Also stratify by site (each site is split in the same proportions).

    Returns
    -------
    pandas.DataFrame
        One row per subject, sorted by id: ``participant_id``, ``split``.

    Raises
    ------
    ValueError
        On missing columns, unknown groups, missing ages, inconsistent subjects, bad fractions,
        or fewer healthy controls than splits to fill.
    TypeError
        If ``cohort`` is not a DataFrame or ``seed`` not an int.
    """
    fractions = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__} {seed!r}")
    subjects = _subjects(cohort, stratify_site)
    controls = subjects[subjects["group"] == "HC"]
    counts = _split_counts(len(controls), fractions)
    rng = np.random.default_rng(seed)
    order = _stratified_order(controls, rng, stratify_site, _bin_size(fractions))
    labels = np.asarray(SPLITS)[_interleave(counts)]
    split = pd.Series(CLINICAL, index=subjects.index, dtype=object)
    split.loc[order] = labels
    out = pd.DataFrame({"participant_id": subjects["participant_id"], "split": split})
    out = out.sort_values("participant_id", kind="stable").reset_index(drop=True)
    logger.info("splits (seed %d): %s", seed, out["split"].value_counts().to_dict())
    return out


def benchmark_splits(cohort: pd.DataFrame, *, seed: int, val_fraction: float = 0.2,
                     stratify_site: bool = True) -> pd.DataFrame:
    """Splits that follow a benchmark's official split (OpenBHB's, see the module docstring).

    The subjects of official split ``train`` are divided into ``train`` and ``val`` by
    :func:`make_splits` (age-stratified, and site-stratified with ``stratify_site``); official
    ``internal_test`` subjects get ``test`` and ``external_test`` subjects ``external_test``.
    Patients (group ``AD``, ``PD``) get ``clinical`` whatever their official split.

    Parameters
    ----------
    cohort : pandas.DataFrame
        Cohort table with ``participant_id``, ``age``, ``group``, ``official_split`` (``train``,
        ``internal_test`` or ``external_test``) and, with ``stratify_site``, ``site``.
    seed : int
        Seed of the train/val division; the same seed gives the same splits.
    val_fraction : float, default=0.2
        Share of the official training controls put in ``val``, in [0, 1).
    stratify_site : bool, default=True
        Divide each site's official training controls in the same proportions.

    Returns
    -------
    pandas.DataFrame
        One row per subject, sorted by id: ``participant_id``, ``split``.

    Raises
    ------
    ValueError
        On a missing ``official_split`` column or an unknown label in it, a subject with scans
        in two official splits, a bad ``val_fraction``, or the errors of :func:`make_splits`.
    """
    official = _official_split(cohort)
    check_number("val_fraction", val_fraction, low=0, high=1, high_open=True)
    in_train = cohort["participant_id"].map(official) == _OFFICIAL_TRAIN
    if not in_train.any():
        raise ValueError(f"cohort: no subject has official_split {_OFFICIAL_TRAIN!r}; the "
                         f"train and val splits are drawn from them")
    trained = make_splits(cohort[in_train], seed=seed, stratify_site=stratify_site,
                          fractions=(1.0 - val_fraction, val_fraction, 0.0))
    held = _subjects(cohort[~in_train], stratify_site=False)
    labels = held["participant_id"].map(official).map(_OFFICIAL_HELD_OUT)
    held_out = pd.DataFrame({"participant_id": held["participant_id"],
                             "split": labels.where(held["group"] == "HC", CLINICAL)})
    out = pd.concat([trained, held_out], ignore_index=True)
    out = out.sort_values("participant_id", kind="stable").reset_index(drop=True)
    logger.info("benchmark splits (seed %d): %s", seed, out["split"].value_counts().to_dict())
    return out


def _official_split(cohort: pd.DataFrame) -> pd.Series:
    """Each subject's official split (participant id -> label), checked."""
    if not isinstance(cohort, pd.DataFrame):
        raise TypeError(f"cohort: expected a pandas DataFrame (the Cohort table), "
                        f"got {type(cohort).__name__}")
    missing = [c for c in ("participant_id", "official_split") if c not in cohort.columns]
    if missing:
        raise ValueError(f"cohort: missing column(s) {', '.join(missing)}; benchmark splits need "
                         f"participant_id and official_split (a benchmark's Cohort table, such "
                         f"as OpenBHB's); given: {', '.join(map(str, cohort.columns))}")
    allowed = (_OFFICIAL_TRAIN, *_OFFICIAL_HELD_OUT)
    unknown = sorted(set(cohort["official_split"].astype(str)) - set(allowed))
    if unknown:
        raise ValueError(f"cohort: column official_split must hold {', '.join(allowed)}; "
                         f"got {unknown}")
    per_subject = cohort.groupby("participant_id")["official_split"].nunique()
    mixed = per_subject.index[per_subject > 1].tolist()
    if mixed:
        raise ValueError(f"cohort: subject(s) {', '.join(map(str, mixed[:10]))} have scans in "
                         f"different official splits; a subject needs one")
    return cohort.groupby("participant_id")["official_split"].first()


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three finite non-negative shares summing to 1, the training share positive."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as err:
        raise TypeError(f"fractions: expected 3 numbers (train, val, test), got {fractions!r}"
                        ) from err
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"fractions: expected 3 non-negative numbers (train, val, test), "
                         f"got {fractions!r}")
    if values[0] <= 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions: the train share must be positive and the shares must sum "
                         f"to 1, got {fractions!r} (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def _subjects(cohort: pd.DataFrame, stratify_site: bool) -> pd.DataFrame:
    """One row per subject (participant_id, age, group[, site]), checked for consistency."""
    if not isinstance(cohort, pd.DataFrame):
        raise TypeError(f"cohort: expected a pandas DataFrame (the Cohort table), "
                        f"got {type(cohort).__name__}")
    needed = ["participant_id", "age", "group", *(["site"] if stratify_site else [])]
    missing = [c for c in needed if c not in cohort.columns]
    if missing:
        raise ValueError(f"cohort: missing column(s) {', '.join(missing)}; needed: "
                         f"{', '.join(needed)}; given: {', '.join(map(str, cohort.columns))}")
    unknown = sorted(set(cohort["group"].astype(str)) - set(GROUPS))
    if unknown:
        raise ValueError(f"cohort: column group must hold {', '.join(GROUPS)}; got {unknown}")
    keys = ["group", *(["site"] if stratify_site else []),
            *(["dataset"] if "dataset" in cohort.columns else [])]
    for key in keys:
        per_subject = cohort.groupby("participant_id")[key].nunique(dropna=False)
        mixed = per_subject.index[per_subject > 1].tolist()
        if mixed:
            hint = " (participant ids must be unique across datasets)" if key == "dataset" else ""
            raise ValueError(f"cohort: subject(s) {', '.join(map(str, mixed[:10]))} have scans "
                             f"with different {key} values; a subject needs one {key}{hint}")
    subjects = cohort.groupby("participant_id", sort=True, as_index=False).agg(
        age=("age", "mean"), **{k: (k, "first") for k in keys})
    no_age = subjects.loc[subjects["age"].isna() & (subjects["group"] == "HC"), "participant_id"]
    if len(no_age):
        raise ValueError(f"cohort: healthy control(s) {', '.join(no_age.astype(str)[:10])} "
                         f"have no age; age stratification needs every age")
    return subjects


def _split_counts(n: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split sizes by largest remainders, at least 1 per positive fraction."""
    needed = sum(f > 0 for f in fractions)
    if n < needed:
        raise ValueError(f"cohort: {needed} splits with positive fractions {fractions} need at "
                         f"least {needed} healthy controls (group HC); got {n}")
    exact = n * np.asarray(fractions)
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[index] += 1
    for index in np.flatnonzero((counts == 0) & (np.asarray(fractions) > 0)):
        counts[np.argmax(counts)] -= 1  # the largest split lends one subject
        counts[index] += 1
    return counts


def _bin_size(fractions: tuple[float, float, float]) -> int:
    """Subjects per age bin: enough for every positive split to appear in a bin."""
    return max(1, round(1.0 / min(f for f in fractions if f > 0)))


def _interleave(counts: np.ndarray) -> np.ndarray:
    """Split indices, evenly interleaved, with exactly ``counts`` of each.

    At each position the split furthest below its target share so far is chosen (ties go to
    the earlier split); a hand-written largest-deficit rule, as no library deals labels so.
    """
    n = int(counts.sum())
    taken = np.zeros(len(counts), dtype=int)
    out = np.empty(n, dtype=int)
    for i in range(n):
        deficit = counts * (i + 1) / n - taken
        deficit[taken >= counts] = -np.inf  # a full split takes no more subjects
        out[i] = int(np.argmax(deficit))
        taken[out[i]] += 1
    return out


def _stratified_order(controls: pd.DataFrame, rng: np.random.Generator, stratify_site: bool,
                      bin_size: int) -> list:
    """Index of the controls: by site, then age bins of ``bin_size``, shuffled within bins."""
    order: list = []
    strata = controls.groupby("site", sort=True) if stratify_site else [("all", controls)]
    for _, stratum in strata:
        # random tie-break: equal ages must not fall in id order
        keyed = stratum.assign(_tie=rng.random(len(stratum)))
        index = keyed.sort_values(["age", "_tie"], kind="stable").index.to_numpy()
        for start in range(0, len(index), bin_size):
            order.extend(rng.permutation(index[start:start + bin_size]))
    return order


def save_splits(splits: pd.DataFrame, path: str | Path) -> Path:
    """Write splits (``participant_id, split``) as CSV, creating the folder.

    Parameters
    ----------
    splits : pandas.DataFrame
        Output of :func:`make_splits`.
    path : str or Path
        The CSV file.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    _validate(splits, f"splits (to be saved to {path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    splits[["participant_id", "split"]].to_csv(path, index=False, lineterminator="\n")
    return path


def load_splits(path: str | Path) -> pd.DataFrame:
    """Read splits written by :func:`save_splits`, checking columns, labels and duplicates.

    Raises
    ------
    ValueError
        Naming the file, if it is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"splits file {path} does not exist")
    splits = pd.read_csv(path, dtype=str, keep_default_na=False)
    _validate(splits, f"splits file {path}")
    return splits[["participant_id", "split"]].reset_index(drop=True)


def _validate(splits: pd.DataFrame, what: str) -> None:
    """Columns participant_id and split, known labels, one row per subject."""
    if not isinstance(splits, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(splits).__name__}")
    missing = [c for c in ("participant_id", "split") if c not in splits.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; expected "
                         f"participant_id, split; got {', '.join(map(str, splits.columns))}")
    allowed = (*SPLITS, EXTERNAL_TEST, CLINICAL)
    unknown = sorted(set(splits["split"].astype(str)) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown split label(s) {unknown}; allowed: "
                         f"{', '.join(allowed)}")
    duplicated = splits.loc[splits["participant_id"].duplicated(), "participant_id"]
    if len(duplicated):
        raise ValueError(f"{what}: subject(s) {', '.join(map(str, duplicated.unique()[:10]))} "
                         f"appear more than once; a subject belongs to one split")
