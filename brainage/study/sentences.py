"""Sentences and small tables of the book computed from a run, so that no number is typed by hand.

The notebooks glue what these functions return; the Markdown pages (Abstract, Methods,
Discussion) paste it. Each function states a result together with the test it rests on.
With :mod:`brainage.study.tables` and :mod:`brainage.study.figures` this is the report layer,
the only code that turns numbers into words: :mod:`brainage.analysis` and :mod:`brainage.data`
return numbers and tables (the clinical summary sentences and the simulator's model table came
from there), and p-values are printed by :func:`brainage.study.tables.format_p` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brainage._utils import GROUPS
from brainage.analysis import clinical, metrics
from brainage.data import simulate
from brainage.models.augment import AugmentConfig
from brainage.study.tables import CURVE_METHOD_NAMES, SCORE_NAMES, format_number, p_text

__all__ = [
    "abstract_truth_markdown",
    "alignment_by_site",
    "alignment_sentence",
    "augmentation_text",
    "bias_correction_text",
    "calibration_goal_sentence",
    "calibration_summary",
    "closing_sentence",
    "correlation_text",
    "disease_saliency_sentence",
    "eta_squared",
    "fdr_sentence",
    "icc_against_published",
    "gap_age_correlation",
    "gradram_claim_sentence",
    "group_effect_sentence",
    "matched_sentence",
    "patient_coverage_sentence",
    "pd_recovery_sentence",
    "planted_effects_sentence",
    "pose_by_site",
    "reference_sentence",
    "reliability_sentence",
    "saliency_truth_sentence",
    "schedule_text",
    "simulation_model_table",
    "site_accuracy",
    "summary_sentence",
]

_GROUP_NAMES = {"AD": "AD", "PD": "PD", "HC": "healthy test subjects"}


def abstract_truth_markdown(simulated: bool, *, real: bool = False) -> str:
    """The abstract's sentences on the truth, as MyST that pastes the notebooks' numbers.

    A simulated cohort: what the simulator planted beside what the models recovered, and the
    saliency maps against the permuted-age network. Real data: the clinical sentence, and that
    no truth is known. The book writes it to ``_generated/abstract_truth.md``, which the
    abstract includes; the ``{glue:text}`` roles are parsed there, in the abstract's own page
    (myst-nb's ``{glue:md}`` cannot paste from another notebook, and a role typed into the page
    would leave a hole in a real dataset's abstract, whose notebooks glue no truth).

    Parameters
    ----------
    simulated : bool
        Whether the run's dataset is a simulated cohort.
    real : bool, default=False
        Whether notebook 03 predicted the shared real scans (``real_scans.csv`` in the run):
        then a sentence on how the RNC model reads them (issue 28).
    """
    def role(notebook: str, key: str) -> str:
        return f"{{glue:text}}`results/{notebook}.ipynb::{key}:s`"

    real_text = ("On " + role("03_evaluation", "n_real") + " real scans of healthy adults ("
                 + role("03_evaluation", "real_ages") + " years), never used for training, the "
                 "RNC model's ages correlated with the true ages at r = "
                 + role("03_evaluation", "real_r_rnc") + " but were off by "
                 + role("03_evaluation", "real_gap_rnc") + " years on average.\n"
                 if real else "")
    if not simulated:
        return (role("05_clinical", "clinical_sentence") + " The dataset is real, so no effect "
                "was planted and no truth is known to check the models against.\n" + real_text)
    return (
        "The simulator planted mean brain-age gaps of " + role("01_data_audit", "planted_gap_ad")
        + " years in AD and " + role("01_data_audit", "planted_gap_pd") + " years in PD; the "
        "RNC model's corrected gap averaged " + role("05_clinical", "gap_ad_rnc") + " and "
        + role("05_clinical", "gap_pd_rnc") + " years. The confidence intervals held the truth "
        "for " + role("05_clinical", "covered_mean_gap") + " group means and "
        + role("05_clinical", "covered_score_correlation") + " score correlations; 80 % "
        "power for the PD gap would need " + role("05_clinical", "pd_power_n") + " patients "
        "per group (here " + role("05_clinical", "pd_power_now") + "). In the simulated "
        "ageing regions the saliency maps' median AUC was "
        + role("04_interpretability", "ageing_auc_rnc") + " (RNC) and "
        + role("04_interpretability", "ageing_auc_l1") + " (L1), against "
        + role("04_interpretability", "ageing_auc_permuted") + " for a permuted-age "
        "network (RNC " + role("04_interpretability", "ageing_p_rnc") + ", L1 "
        + role("04_interpretability", "ageing_p_l1") + ").\n" + real_text)


def planted_effects_sentence(truth: Mapping[str, Any]) -> str:
    """What a simulated cohort's generator put in, for the later notebooks to recover.

    The realised mean brain-age gap of each patient group, the controls' own deviation
    ``delta ~ N(0, sigma_bio^2)`` (a control's true gap is that deviation, 0 only on average),
    and the configured correlation of each clinical score with the patients' latent severity.

    Parameters
    ----------
    truth : mapping
        A cohort's ``simulation.json`` (:func:`brainage.data.simulate.read_truth`): its
        ``true_mean_brain_age_gap``, ``config.sigma_bio`` and ``true_correlations``.

    Raises
    ------
    ValueError
        When a field is missing (the record of another generator version).
    """
    missing = [k for k in ("true_mean_brain_age_gap", "true_correlations", "config")
               if k not in truth]
    if missing or "sigma_bio" not in truth.get("config", {}):
        raise ValueError(f"simulation record lacks {missing or ['config.sigma_bio']}: not a "
                         "record of this simulator version")
    gaps = truth["true_mean_brain_age_gap"]
    sigma = float(truth["config"]["sigma_bio"])
    patients = [g for g in ("AD", "PD") if g in gaps and truth.get("counts", {}).get(g, 1)]
    text = "The simulator planted the effects that the models are asked to recover: "
    if patients:
        text += ("a mean true brain-age gap of " + " and ".join(
            f"{float(gaps[g]):+.1f} years in {g}" for g in patients) + "; ")
    text += (f"a healthy control's true gap is its own deviation δ ~ N(0, {sigma:g}²) years, 0 "
             "only on average")
    by_group: dict[str, list[str]] = {}
    for score, entry in truth["true_correlations"].items():
        group = entry.get("score_group", "")
        if group in patients:
            by_group.setdefault(group, []).append(
                f"{SCORE_NAMES.get(score, score)} {float(entry['configured']):+.1f}")
    if by_group:
        text += ("; and clinical scores correlated with each patient's latent disease severity "
                 "(configured Pearson correlations: " + "; ".join(
                     f"{', '.join(parts)} in {group}" for group, parts in by_group.items()) + ")")
    return text + "."


def augmentation_text(augment: Mapping[str, Any] | None = None) -> str:
    """The random augmentations a profile's ``augment`` mapping means (``{}``: the defaults).

    Every transform of :class:`brainage.models.augment.AugmentConfig` is listed with its
    probability per view and its range, from the configuration itself.

    Examples
    --------
    >>> augmentation_text({})[:60]
    'random affine (p = 0.8; rotations up to 8° about each axis, '
    """
    cfg = AugmentConfig(**dict(augment or {}))
    g = cfg.contrast_gamma
    parts = [
        f"random affine (p = {cfg.affine_prob:g}; rotations up to {cfg.rotate_deg:g}° about each "
        f"axis, scaling by up to ±{100 * cfg.scale:g} %, translations up to "
        f"{cfg.translate_vox:g} voxels)",
        f"flip along axis {cfg.flip_axis} "
        f"({'left-right' if cfg.flip_axis == 0 else 'not left-right'}; p = {cfg.flip_prob:g})",
        f"smooth multiplicative bias field (p = {cfg.bias_field_prob:g}; degree-3 polynomial, "
        f"coefficients up to {cfg.bias_field_coeff:g})",
        f"gamma contrast change (p = {cfg.contrast_prob:g}; γ in [{g[0]:g}, {g[1]:g}])",
        f"intensity scaling (p = {cfg.intensity_prob:g}; by 1 ± up to {cfg.intensity_scale:g})",
        f"Gaussian noise (p = {cfg.noise_prob:g}; SD up to {cfg.noise_std:g} of the normalised "
        f"intensity)",
    ]
    changed = sorted(k for k, v in dict(augment or {}).items())
    source = ("the defaults of `AugmentConfig`" if not changed else
              f"the defaults of `AugmentConfig` with {', '.join(changed)} set by the profile")
    return f"{'; '.join(parts)} ({source})"


def schedule_text(train_config: Mapping[str, Any]) -> str:
    """Optimiser and learning-rate schedule of a stage, from a checkpoint's ``train_config``."""
    cfg = dict(train_config)
    optimiser = {"adamw": "AdamW", "sgd": "SGD with momentum"}.get(cfg.get("optimizer"),
                                                                   str(cfg.get("optimizer")))
    schedule = cfg.get("schedule", "cosine")
    lr = float(cfg["lr"])
    text = (f"{optimiser} (weight decay {format_number(cfg.get('weight_decay', 0.0))}) "
            f"at a learning rate of {format_number(lr)}")
    if schedule == "cosine":
        text += (f", annealed by a cosine schedule over the stage's steps to "
                 f"{format_number(lr * 1e-3)}")
    else:
        text += ", constant"
    text += f"; batches of {cfg.get('batch_size')} scans"
    if cfg.get("head_epochs"):
        text += (f"; the RNC head: {cfg['head_epochs']} epochs at "
                 f"{format_number(float(cfg.get('head_lr', lr)))} on the same schedule")
    return text


def bias_correction_text(correction: Mapping[str, Any]) -> str:
    """The fitted age-bias correction as a formula with its coefficients.

    ``correction`` is :meth:`brainage.analysis.metrics.AgeBiasCorrection.to_dict` output.
    """
    method = correction.get("method")
    coef = correction.get("coefficients", {})
    n_fit = correction.get("n_fit", 0)
    if method == "linear":
        a, b = float(coef["slope"]), float(coef["intercept"])
        return (f"ŷ′ = (ŷ − {format_number(b)}) / {format_number(a)}, the inverse of the "
                f"least-squares line ŷ = {format_number(a)}·age + {format_number(b)} fitted on "
                f"the {n_fit} validation scans")
    terms = ", ".join(f"{k} = {format_number(v)}" for k, v in coef.items())
    return f"the {method} correction ({terms}), fitted on the {n_fit} validation scans"


def site_accuracy(test: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                  column: str = "predicted") -> pd.DataFrame:
    """Test MAE per model and site with its bootstrap 95% CI.

    Parameters
    ----------
    test : DataFrame
        Test-split predictions with ``model``, ``site``, ``age`` and ``column``.
    n_boot, seed : int
        Bootstrap settings (as :func:`brainage.analysis.metrics.regression_metrics`).

    Returns
    -------
    DataFrame
        ``model, site, n, mae, ci_low, ci_high``; a site with fewer than 2 scans has no CI.
    """
    missing = {"model", "site", "age", column} - set(test.columns)
    if missing:
        raise ValueError(f"test lacks the column(s) {sorted(missing)}")
    rows = []
    for (model, site), part in test.groupby(["model", "site"], sort=True):
        y, p = part["age"].to_numpy(float), part[column].to_numpy(float)
        row = {"model": model, "site": site, "n": len(part), "mae": float(np.abs(p - y).mean()),
               "ci_low": math.nan, "ci_high": math.nan}
        if len(part) >= 2:
            m = metrics.regression_metrics(y, p, n_boot=n_boot, seed=seed)["mae"]
            row.update(ci_low=m["ci_low"], ci_high=m["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "site", "n", "mae", "ci_low", "ci_high"])


def _pearson_ci(r: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n <= 3 or not math.isfinite(r) or abs(r) >= 1:
        return math.nan, math.nan
    z, half = np.arctanh(r), stats.norm.ppf(0.5 + confidence / 2) / math.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def gap_age_correlation(test: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of the gap with chronological age, before and after correction.

    A gap that regresses to the mean correlates negatively with age; a good correction leaves
    it near 0. The CI is Fisher's z interval.

    Returns
    -------
    DataFrame
        ``model, gap, n, r, ci_low, ci_high, p`` for ``gap`` in raw, corrected.
    """
    rows = []
    for model, part in test.groupby("model", sort=True):
        for kind, column in (("raw", "gap"), ("bias-corrected", "corrected_gap")):
            data = part[["age", column]].dropna()
            if len(data) < 3 or data[column].std() == 0:
                rows.append({"model": model, "gap": kind, "n": len(data), "r": math.nan,
                             "ci_low": math.nan, "ci_high": math.nan, "p": math.nan})
                continue
            r, p = stats.pearsonr(data["age"], data[column])
            low, high = _pearson_ci(float(r), len(data))
            rows.append({"model": model, "gap": kind, "n": len(data), "r": float(r),
                         "ci_low": low, "ci_high": high, "p": float(p)})
    return pd.DataFrame(rows)


def alignment_by_site(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Registration QC figures (outline misfit, mm) per site: n, how many fail (above
    ``threshold``), median and range."""
    data = table.dropna(subset=["registration_misfit_mm"])
    out = data.groupby("site", sort=True)["registration_misfit_mm"].agg(
        n="size", failed=lambda s: int((s > threshold).sum()), median="median", min="min",
        max="max").reset_index()
    return out


def pose_by_site(truth: pd.DataFrame) -> pd.Series:
    """Median total head rotation (degrees) per site of a simulated cohort's truth table.

    The rotation about the three axes (``rotation_{x,y,z}_deg`` of ``participants_truth.tsv``)
    combined as the Euclidean norm: how far each subject's head was turned from the template.
    """
    columns = [f"rotation_{axis}_deg" for axis in "xyz"]
    missing = [c for c in ["site", *columns] if c not in truth.columns]
    if missing:
        raise ValueError(f"truth lacks the column(s) {missing}")
    total = np.sqrt((truth[columns].to_numpy(float) ** 2).sum(axis=1))
    return pd.Series(total, index=truth.index).groupby(truth["site"]).median()


def alignment_sentence(by_site: pd.DataFrame, threshold: float, *, simulated: bool,
                       eta_squared: float | None = None,
                       rotation: pd.Series | None = None) -> str:
    """Which scans fail the registration QC by site, from the per-site outline misfits.

    ``eta_squared`` is the share of the figures' variance between sites. For a simulated
    cohort every site draws the subjects' pose and anatomy from the same distribution, so a
    site difference in the figure is one of the brain masks (their margin), not of
    registration.
    """
    if by_site.empty:
        return "No scan has a registration QC figure."
    parts = [f"{r.site}: {int(r.failed)} of {int(r.n)} above {threshold:g} mm, median "
             f"{r.median:.2f} mm" for r in by_site.itertuples()]
    text = f"Scans failing the registration QC by site ({'; '.join(parts)})"
    if eta_squared is not None:
        text += f"; the site accounts for {100 * eta_squared:.0f} % of the figures' variance"
    if simulated:
        pose = ""
        if rotation is not None and len(rotation):
            pose = (" (median head rotation " + ", ".join(
                f"{site} {value:.1f}°" for site, value in rotation.items()) + ")")
        text += (". The simulator draws every subject's head pose and individual deformation "
                 f"from the same distribution at every site{pose} and writes it on the "
                 "template grid, so the differences between sites are not misregistration: the "
                 "figure is the spread of the brain outline's distance to the template's, and "
                 "the sites' brain masks differ in margin and smoothness. A high figure of a "
                 "scan delivered in template space is therefore a warning to look at its "
                 "overlay, not an error")
    return text + "."


def eta_squared(values: pd.Series, groups: pd.Series) -> float:
    """Share of the variance of ``values`` between ``groups`` (one-way ANOVA η²)."""
    data = pd.DataFrame({"v": values, "g": groups}).dropna()
    total = float(((data["v"] - data["v"].mean()) ** 2).sum())
    if total == 0:
        return math.nan
    means = data.groupby("g")["v"].transform("mean")
    return float(((means - data["v"].mean()) ** 2).sum() / total)


def group_effect_sentence(results: clinical.ClinicalResults, model: str = "rnc") -> str:
    """The ANCOVA group effect (F, FDR p) and the patients' adjusted Hedges' g with CI."""
    ancova = results.ancova
    row = ancova[(ancova["model"] == model) & (ancova["source"] == "group")]
    if row.empty or not bool(row["estimable"].iloc[0]):
        return f"the {model.upper()} gap's group effect was not estimable"
    r = row.iloc[0]
    text = (f"the group effect on the {model.upper()} gap was "
            f"F({int(r['DF'])}, {int(r['df_resid'])}) = {format_number(r['F'])} "
            f"({p_text(r['p_fdr'], 'p_FDR')})")
    contrasts = []
    for group in clinical.SCORES_BY_GROUP:
        ph = results.posthoc[(results.posthoc["model"] == model)
                             & (results.posthoc["contrast"] == f"{group} vs HC")]
        if ph.empty or not bool(ph["estimable"].iloc[0]):
            continue
        c = ph.iloc[0]
        contrasts.append(f"{group} against controls adjusted Hedges' g "
                         f"{format_number(c['adj_g'], 2)} (95% CI "
                         f"{format_number(c['adj_g_ci_low'], 2)} to "
                         f"{format_number(c['adj_g_ci_high'], 2)}; "
                         f"{p_text(c['p_fdr'], 'p_FDR')})")
    if contrasts:
        text += "; " + " and ".join(contrasts)
    return text


def fdr_sentence(results: clinical.ClinicalResults, model: str = "rnc",
                 alpha: float = 0.05) -> str:
    """Which score correlations of the gap survive FDR correction and which do not."""
    rows = results.correlations[results.correlations["model"] == model]
    rows = rows[rows["estimable"].astype(bool)]
    if rows.empty:
        return f"no correlation of the {model.upper()} gap with a clinical score was estimable"

    def name(r: Any) -> str:
        return (f"{SCORE_NAMES.get(r.score, r.score)} in {r.group} "
                f"(ρ = {format_number(r.rho, 2)}, {p_text(r.p_fdr, 'p_FDR')})")

    kept = [name(r) for r in rows.itertuples() if r.p_fdr < alpha]
    lost = [name(r) for r in rows.itertuples() if not r.p_fdr < alpha]
    parts = []
    if kept:
        parts.append(f"the {model.upper()} gap's partial correlations with "
                     f"{', '.join(kept)} survived FDR correction")
    if lost:
        lead = "those with" if kept else f"the {model.upper()} gap's partial correlations with"
        parts.append(f"{lead} {', '.join(lost)} were not significant after FDR correction")
    return "; ".join(parts)


def closing_sentence(comparison: Mapping[str, Any], results: clinical.ClinicalResults,
                     model: str = "rnc", alpha: float = 0.05) -> str:
    """One closing sentence: what this build supports, and for which data."""
    if comparison.get("significant"):
        accuracy = (f"RNC estimated age {'more' if comparison['mae_diff'] < 0 else 'less'} "
                    "accurately than L1 regression with the same backbone")
    else:
        accuracy = ("this build gives no evidence that RNC estimates age more accurately than "
                    "L1 regression with the same backbone")
    ancova = results.ancova
    row = ancova[(ancova["model"] == model) & (ancova["source"] == "group")]
    if row.empty or not bool(row["estimable"].iloc[0]):
        clinical_part = "the clinical question could not be tested"
    elif not row["p_fdr"].iloc[0] < alpha:
        clinical_part = (f"the {model.upper()} brain-age gap did not differ significantly "
                         "between patients and controls after adjustment")
    else:
        # a group is called different only where its adjusted interval excludes 0
        above, within = [], []
        for group, (low, high) in _adjusted_intervals(results, model).items():
            (above if low > 0 or high < 0 else within).append(group)
        if not above:
            clinical_part = (f"the {model.upper()} brain-age gap's group effect was significant, "
                             "but no patient group's adjusted difference from the controls "
                             "excluded 0")
        else:
            clinical_part = (f"the {model.upper()} brain-age gap differed from the controls' in "
                             f"{' and '.join(above)} after adjustment for age, sex and site (the "
                             "adjusted 95% CI excluded 0)")
            if within:
                clinical_part += (f", while in {' and '.join(within)} the adjusted interval "
                                  "included 0")
    return f"In short, {accuracy}, and {clinical_part}."



#: Dörfel et al. (2023): test-retest ICCs of the best public brain-age packages.
DORFEL_2023_ICC = (0.94, 0.98)


def _within(table: pd.DataFrame, model: str) -> pd.DataFrame:
    rows = table[(table["model"] == model) & (table["measure"] == "corrected_gap")]
    if "subjects" in rows.columns:
        rows = rows[rows["subjects"] == "all"]
    return rows


def reliability_sentence(table: pd.DataFrame, effects: Mapping[str, float],
                         model: str = "rnc") -> str:
    """``model``'s test-retest ICC and smallest detectable change of the bias-corrected gap
    within and across sites, and whether the within-site change is below the group effects.

    Parameters
    ----------
    table : DataFrame
        :func:`brainage.analysis.reliability.reliability_table` rows (``subjects`` "all").
    effects : mapping
        Group effect to detect (years) by group, e.g. the true mean gaps of AD and PD.
    """
    rows = _within(table, model)
    parts = [f"{r.comparison} the ICC(2,1) of {model.upper()}'s bias-corrected gap was "
             f"{format_number(r.icc2, 3)} (95% CI {format_number(r.icc2_low, 2)} to "
             f"{format_number(r.icc2_high, 2)}; n = {r.n}) and its smallest detectable change "
             f"{format_number(r.sdc, 2)} years (95% CI {format_number(r.sdc_low, 2)} to "
             f"{format_number(r.sdc_high, 2)})" for r in rows.itertuples()]
    if not parts:
        return "no rescans were predicted"
    text = "; ".join(parts)
    within = rows[rows["comparison"] == "within site"]
    if len(within) and effects:
        sdc = float(within["sdc"].iloc[0])
        verdicts = [f"{'below' if sdc < effect else 'not below'} the {group} effect of "
                    f"{format_number(effect, 2)} years" for group, effect in effects.items()]
        text += (". Within site, a change of one subject's gap between two scans must exceed "
                 f"the smallest detectable change to be real, and it is {' and '.join(verdicts)}")
    return text[0].upper() + text[1:]


def icc_against_published(table: pd.DataFrame, model: str = "rnc") -> str:
    """Where ``model``'s within-site ICC(2,1) of the corrected gap lies against the range the
    best public packages reach (:data:`DORFEL_2023_ICC`): "within", "above" or "below"."""
    within = _within(table, model)
    within = within[within["comparison"] == "within site"]
    if not len(within):
        return "not estimable"
    icc, (low, high) = float(within["icc2"].iloc[0]), DORFEL_2023_ICC
    return "within" if low <= icc <= high else "above" if icc > high else "below"


def correlation_text(results: clinical.ClinicalResults, model: str, group: str, score: str) -> str:
    """``rho = ... (95% CI ..., FDR p = ..., n = ...)`` of one correlation, or why there is none."""
    rows = results.correlations
    row = rows[(rows["model"] == model) & (rows["group"] == group) & (rows["score"] == score)]
    if row.empty or not bool(row["estimable"].iloc[0]):
        n = 0 if row.empty else int(row["n"].iloc[0])
        return f"not estimable (n = {n})"
    r = row.iloc[0]
    return (f"rho = {r['rho']:.2f} (95% CI {r['ci_low']:.2f} to {r['ci_high']:.2f}, "
            f"{p_text(r['p_fdr'], 'FDR p')}, n = {int(r['n'])})")


def summary_sentence(results: clinical.ClinicalResults, model: str = "rnc") -> str:
    """The abstract's sentences on the gap by group and on severity, from the results.

    Groups without subjects are left out; a dataset without patients (IXI, OpenBHB) gets a
    sentence saying the clinical question was not addressed, with the controls' mean gap.

    Parameters
    ----------
    results : ClinicalResults
        From :func:`brainage.analysis.clinical.clinical_summary`.
    model : str, default="rnc"
        The model whose gap is described.
    """
    stats = results.group_stats[results.group_stats["model"] == model].set_index("group")
    if stats.empty:
        raise ValueError(f"model {model!r} has no rows in group_stats; models: "
                         f"{sorted(results.group_stats['model'].unique())}")
    present = [g for g in GROUPS if g in stats.index and stats.loc[g, "n"] > 0]
    means = [f"{stats.loc[g, 'mean']:.1f} years in {_GROUP_NAMES[g]} (n = {int(stats.loc[g, 'n'])})"
             for g in present]
    if not set(present) & set(clinical.SCORES_BY_GROUP):
        text = ("This dataset has no AD or PD patients, so the clinical part of the question "
                "was not addressed")
        if not means:
            return text + "."
        return f"{text}; the bias-corrected gap of the {model.upper()} model averaged {means[0]}."
    text = (f"The bias-corrected gap of the {model.upper()} model averaged "
            f"{', '.join(means[:-1])} and {means[-1]}." if len(means) > 1 else
            f"The bias-corrected gap of the {model.upper()} model averaged {means[0]}.")
    text += _adjusted_text(results, model)
    for group, scores in clinical.SCORES_BY_GROUP.items():
        if group in present:
            parts = [f"{correlation_text(results, model, group, s)} with {SCORE_NAMES.get(s, s)}"
                     for s in scores]
            text += (f" Within {group}, the gap's partial Spearman correlation was "
                     f"{' and '.join(parts)}.")
    return text


def _adjusted_intervals(results: clinical.ClinicalResults, model: str
                        ) -> dict[str, tuple[float, float]]:
    """Each patient group's adjusted interval against the controls (difference, else g)."""
    rows, out = results.posthoc, {}
    if rows.empty:
        return out
    low, high = (("adj_ci_low", "adj_ci_high") if "adj_ci_low" in rows.columns
                 else ("adj_g_ci_low", "adj_g_ci_high"))
    for group in clinical.SCORES_BY_GROUP:
        row = rows[(rows["model"] == model) & (rows["contrast"] == f"{group} vs HC")]
        if row.empty or not bool(row["estimable"].iloc[0]) or low not in row.columns:
            continue
        out[group] = (float(row[low].iloc[0]), float(row[high].iloc[0]))
    return out


def _adjusted_text(results: clinical.ClinicalResults, model: str) -> str:
    """`` Adjusted for ..., the gap exceeded the controls' by ...``: the patients' contrasts.

    A group whose adjusted interval contains 0 is not said to exceed the controls: its
    difference is stated with the words that its interval included 0.
    """
    rows = results.posthoc
    if rows.empty or "adj_diff" not in rows.columns:
        return ""
    exceeded, included, used, negative = [], [], [], False
    for group in clinical.SCORES_BY_GROUP:
        row = rows[(rows["model"] == model) & (rows["contrast"] == f"{group} vs HC")]
        if row.empty or not bool(row["estimable"].iloc[0]):
            continue
        r = row.iloc[0]
        text = (f"{r['adj_diff']:.1f} years in {group} (95% CI {r['adj_ci_low']:.1f} to "
                f"{r['adj_ci_high']:.1f}; adjusted Hedges' g {r['adj_g']:.2f})")
        outside = r["adj_ci_low"] > 0 or r["adj_ci_high"] < 0
        (exceeded if outside else included).append(text)
        negative |= bool(outside and r["adj_ci_high"] < 0)
        for column in str(r.get("covariates") or "").split(","):
            # one-hot columns (site_siteB) name their covariate (site)
            name = next((c for c in clinical.CATEGORICAL_COVARIATES if column.startswith(f"{c}_")),
                        column)
            if name and name not in used:
                used.append(name)
    if not exceeded and not included:
        return ""
    covariates = used
    names = ", ".join(covariates[:-1]) + f" and {covariates[-1]}" if len(covariates) > 1 else \
        "".join(covariates)
    adjusted = f"Adjusted for {names}, the" if names else "The"
    parts = []
    if exceeded:
        verb = "differed from" if negative else "exceeded"
        parts.append(f"gap {verb} the controls' by {' and '.join(exceeded)}")
    if included:
        lead = "while the" if exceeded else "gap's"
        parts.append(f"{lead} difference of {' and '.join(included)} has an interval that "
                     "includes 0: no difference from the controls is shown there")
    return f" {adjusted} {', '.join(parts)}."


def _pct(x: float) -> str:
    return f"{100 * x:.2g}"


def simulation_model_table(config: simulate.SimulationConfig | Mapping[str, Any],
                  truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ageing, anatomy and scanner model of a configuration, in the units of its sources.

    The book's Methods show this table (``brainage.study.book`` writes it from the run's
    ``simulation.json`` and ground truth), so that no rate or range is typed by hand. The
    numbers come from :mod:`brainage.data.simulate`; only their wording lives here.

    Parameters
    ----------
    config : SimulationConfig or mapping
        The configuration (a ``simulation.json``'s ``config`` is read with
        :func:`brainage.data.simulate.config_from_dict`).
    truth : DataFrame, optional
        ``participants_truth.tsv`` of a cohort: adds the realised head-size spread.

    Returns
    -------
    DataFrame
        Columns ``quantity``, ``value``, ``source`` (MyST citation roles).
    """
    cfg = (config if isinstance(config, simulate.SimulationConfig)
           else simulate.config_from_dict(config))
    ag, an, sc = cfg.ageing, cfg.anatomy, cfg.scanner
    rate = [float(np.interp(a, *zip(*ag.brain_rate))) for a in (35, 60, 80)]
    share = [float(np.interp(a, *zip(*ag.wm_share))) for a in (40, 55, 70)]
    lost = float(simulate.brain_loss(np.array([80.0]), cfg)[0]
                 - simulate.brain_loss(np.array([20.0]), cfg)[0])
    vent = [1 + ag.ventricle_gain * ((a - 20) / 50) ** 2 for a in (70, 90)]
    sex_ratio = an.male_head_scale ** 6
    rows = [
        ("whole-brain tissue loss at 35 / 60 / 80 y (%/y of the tissue left)",
         " / ".join(_pct(r) for r in rate), "{cite}`hedman2012lifespan`"),
        ("whole-brain tissue lost from 20 to 80 y (%)", _pct(lost), "the rate's integral"),
        ("share of the parenchymal loss by the whole brain's contraction (white and grey "
         "matter; the rest thins the cortex) at 40 / 55 / 70 y",
         " / ".join(f"{x:.2g}" for x in share),
         "{cite}`walhovd2005volumes`, {cite}`fjell2013critical`"),
        ("hippocampus, entorhinal: onset, anchor age, rate at anchor",
         f"{ag.hippocampus[0]:g} y, {ag.hippocampus[1]:g} y, {_pct(ag.hippocampus[2])} %/y",
         "{cite}`barnes2009hippocampal`, {cite}`fjell2013critical`"),
        ("thalamus, putamen, caudate: onset, anchor age, rate at anchor",
         f"{ag.subcortical[0]:g} y, {ag.subcortical[1]:g} y, {_pct(ag.subcortical[2])} %/y",
         "{cite}`fjell2013critical`"),
        ("lateral ventricles: volume ratio to age 20 at 70 / 90 y",
         " / ".join(f"{v:.3g}" for v in vent), "{cite}`pfefferbaum1994morphology`"),
        ("TIV: SD within sex (%), men over women",
         f"{_pct(np.expm1(3 * an.head_scale_sd))}, {sex_ratio:.3g}", "modelling choice"),
        ("linear scale left in template space by an affine registration (SD per axis, %)",
         _pct(an.registered_scale_sd), "modelling choice"),
        ("own ventricle size, independent of age (SD of its log)", f"{an.ventricle_sd:g}",
         "modelling choice"),
        ("random displacement: SD, control spacing (mm)",
         f"{an.deformation_sd_mm:g}, {an.control_spacing_mm:g}", "modelling choice"),
        ("brain mask margin around the template's: range per subject, SD over the brain (mm)",
         f"{sc.mask_margin_mm[0]:g}-{sc.mask_margin_mm[1]:g}, {sc.mask_margin_sd_mm:g}",
         "domain randomisation (brain extraction)"),
    ]
    for site in cfg.sites:
        rows.append((f"site {site.name}: GM, CSF (x WM); noise per acquired voxel (%); bias; "
                     "voxel (mm)",
                     f"{site.gm:g}, {site.csf:g}; {_pct(site.noise)}; {site.bias:g}; "
                     + " x ".join(f"{v:g}" for v in site.voxel_mm),
                     "calibrated (`benchmarks/bench_sim2real.py`)"))
    rows.append(("per-subject scanner: GM, CSF SD; noise, bias, texture factors; extra blur "
                 "FWHM (mm)",
                 f"{sc.gm_sd:g}, {sc.csf_sd:g}; {sc.noise_range[0]:g}-{sc.noise_range[1]:g}, "
                 f"{sc.bias_range[0]:g}-{sc.bias_range[1]:g}, "
                 f"{sc.texture_range[0]:g}-{sc.texture_range[1]:g}; "
                 f"{sc.blur_fwhm_mm[0]:g}-{sc.blur_fwhm_mm[1]:g}",
                 "domain randomisation {cite}`billot2023synthseg`"))
    if truth is not None and {"tiv_cm3", "sex"} <= set(truth.columns):
        log_tiv = np.log(truth["tiv_cm3"].astype(float))
        within = float(log_tiv.groupby(truth["sex"]).std().mean())
        means = truth.groupby("sex")["tiv_cm3"].mean()
        ratio = (f", men over women {means['M'] / means['F']:.3g}"
                 if {"M", "F"} <= set(means.index) else "")
        rows.append(("TIV realised in this cohort: mean (cm³), SD within sex (%)",
                     f"{truth['tiv_cm3'].mean():.0f}, {_pct(np.expm1(within))}{ratio}",
                     "ground truth"))
    return pd.DataFrame(rows, columns=["quantity", "value", "source"])


# --- issue 32: the saliency truth test, the seed's Grad-RAM claim, clinical recovery ----------

_MEASURE_NAMES = {"auc": "AUC in the ageing regions", "entropy": "normalised entropy",
                  "n_regions": "regions above half the maximum",
                  "half_mass_fraction": "share of brain voxels holding half the attribution"}


def _ci(low: float, high: float, digits: int = 2) -> str:
    return f"95% CI {low:.{digits}f} to {high:.{digits}f}"


def saliency_truth_sentence(table: pd.DataFrame, method: str, *, alpha: float = 0.05) -> str:
    """Whether a method's maps find the simulated ageing regions better than the null network.

    Parameters
    ----------
    table : DataFrame
        :func:`brainage.models.saliency.truth_test_table` rows; the permuted-age network's row
        is the one without ``diff_null``.
    method : str
        The maps' name ("integrated gradients", "Grad-RAM").
    alpha : float, default=0.05
        Level of the Holm-corrected comparison with the null.
    """
    if table.empty:
        return f"The {method} maps were not tested: no simulated ground truth"
    compared = table[table["diff_null"].notna()] if "diff_null" in table.columns else \
        table.iloc[0:0]
    models = table if compared.empty else compared
    parts = [f"{r.model.upper()} {r.median:.2f} ({_ci(r.ci_low, r.ci_high)})"
             for r in models.itertuples()]
    text = (f"The {method} maps' median AUC in the simulated ageing regions was "
            f"{' and '.join(parts)}")
    above_half = [r.model.upper() for r in models.itertuples() if r.p_half < alpha]
    text += (", above 0.5 (no preference)" if len(above_half) == len(models) else
             ", not above 0.5 for " + " and ".join(
                 r.model.upper() for r in models.itertuples() if not r.p_half < alpha))
    if compared.empty:
        return text + "; no permuted-age network was trained to compare with"
    null = table[table["diff_null"].isna()].iloc[0]
    better = [r.model.upper() for r in compared.itertuples() if r.p_null_holm < alpha]
    diffs = [f"{r.model.upper()} {r.diff_null:+.3f} ({_ci(r.diff_low, r.diff_high, 3)})"
             for r in compared.itertuples()]
    verdict = ("neither model's maps found them better than" if not better else
               "both models' maps found them better than" if len(better) == len(compared) else
               f"only {' and '.join(better)}'s maps found them better than")
    return (f"{text}; but the network trained on permuted ages, which knows nothing of age, "
            f"reached {null['median']:.2f} ({_ci(null['ci_low'], null['ci_high'])}), and {verdict} "
            f"that null (paired median difference {'; '.join(diffs)}; one-sided Wilcoxon "
            f"signed-rank, Holm-corrected over the models)")


def gradram_claim_sentence(differences: pd.DataFrame, truth: pd.DataFrame) -> str:
    """Whether the seed's claim (Grad-RAM shows "more nuanced" age features with RNC than
    with L1) is reproduced: RNC minus L1 differences of the measures, and the truth test.

    Parameters
    ----------
    differences : DataFrame
        :func:`brainage.models.saliency.paired_differences` of RNC (a) against L1 (b).
    truth : DataFrame
        :func:`brainage.models.saliency.truth_test_table` of the Grad-RAM maps.
    """
    rows = differences.set_index("measure")
    parts = [f"{_MEASURE_NAMES.get(m, m)} {r['median_a']:.3g} against {r['median_b']:.3g} "
             f"(paired difference {r['diff']:+.3g}, {_ci(r['ci_low'], r['ci_high'], 3)})"
             for m, r in rows.iterrows()]
    spread = [m for m in ("entropy", "n_regions", "half_mass_fraction") if m in rows.index]
    # more spread: higher entropy, more regions, a larger share holding half the attribution
    higher = [m for m in spread if rows.loc[m, "ci_low"] > 0]
    auc_up = "auc" in rows.index and rows.loc["auc", "ci_low"] > 0
    auc_down = "auc" in rows.index and rows.loc["auc", "ci_high"] < 0
    beats_null = ("p_null_holm" in truth.columns and bool(
        (truth.loc[truth["model"] == "rnc", "p_null_holm"] < 0.05).any()))
    against_null = ("" if beats_null else
                    " and no better than the permuted-age network, which knows nothing of age")
    if auc_up and higher and beats_null:
        verdict = "is reproduced here"
    elif higher:
        truth_part = ("favour the simulated ageing regions less than L1's" if auc_down else
                      "favour the simulated ageing regions more than L1's" if auc_up else
                      "favour the simulated ageing regions no more than L1's")
        verdict = (f"is not reproduced here: RNC's Grad-RAM maps are more spread out, but they "
                   f"{truth_part}{against_null}, so the extra spread is not shown to be age "
                   "information")
    elif auc_up:
        verdict = ("is only partly reproduced here: RNC's maps favour the ageing regions more "
                   f"than L1's{against_null}, but they are not more spread out")
    else:
        verdict = ("is not reproduced here: no interval shows RNC's maps more spread out or "
                   "closer to the simulated ageing than L1's")
    return (f"The reference study's claim that Grad-RAM reveals more nuanced age features with "
            f"the RNC loss than with L1 regression {verdict} (RNC against L1 on the same test "
            f"subjects: {'; '.join(parts)})")


def disease_saliency_sentence(own: pd.DataFrame, *, alpha: float = 0.05) -> str:
    """The four own-disease comparisons of the patients' maps, Holm-corrected.

    Parameters
    ----------
    own : DataFrame
        Rows ``model``, ``patients``, ``patients median AUC``, ``controls median AUC``, ``p``,
        ``p (Holm)``: patients' signed attribution in their own disease's regions against
        age-matched controls.
    """
    if own.empty:
        return "the patients' maps were not tested: too few patients or age-matched controls"
    kept = own[pd.to_numeric(own["p (Holm)"]) < alpha]
    details = "; ".join(f"{r['model']} {r['patients']}: median AUC "
                        f"{r['patients median AUC']:.2f} against "
                        f"{r['controls median AUC']:.2f}, {p_text(r['p (Holm)'], 'p_Holm')}"
                        for _, r in own.iterrows())
    return (f"after Holm correction over the {len(own)} model and disease comparisons, "
            f"{len(kept)} showed the patients' signed attribution in their own disease's "
            f"regions above that of age-matched controls ({details})")


def reference_sentence(predicted: Mapping[str, float], mean_scan: Mapping[str, float],
                       train_mean_age: float, effect: pd.DataFrame) -> str:
    """What the integrated-gradients reference is predicted at, and what it does to the maps.

    Parameters
    ----------
    predicted, mean_scan : mapping of model name to years
        The predicted age of the reference used and of the mean training scan.
    train_mean_age : float
    effect : DataFrame
        Rows ``model``, ``reference`` ("typical scan", "mean scan"), ``median AUC``,
        ``positive share``: the maps' median ageing AUC and median positive share of the
        attribution under each reference, on the same test subjects.
    """
    used = " and ".join(f"{m.upper()} {v:.1f}" for m, v in predicted.items())
    blurred = " and ".join(f"{m.upper()} {v:.1f}" for m, v in mean_scan.items())
    text = (f"The reference, the most typical training scan of the mean training age, is "
            f"predicted at {used} years against a training mean of {train_mean_age:.1f}; the "
            f"mean training scan, a blurred average, would be predicted at {blurred} years")
    if effect.empty:
        return text
    rows = effect.set_index(["model", "reference"])
    parts = []
    for model in predicted:
        if (model, "typical scan") in rows.index and (model, "mean scan") in rows.index:
            a, b = rows.loc[(model, "typical scan")], rows.loc[(model, "mean scan")]
            parts.append(f"{model.upper()}: positive share {100 * a['positive share']:.0f} % "
                         f"against {100 * b['positive share']:.0f} %, median ageing AUC "
                         f"{a['median AUC']:.2f} against {b['median AUC']:.2f}")
    if parts:
        text += (". From the far reference most attribution is negative (it explains \"younger "
                 "than the reference\"); from the typical scan it splits with the prediction ("
                 + "; ".join(parts) + ")")
    return text


def pd_recovery_sentence(truth: pd.DataFrame, power: Mapping[str, float],
                         correlation: Mapping[str, float], *, group: str = "PD") -> str:
    """The PD effect as a missed recovery: truth against estimate, and the power of the test.

    Parameters
    ----------
    truth : DataFrame
        :func:`brainage.analysis.clinical.compare_with_truth` rows of ``group``.
    power : mapping
        :func:`brainage.analysis.clinical.gap_power` of the true group gap against the
        controls' gap SD, with ``sd`` and ``effect`` added.
    correlation : mapping
        :func:`brainage.analysis.clinical.correlation_power` of the true correlation, with
        ``rho`` added.
    """
    corr = truth[(truth["quantity"] == "score_correlation") & (truth["group"] == group)]
    missed = [f"{r.model.upper()} {SCORE_NAMES.get(r.score, r.score)} {r.estimate:.2f}"
              for r in corr.itertuples() if r.covered is not None]
    uncovered = [f"{r.model.upper()} {SCORE_NAMES.get(r.score, r.score)}"
                 for r in corr.itertuples() if r.covered is False]
    truths = sorted({f"{SCORE_NAMES.get(r.score, r.score)} {r.truth:.2f}"
                     for r in corr.itertuples()})
    configured = sorted({f"{r.configured:.1f}" for r in corr.itertuples()
                         if np.isfinite(r.configured)})
    text = (f"{group} is a missed recovery, not an absent effect: the simulator gave every "
            f"{group} patient an older-looking brain (true mean gap {power['effect']:.1f} "
            f"years)")
    if truths:
        text += (f" and tied it to severity (the partial correlation of the true gap was "
                 f"{', '.join(truths)}"
                 + (f"; the scores were configured to correlate {' and '.join(configured)} "
                    f"with the latent severity" if configured else "") + ")")
    if missed:
        text += f", yet the models estimated {', '.join(missed)}"
        if uncovered:
            text += f" (the interval of {', '.join(uncovered)} excludes the truth)"
    text += (f". With the controls' gap SD of {power['sd']:.1f} years, a {power['effect']:.1f}"
             f"-year effect is d = {power['d']:.2f}: this analysis had "
             f"{100 * power['power_now']:.0f} % power for it, and 80 % power needs about "
             f"{power['n_per_group']:.0f} patients and as many controls")
    if correlation:
        text += (f"; a correlation of {correlation['rho']:.2f} would need about "
                 f"{correlation['n_needed']:.0f} patients (power now "
                 f"{100 * correlation['power_now']:.0f} %, before the attenuation by "
                 f"prediction error)")
    return text


def matched_sentence(rows: pd.DataFrame) -> str:
    """The age-matched control comparison of each patient group (model, group rows of
    :func:`brainage.analysis.clinical.age_matched_comparison`)."""
    parts = []
    for r in rows.itertuples():
        if not r.estimable:
            parts.append(f"{r.model.upper()} {r.group}: not estimable ({r.note})")
            continue
        parts.append(f"{r.diff:+.1f} years in {r.group} for {r.model.upper()} "
                     f"({_ci(r.ci_low, r.ci_high, 1)}; {r.n_pairs} of {r.n_patients} patients "
                     f"matched within {r.caliper:g} years, mean ages {r.age_patients:.1f} and "
                     f"{r.age_controls:.1f})")
    if not parts:
        return "No age-matched comparison was made"
    return ("Against age-matched test controls (1:1, nearest age), the patients' corrected gap "
            "differed from their controls' by " + "; ".join(parts))


def patient_coverage_sentence(table: pd.DataFrame, level: float) -> str:
    """Coverage of the age intervals by group: guaranteed only for controls like the
    calibration set (rows ``model``, ``group``, ``coverage``, ``ci_low``, ``ci_high``, ``n``)."""
    parts = [f"{r.model.upper()} {r.group} {r.coverage:.2f} ({_ci(r.ci_low, r.ci_high)}, "
             f"n = {r.n})" for r in table.itertuples() if r.n > 0]
    return (f"The conformal intervals' {100 * level:.0f} % coverage is guaranteed only for scans "
            f"exchangeable with the calibration scans, healthy validation controls; measured "
            f"coverage of the chronological age was " + "; ".join(parts))


def calibration_goal_sentence(table: pd.DataFrame, *, k: int = 10, level: float = 0.9,
                              coverage_goal: tuple[float, float] = (0.85, 0.95)) -> str:
    """Whether calibrating on ``k`` scans of a site met issue 29's goals, per model.

    ``table``: :func:`brainage.analysis.site_calibration.calibration_curve` tables with a
    ``model`` column. The coverage goal is met when the site calibration's mean coverage over
    splits lies within ``coverage_goal``; the gap goal when the mean over splits of ``|mean
    gap|`` is at most 3 years, the table's ``gap_within_3`` (a mean gap near 0 on average over
    splits whose own gaps are large is not met). The uncalibrated model's coverage and mean gap
    are given beside.
    """
    low, high = coverage_goal
    gap_goal = 3.0
    parts = []
    for model in dict.fromkeys(table["model"]):
        rows = table[(table["model"] == model) & (table["k"] == k)].set_index("method")
        if "site" not in rows.index or rows.loc["site", "splits"] == 0:
            raise ValueError(f"calibration_goal_sentence: no site calibration of {model!r} at "
                             f"k = {k} in the table (its k: {sorted(set(table['k']))})")
        site = rows.loc["site"]
        coverage_met = bool(np.isfinite(site["coverage"]) and low <= site["coverage"] <= high)
        gap_met = bool(site["abs_gap"] <= gap_goal)
        coverage = ("no interval" if not np.isfinite(site["coverage"])
                    else f"{site['coverage']:.2f}")
        text = (f"{str(model).upper()}: {100 * level:.0f} % interval coverage {coverage} (goal "
                f"{low:g}-{high:g}: {'met' if coverage_met else 'missed'}), |mean gap| "
                f"{site['abs_gap']:.1f} years averaged over splits (goal at most "
                f"{gap_goal:g}: {'met' if gap_met else 'missed'}; at most {gap_goal:g} in "
                f"{100 * site['gap_within_3']:.0f} % of splits)")
        if "none" in rows.index:
            none = rows.loc["none"]
            coverage = ("no interval" if not np.isfinite(none["coverage"])
                        else f"coverage {none['coverage']:.2f}")
            text += f", against {coverage} and mean gap {none['gap']:+.1f} years uncalibrated"
        parts.append(text)
    splits = int(table.loc[(table["k"] == k) & (table["method"] == "site"), "splits"].max())
    return (f"Site calibration on {k} of the real scans, measured on the others ({splits} "
            f"random splits). " + "; ".join(parts) + "." + _against_mean_age(table, k))


def _against_mean_age(table: pd.DataFrame, k: int) -> str:
    """The calibrated models' MAE beside that of the ``k`` calibration scans' own mean age,
    which reads no scan: calibration moves the level, only the model's ordering beats it."""
    at_k = table[(table["k"] == k) & (table["splits"] > 0)]
    mean_age = at_k[at_k["method"] == "mean age"]
    if mean_age.empty:
        return ""
    reference = float(mean_age["mae"].iloc[0])
    site = at_k[at_k["method"] == "site"].drop_duplicates("model").set_index("model")["mae"]
    maes = ", ".join(f"{str(m).upper()} {v:.1f}" for m, v in site.items())
    lower = {str(m).upper(): reference - v for m, v in site.items() if v < reference}
    verdict = ("; " + ", ".join(f"{m} is lower by {d:.1f} years" for m, d in lower.items())
               if lower else ": no calibrated model is more accurate than the site's mean age")
    return (f" The {k} calibration scans' own mean age, which reads no scan, has MAE "
            f"{reference:.1f} years on the others against {maes} years calibrated{verdict}.")


def calibration_summary(table: pd.DataFrame, *, k: int = 10,
                        methods: tuple[str, ...] = ("none", "refit", "site", "mean age")
                        ) -> pd.DataFrame:
    """The rows of ``methods`` at ``k`` of :func:`brainage.analysis.site_calibration.
    calibration_curve` tables with a ``model`` column, named for the book (the mean age, which
    reads no model, once, as ``no model``)."""
    rows = table[(table["k"] == k) & table["method"].isin(methods) & (table["splits"] > 0)]
    if rows.empty:
        raise ValueError(f"calibration_summary: no row at k = {k} for {list(methods)} (the "
                         f"table's k: {sorted(set(table['k']))})")
    rows = rows[(rows["method"] != "mean age")
                | (rows["model"] == rows["model"].iloc[0])].copy()
    rows["model"] = np.where(rows["method"] == "mean age", "no model",
                             rows["model"].astype(str).str.upper())
    rows["method"] = rows["method"].map(CURVE_METHOD_NAMES)
    return rows[["model", "method", "mae", "gap", "gap_sd", "gap_within_3", "r", "coverage",
                 "coverage_p10", "coverage_p90", "width"]].reset_index(drop=True)
