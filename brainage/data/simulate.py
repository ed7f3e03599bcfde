r"""Simulated cohort: T1-weighted brains with known ageing, AD and PD effects.

The study's default dataset. Each subject is synthesised from nilearn's MNI152 2009 template
(T1, GM and WM probability maps, brain mask; CSF = mask - GM - WM), written as a BIDS dataset
with the ground truth in ``derivatives/ground_truth``. The model, with the default values of
:class:`SimulationConfig` (sources in the References below and in ``book/methods.md``):

Ages and biological age
    Chronological age :math:`a \sim U(\text{range of the group})` (HC 20-100, AD 55-80,
    PD 45-85). Latent severity :math:`S \sim \mathrm{Beta}(2, 2)` for patients (0 for HC),
    disease acceleration :math:`A = A_{max} S` (AD 16 y, PD 6 y: mean global accelerations of
    8 and 3 years), biological age :math:`b = a + \delta + A`,
    :math:`\delta \sim N(0, \sigma_{bio}^2)`, :math:`\sigma_{bio} = 3` y. A patient's
    :math:`\delta` is redrawn while :math:`b` would exceed the controls' oldest age, so that
    every patient's brain lies inside the age range a model trained on controls has seen
    (:math:`\max(\text{patient ages}) + A_{max}` must not exceed it). Every ageing effect is
    the population's dose at :math:`b` (by default a function of :math:`b` only; with the
    varied preset, times the subject's own rate for that process).
Varied preset (opt-in: :data:`VARIED_SETTINGS`, :func:`varied_config`; not the default)
    By default every effect of this paragraph is off (rates 1, gamma 1, no fine displacement,
    no asymmetry, the young brain's mask outline) and draws nothing, so the default cohort is
    the default simulator, draw for draw. The preset brought the CSF fraction's age
    trend close to real scans' but made the brain mask's size a cue of age that real scans do
    not carry, and a model trained on it read 50 real IXI scans worse (``docs/real-data.md``).
    Individual rates (:class:`IndividualAgeing`): each subject draws a rate factor per
    process, :math:`f_m = \exp(\sigma_m z_m -
    \sigma_m^2/2)`, :math:`z_m = \lambda_m g + \sqrt{1 - \lambda_m^2} e_m` (a shared
    whole-brain rate :math:`g` and the process's own :math:`e_m`, standard normal): whole-brain
    contraction (:math:`\sigma` 0.15), cortical thinning (0.2, :math:`\lambda` 0.6),
    hippocampal and entorhinal loss (0.8, 0.5), subcortical loss (0.7, 0.5), ventricular
    growth (0.6, 0.5), WMH load (1.2, 0.3) and the GM/WM contrast's decline (0.6, 0.3), stored
    as ``rate_<process>``. Among controls no process's dose is then a fixed function of age.
    Also a per-subject gamma :math:`e^{N(0, 0.1^2)}` (``scan_gamma``), a second, finer random
    displacement (SD 1 mm, 12 mm grid), ventricular asymmetry :math:`N(0, 0.15^2)`, and
    template-space images without the whole brain's contraction
    (``anatomy.template_contraction_share`` 0: the affine registration a template-space image
    stands for removes it, ``benchmarks/bench_registered_contraction.py``).
Realised brain age
    The subject's own rates and the disease's regional losses change how much tissue the
    brain has lost at :math:`b` (by default the disease's only). The realised brain age
    :math:`b^*` is the age at which the
    population's healthy brain has lost as much tissue: :math:`T(b^*) = T_{subject}` with
    :math:`T = \sum_g V_g L_g + V_{vent} (V(b)/V_{20} - 1) + V_{tis} k_{brain}` (template
    grey-matter volume :math:`V_g` of each loss region, ventricular CSF volume :math:`V_{vent}`,
    tissue volume :math:`V_{tis}`, whole-brain contraction :math:`k_{brain}`), recomputed from
    the doses applied. It equals :math:`b` for a control whose rates are all 1 (every control by
    default); the true
    brain-age gap is :math:`b^* - a`.
Ageing dose-response
    Whole-brain tissue (GM + WM) is lost at a rate :math:`r(b)` per year of the tissue left,
    piecewise linear through ``ageing.brain_rate`` (0 at 18.3, 0.5 %/y at 60, so 0.2 %/y at 35,
    0.6 %/y at 100; Hedman 2012).
    :math:`L_{brain} = 1 - \exp(-\int_0^b r)`. It is shared
    out: lateral ventricles grow as :math:`V(b)/V_{20} = 1 + k_v ((b - 20)_+ / 50)^2`,
    :math:`k_v = 1` (Pfefferbaum); hippocampus and entorhinal cortex (:math:`o = 40`,
    :math:`1\,\%/y` at 75; Barnes 2009, Fjell 2013) and thalamus, putamen, caudate
    (:math:`o = 20`, :math:`0.3\,\%/y` at 60) follow
    :math:`L_g(b) = r_g^* (b - o_g)_+^2 / (2 (a_g^* - o_g))`; of the rest, the share
    ``ageing.wm_share`` (0 before 40, 0.5 by 70: white matter declines late; Walhovd 2005) is a
    contraction of the whole brain inside its mask (white and grey matter), the remainder the
    cortex's loss. GM/WM contrast falls as :math:`\Delta(b) = \Delta_{scan}\max(0.3,
    1 - \kappa (b - 20)_+)`, :math:`\kappa = 0.003/y` (Salat 2009). Periventricular WM
    hypointensity load :math:`h(b) = \min(1, h_{max} e^{(b - 90)/\tau})`, :math:`h_{max} = 0.6`,
    :math:`\tau = 10` y (de Leeuw 2001).
Disease
    Extra loss :math:`L_g = m_g S`: AD hippocampus 0.30, entorhinal 0.35, temporo-parietal
    cortex 0.20; PD putamen 0.20, caudate 0.15, midbrain 0.20. Losses combine as
    :math:`1 - (1 - L_{age})(1 - L_{dis})`.
Volume loss as deformation
    Each process has a displacement basis: the flow :math:`\phi_t` of a velocity field, the
    gradient of the Gaussian-smoothed region mask (into the ventricles, out of shrinking
    regions; out of the brain mask for the cortex), tabulated against its volume effect on the
    template. A target loss :math:`L` is realised as :math:`L_{def} = \min(1 - (1 - L)^{s},
    R_{max})` by deformation (share :math:`s = 0.5`) and the rest by converting grey matter to
    CSF (partial-volume sulcal widening): :math:`c = 1 - (1 - L) / (1 - L_{def})`.
Individual anatomy (independent of age)
    Head size: linear scale 1.02 (men) or 1/1.02 (women) times :math:`e^{N(0, 0.033^2)}`
    (TIV SD about 10 %, men about 12 % larger), in the truth (``tiv_cm3``) and in native-space
    images; template-space images keep only the per-axis residual scale
    :math:`s = e^{N(0, 0.012^2)}` an affine registration leaves. Own ventricle size
    :math:`e^{N(0, 0.3^2)}` times the ageing ratio (the ventricles' flow runs both ways).
    Pull-back :math:`y(x) = c + M (x - c) + u(x)`, :math:`M = (\mathrm{diag}(s) R)^{-1}`,
    rotations :math:`N(0, 2°)`, and :math:`u` a random displacement on a 24 mm control grid
    (SD 3 mm, smoothed, trilinearly upsampled). The subject image is
    :math:`I(x) = B(x)\, T_s(y(x) + M\,d(x))`, masked by the template mask widened by 2 mm at
    :math:`y(x)`; :math:`d` sums the disease and ageing flows and the whole brain's contraction
    :math:`(1 + k)(x - c)`, :math:`(1 + k)^{-3} = 1 - k_{brain}`; :math:`T_s` is the
    template-space image :math:`\mu_{GM} p'_{GM} + \mu_{WM} p_{WM} (1 - w) + \mu_{WMH} p_{WM} w
    + \mu_{CSF} p'_{CSF} + \mu_{WM} \epsilon` (:math:`\epsilon`: the template T1's residual
    texture, :math:`w` the patchy WMH map).
Scanner
    Per site: tissue intensities, a multiplicative bias :math:`B = e^{\beta \cdot P}` on a
    second-order polynomial basis (site pattern plus subject variation; the residual after a
    bias correction), a Gaussian point spread for the acquired voxel size, Rician noise of SD
    ``noise`` times the WM intensity per acquired voxel, averaged down on coarser grids. The
    defaults are calibrated to real IXI scans after the project's preprocessing
    (``benchmarks/bench_sim2real.py``: noise, WM CV, GM/WM contrast, histogram peaks, 95th
    percentile, CSF fraction). Per subject (:class:`ScannerRandomisation`, SynthSeg-style domain
    randomisation, Billot 2023): GM and CSF intensities, bias strength, noise level, texture and
    an extra blur drawn around the site's, independently of age.
Scores
    From the same latent severity: :math:`u = \rho z_S + \sqrt{1 - \rho^2}\,\varepsilon`
    (:math:`z_S` the standardised severity), score = clip(round(mean ± sd u)); MMSE falls,
    CDR-SB, MDS-UPDRS-III and Hoehn & Yahr rise with severity.

References
----------
.. [1] Hedman A.M. et al. (2012). Human brain changes across the life span: a review of 56
   longitudinal MRI studies. Hum Brain Mapp 33(8), 1987-2002.
.. [2] Pfefferbaum A., Sullivan E.V. Neuroimaging of the aging brain (ACNP Generation of Progress).
.. [3] Fjell A.M. et al. (2013). Critical ages in the life course of the adult brain. Neurobiol
   Aging 34(10), 2239-2247.
.. [4] Barnes J. et al. (2009). A meta-analysis of hippocampal atrophy rates in Alzheimer's
   disease. Neurobiol Aging 30(11), 1711-1723.
.. [5] Franke K., Gaser C. (2012). Longitudinal changes in individual BrainAGE in healthy aging,
   mild cognitive impairment, and Alzheimer's disease. GeroPsych 25(4), 235-245.
.. [6] Eickhoff C.R. et al. (2021). Advanced brain ageing in Parkinson's disease is related to
   disease duration and individual impairment. Brain Commun 3(3), fcab191.
.. [7] Salat D.H. et al. (2009). Age-associated alterations in cortical gray and white matter
   signal intensity and gray to white matter contrast. NeuroImage 48(1), 21-28.
.. [8] de Leeuw F.E. et al. (2001). Prevalence of cerebral white matter lesions in elderly
   people. J Neurol Neurosurg Psychiatry 70(1), 9-14.
.. [9] Walhovd K.B. et al. (2005). Effects of age on volumes of cortex, white matter and
   subcortical structures. Neurobiol Aging 26(9), 1261-1270.
.. [10] Billot B. et al. (2023). SynthSeg: segmentation of brain MRI scans of any contrast and
   resolution without retraining. Med Image Anal 86, 102789.
.. [11] Raz N. et al. (2005). Regional brain changes in aging healthy adults: general trends,
   individual differences and modifiers. Cereb Cortex 15(11), 1676-1689.
.. [12] Fjell A.M. et al. (2009). One-year brain atrophy evident in healthy aging. J Neurosci
   29(48), 15223-15231.
.. [13] Cole J.H., Franke K. (2017). Predicting age using neuroimaging: innovative brain ageing
   biomarkers. Trends Neurosci 40(12), 681-690.
"""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import json
import logging
import multiprocessing as mp
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from brainage._utils import GROUPS, VERSION, closest_hint, sha256_file
from brainage.data import _anatomy
from brainage.data._simulate_config import (
    DEFAULT_SITES,
    INDIVIDUAL_MARKERS,
    PRESETS,
    VARIED_SETTINGS,
    AgeingConfig,
    AnatomyConfig,
    DiseaseConfig,
    IndividualAgeing,
    ScannerRandomisation,
    ScoreConfig,
    SimulationConfig,
    SimulationConfigError,
    SiteConfig,
    check_setting,
    config_from_dict,
    config_to_dict,
    load_config_file,
    preset_config,
    varied_config,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SITES",
    "AgeingConfig",
    "AnatomyConfig",
    "DiseaseConfig",
    "INDIVIDUAL_MARKERS",
    "VARIED_SETTINGS",
    "IndividualAgeing",
    "ScannerRandomisation",
    "ScoreConfig",
    "SimulatedCohort",
    "SimulationConfig",
    "SimulationConfigError",
    "SiteConfig",
    "brain_loss",
    "config_from_dict",
    "config_to_dict",
    "ensure_cohort",
    "varied_config",
    "load_config_file",
    "preset_config",
    "PRESETS",
    "read_truth",
    "simulate_cohort",
    "REDRAW",
    "RESCAN_SESSIONS",
    "SimulatedRescans",
    "ensure_rescans",
    "simulate_rescans",
]

SPACE = "MNI152NLin2009cSym"
_HY_STAGES = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])


# ----------------------------------------------------------------------------- cohort table
def _cumulative_loss(b: np.ndarray, params: tuple[float, float, float]) -> np.ndarray:
    """L(b) = rate (b - onset)+^2 / (2 (anchor - onset)): a rate rising linearly after onset."""
    onset, anchor, rate = params
    return np.minimum(rate * np.clip(b - onset, 0, None) ** 2 / (2 * (anchor - onset)), 0.9)


def _draw_group(group: str, n: int, cfg: SimulationConfig,
                rng: np.random.Generator) -> pd.DataFrame:
    """Demographics, severity and biological age of one group."""
    if group == "HC":
        lo, hi = cfg.hc_age_range
        p_male, severity, acc_max = cfg.hc_p_male, np.zeros(n), 0.0
    else:
        dis = cfg.ad if group == "AD" else cfg.pd
        (lo, hi), p_male, acc_max = dis.age_range, dis.p_male, dis.acceleration_max_years
        severity = rng.beta(*dis.severity_beta, size=n)
    age = np.round(rng.uniform(lo, hi, size=n), 1)
    sex = np.where(rng.random(n) < p_male, "M", "F")
    weights = np.array([s.weight for s in cfg.sites])
    site = rng.choice(len(cfg.sites), size=n, p=weights / weights.sum())
    acceleration = np.round(acc_max * severity, 4)
    healthy = rng.normal(0.0, cfg.sigma_bio, size=n)
    if group != "HC":  # keep patients' brains inside the controls' age range (see SimulationConfig)
        oldest = cfg.hc_age_range[1]
        over = age + healthy + acceleration > oldest
        while over.any():  # terminates: the config guarantees age + acceleration <= oldest
            healthy[over] = rng.normal(0.0, cfg.sigma_bio, size=int(over.sum()))
            over = age + healthy + acceleration > oldest
    deviation = np.round(healthy + acceleration, 4)
    return pd.DataFrame({
        "group": group, "age": age, "sex": sex, "site_index": site,
        "site": [cfg.sites[i].name for i in site], "latent_severity": np.round(severity, 6),
        "acceleration_years": acceleration, "deviation": deviation,
        "biological_age": np.round(age + deviation, 4)})


def _draw_scores(table: pd.DataFrame, cfg: SimulationConfig,
                 rng: np.random.Generator) -> pd.DataFrame:
    """Clinical scores from the latent severity (``n/a``, i.e. NaN, outside their group)."""
    for name, sc in cfg.scores.items():
        rows = (table["group"] == sc.group).to_numpy()
        dis = cfg.ad if sc.group == "AD" else cfg.pd
        a, b = dis.severity_beta
        mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        z = (table.loc[rows, "latent_severity"].to_numpy() - mean) / sd
        u = sc.corr * z + np.sqrt(1 - sc.corr**2) * rng.standard_normal(rows.sum())
        value = np.clip(np.round((sc.mean + sc.sd * u) / sc.step) * sc.step, sc.low, sc.high)
        if name == "hoehn_yahr":
            value = _HY_STAGES[np.abs(value[:, None] - _HY_STAGES[None, :]).argmin(axis=1)]
        col = np.full(len(table), np.nan)
        col[rows] = value
        table[name] = col
    return table


def _draw_head(table: pd.DataFrame, cfg: SimulationConfig,
               rng: np.random.Generator) -> pd.DataFrame:
    """Per-subject head size, the scale an affine registration leaves, rotation, ventricles."""
    an = cfg.anatomy
    n = len(table)
    base = np.where(table["sex"] == "M", an.male_head_scale, 1 / an.male_head_scale)
    table["head_scale"] = base * np.exp(rng.normal(0, an.head_scale_sd, size=n))
    scale = np.exp(rng.normal(0, an.registered_scale_sd, size=(n, 3)))
    rot = rng.normal(0, an.rotation_sd_deg, size=(n, 3))
    for i, ax in enumerate("xyz"):
        table[f"head_scale_{ax}"] = scale[:, i]
        table[f"rotation_{ax}_deg"] = rot[:, i]
    table["ventricle_scale"] = np.exp(rng.normal(0, an.ventricle_sd, size=n))
    # drawn last and only when on (SD > 0), so that a cohort without asymmetry (the default)
    # keeps every draw of the default simulator, the scanner's after it included
    table["ventricle_asymmetry"] = (
        rng.normal(0, an.ventricle_asymmetry_sd, size=n).clip(-0.9, 0.9)
        if an.ventricle_asymmetry_sd > 0 else np.zeros(n))
    return table


def _draw_scanner(table: pd.DataFrame, cfg: SimulationConfig,
                  rng: np.random.Generator) -> pd.DataFrame:
    """Per-subject scanner settings around the subject's site (domain randomisation)."""
    sc, n = cfg.scanner, len(table)
    sites = [cfg.sites[int(i)] for i in table["site_index"]]
    table["scan_gm"] = (np.array([s.gm for s in sites]) + rng.normal(0, sc.gm_sd, n)).clip(
        0.3, 0.95)
    table["scan_csf"] = (np.array([s.csf for s in sites]) + rng.normal(0, sc.csf_sd, n)).clip(
        0.05, 0.6)
    low, high = np.log(sc.noise_range)
    table["scan_noise"] = np.array([s.noise for s in sites]) * np.exp(rng.uniform(low, high, n))
    table["scan_bias"] = np.array([s.bias for s in sites]) * rng.uniform(*sc.bias_range, n)
    table["scan_blur_mm"] = rng.uniform(*sc.blur_fwhm_mm, n)
    table["scan_texture"] = rng.uniform(*sc.texture_range, n)
    table["scan_mask_margin_mm"] = rng.uniform(*sc.mask_margin_mm, n)
    # drawn last and only when on (SD > 0): the default keeps the earlier simulator's draws
    table["scan_gamma"] = np.exp(rng.normal(0, sc.gamma_sd, n)) if sc.gamma_sd > 0 else np.ones(n)
    return table


def _draw_rates(table: pd.DataFrame, cfg: SimulationConfig,
                rng: np.random.Generator) -> pd.DataFrame:
    """Each subject's own ageing rate factors ``rate_<process>`` (:class:`IndividualAgeing`):
    log-normal with mean 1, partly correlated through a shared whole-brain rate."""
    ind, n = cfg.individual, len(table)
    if not ind.active:  # off (the default): every rate exactly 1, nothing drawn
        for name in INDIVIDUAL_MARKERS:
            table[f"rate_{name}"] = np.ones(n)
        return table
    shared = rng.standard_normal(n)
    own = rng.standard_normal((len(INDIVIDUAL_MARKERS), n))
    for k, name in enumerate(INDIVIDUAL_MARKERS):
        lam, sd = ind.loading(name), float(getattr(ind, f"{name}_sd"))
        z = lam * shared + np.sqrt(max(1.0 - lam * lam, 0.0)) * own[k]
        table[f"rate_{name}"] = np.exp(sd * z - sd * sd / 2)
    return table


def draw_cohort(n_healthy: int, n_ad: int, n_pd: int, cfg: SimulationConfig,
                rng: np.random.Generator) -> pd.DataFrame:
    """The cohort table before images: demographics, latent variables, scores, head pose,
    scanner, and each subject's own ageing rates."""
    parts = [_draw_group(g, n, cfg, rng) for g, n in zip(GROUPS, (n_healthy, n_ad, n_pd)) if n]
    table = pd.concat(parts, ignore_index=True)
    table = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    width = max(4, len(str(len(table))))
    table.insert(0, "participant_id", [f"sub-{i + 1:0{width}d}" for i in range(len(table))])
    table = _draw_scores(table, cfg, rng)
    table = _draw_scanner(_draw_head(table, cfg, rng), cfg, rng)
    return _draw_rates(table, cfg, rng)


# ----------------------------------------------------------------------------- doses
#: Region groups with a displacement basis and GM conversion, and their ageing parameters
#: (the cortex's loss is what the whole-brain rate leaves, see :func:`_ageing_doses`).
_AGEING_OF = {"cortex": "brain", "hippocampus": "hippocampus", "entorhinal": "hippocampus",
              "thalamus": "subcortical", "putamen": "subcortical", "caudate": "subcortical",
              "temporoparietal": None, "midbrain": None}


def _integrated_rate(b: np.ndarray, knots: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Integral from age 0 to ``b`` of the piecewise-linear rate through ``knots`` (exact)."""
    ages, rates = (np.array(v, dtype=np.float64) for v in zip(*knots))
    b = np.asarray(b, dtype=np.float64)
    total = rates[0] * np.clip(np.minimum(b, ages[0]), 0, None)
    for a0, a1, r0 in zip(ages[:-1], ages[1:], rates[:-1]):
        t = np.clip(b, a0, a1)
        total = total + (t - a0) * (r0 + np.interp(t, ages, rates)) / 2
    return total + np.clip(b - ages[-1], 0, None) * rates[-1]


def brain_loss(b: np.ndarray, cfg: SimulationConfig) -> np.ndarray:
    """Fraction of brain tissue lost by a healthy brain of biological age ``b``.

    The rate is relative to the current volume, so ``1 - exp(-integral of the rate)``: its
    derivative over the remaining volume is exactly ``cfg.ageing.brain_rate``.
    """
    return 1 - np.exp(-_integrated_rate(b, cfg.ageing.brain_rate))


def _ageing_doses(b: np.ndarray, cfg: SimulationConfig,
                  volumes: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Healthy ageing of biological age ``b``: losses per region, ventricles, brain shrink.

    The whole-brain tissue loss ``brain_loss(b) * V_tissue`` is shared out: the ventricles'
    growth and the regional losses (hippocampus, entorhinal cortex, thalamus, putamen, caudate)
    take their own curves; of the rest, the share ``wm_share(b)`` is a contraction of the whole
    brain inside its mask (white and grey matter, widening sulci and the CSF rim) and the
    remainder thins the cortex (deformation and GM-to-CSF conversion).
    """
    ag = cfg.ageing
    b = np.asarray(b, dtype=np.float64)
    doses = {region: (_cumulative_loss(b, getattr(ag, key)) if key in ("hippocampus",
                                                                         "subcortical")
                      else np.zeros_like(b)) for region, key in _AGEING_OF.items()}
    young = np.clip(b - 20.0, 0, None) / 50.0
    doses["ventricle_ratio"] = 1 + ag.ventricle_gain * young**2
    budget = volumes["tissue"] * brain_loss(b, cfg)
    taken = volumes["ventricles"] * (doses["ventricle_ratio"] - 1) + sum(
        volumes[region] * doses[region] for region in _AGEING_OF if region != "cortex")
    rest = np.clip(budget - taken, 0, None)
    share = np.interp(b, *zip(*ag.wm_share))
    doses["brain_shrink"] = np.minimum(share * rest / volumes["tissue"], 0.5)
    doses["cortex"] = np.minimum((1 - share) * rest / volumes["cortex"], 0.9)
    return doses


#: The rate factor (:class:`IndividualAgeing`) of each region group's ageing loss.
_RATE_OF = {"cortex": "cortex", "hippocampus": "hippocampus", "entorhinal": "hippocampus",
            "thalamus": "subcortical", "putamen": "subcortical", "caudate": "subcortical",
            "temporoparietal": "cortex", "midbrain": "subcortical"}


def _rates(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each subject's rate factors (1 where the table has none: a table drawn before them)."""
    return {name: (table[f"rate_{name}"].to_numpy(dtype=np.float64) if f"rate_{name}" in table
                   else np.ones(len(table))) for name in INDIVIDUAL_MARKERS}


def _individual_doses(aged: Mapping[str, np.ndarray],
                      rates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The population's doses at each subject's biological age, scaled by the subject's own
    rates: each region's loss, the ventricles' growth (ratio - 1) and the whole brain's
    contraction (capped as :func:`_ageing_doses` caps them)."""
    def scaled(dose: np.ndarray, rate: np.ndarray, cap: float) -> np.ndarray:
        # a rate of exactly 1 keeps the population's dose bit for bit (the default cohort)
        return np.where(rate == 1.0, dose, np.minimum(dose * rate, cap))

    doses = {region: scaled(aged[region], rates[_RATE_OF[region]], 0.9) for region in _AGEING_OF}
    doses["ventricle_ratio"] = np.where(
        rates["ventricles"] == 1.0, aged["ventricle_ratio"],
        1 + (aged["ventricle_ratio"] - 1) * rates["ventricles"])
    doses["brain_shrink"] = scaled(aged["brain_shrink"], rates["brain"], 0.5)
    return doses


def add_doses(table: pd.DataFrame, cfg: SimulationConfig,
              anat: _anatomy.TemplateAnatomy) -> pd.DataFrame:
    """Add each subject's target volume losses, ventricle ratio, brain shrink, WMH load,
    contrast factor, whole-brain loss and TIV, and the realised biological age.

    The ageing doses are the population's at the subject's biological age scaled by the
    subject's own rates (``rate_<process>``, :class:`IndividualAgeing`); ``brain_loss`` is the
    ageing tissue loss actually applied over the tissue volume (the population's
    :func:`brain_loss` for a subject whose rates are all 1).
    """
    b = table["biological_age"].to_numpy(dtype=np.float64)
    sev = table["latent_severity"].to_numpy()
    volumes = tissue_volumes(anat)
    rates = _rates(table)
    aged = _individual_doses(_ageing_doses(b, cfg, volumes), rates)
    for region in _AGEING_OF:
        disease = np.zeros(len(table))
        for group, dis in (("AD", cfg.ad), ("PD", cfg.pd)):
            rows = (table["group"] == group).to_numpy()
            disease[rows] = dis.losses.get(region, 0.0) * sev[rows]
        table[f"loss_{region}"] = 1 - (1 - aged[region]) * (1 - disease)
    table["ventricle_ratio"] = aged["ventricle_ratio"]
    table["brain_shrink"] = aged["brain_shrink"]
    # the population's curve where every rate is 1 (bit for bit the default simulator's)
    population = np.all([rates[name] == 1.0 for name in INDIVIDUAL_MARKERS], axis=0)
    table["brain_loss"] = np.where(population, brain_loss(b, cfg),
                                   _dose_loss(aged, volumes) / volumes["tissue"])
    table["wmh_load"] = np.minimum(1.0, rates["wmh"] * cfg.ageing.wmh_max
                                   * np.exp((b - 90.0) / cfg.ageing.wmh_tau))
    table["contrast_factor"] = np.maximum(
        0.3, 1 - rates["contrast"] * cfg.ageing.contrast_decline * np.clip(b - 20.0, 0, None))
    if "head_scale" in table:
        table["tiv_cm3"] = volumes["intracranial"] * table["head_scale"].to_numpy() ** 3
    table["tissue_loss_ml"] = _tissue_loss(table, volumes)
    table["realised_biological_age"] = realised_brain_age(table, cfg, volumes)
    return table


def tissue_volumes(anat: _anatomy.TemplateAnatomy) -> dict[str, float]:
    """Template volumes (mL) the losses act on.

    GM of every loss region (the cortical loss acts on the cortex and the temporo-parietal
    cortex together, as its GM-to-CSF conversion does, see ``_anatomy._build_conversions``),
    CSF of the ventricles, all brain tissue (GM + WM, ``tissue``) and the brain mask
    (``intracranial``).
    """
    groups = _anatomy._region_masks(anat.labels[anat.box], anat.regions)
    voxel_ml = anat.resolution_mm**3 / 1000.0
    volumes = {}
    for region in _AGEING_OF:
        mask = groups[region] | (groups["temporoparietal"] if region == "cortex" else False)
        volumes[region] = float(anat.gm[mask].sum()) * voxel_ml
    volumes["ventricles"] = float(anat.csf[groups["lateral_ventricles"]].sum()) * voxel_ml
    volumes["tissue"] = float((anat.gm + anat.wm).sum()) * voxel_ml
    volumes["intracranial"] = float(anat.mask.sum()) * voxel_ml
    return volumes


def _tissue_loss(table: pd.DataFrame, volumes: Mapping[str, float]) -> np.ndarray:
    """Tissue lost (mL): GM volume times fractional loss per region, ventricular growth and
    the whole brain's contraction (template volumes: a subject's own ventricle size and head
    size are anatomy, not loss)."""
    lost = sum(volumes[region] * table[f"loss_{region}"].to_numpy() for region in _AGEING_OF)
    return (lost + volumes["ventricles"] * (table["ventricle_ratio"].to_numpy() - 1.0)
            + volumes["tissue"] * table["brain_shrink"].to_numpy())


def _dose_loss(doses: Mapping[str, np.ndarray], volumes: Mapping[str, float]) -> np.ndarray:
    """Tissue lost (mL) under ``doses`` (region losses, ventricle ratio, brain shrink)."""
    lost = sum(volumes[region] * doses[region] for region in _AGEING_OF)
    return (lost + volumes["ventricles"] * (doses["ventricle_ratio"] - 1.0)
            + volumes["tissue"] * doses["brain_shrink"])


def _healthy_tissue_loss(b: np.ndarray, cfg: SimulationConfig,
                         volumes: Mapping[str, float]) -> np.ndarray:
    """Tissue lost (mL) by the population's healthy brain of biological age ``b`` (no
    disease losses, every rate 1)."""
    return _dose_loss(_ageing_doses(np.asarray(b, dtype=np.float64), cfg, volumes), volumes)


def realised_brain_age(table: pd.DataFrame, cfg: SimulationConfig,
                       volumes: Mapping[str, float]) -> np.ndarray:
    """The age at which the population's healthy brain has lost as much tissue as each
    subject's.

    ``biological_age`` drives every ageing process, each at the subject's own rate
    (:class:`IndividualAgeing`), and a patient's regional disease losses come on top. The
    realised brain age is the age ``b*`` at which a healthy brain of the population's rates
    has lost as much tissue (:func:`_tissue_loss`, recomputed from the doses applied): older
    than ``biological_age`` for a subject who ages fast or has disease losses, younger for one
    who ages slowly. Found by bisection (1e-4 y) of the shift ``b* - biological_age``, in
    [0, 200] for a subject who has lost more (the search of the default simulator, so
    that the default cohort keeps its values) and in [-biological_age, 0] for one who has lost
    less; a
    subject whose loss equals the population's at ``biological_age`` (rates 1, no disease)
    keeps it exactly, as does one who has lost nothing.

    Parameters
    ----------
    table : DataFrame
        Rows with ``biological_age`` and the doses of :func:`add_doses`.
    cfg : SimulationConfig
        The ageing model.
    volumes : dict
        From :func:`tissue_volumes`.

    Returns
    -------
    ndarray, shape (n,)
    """
    b = table["biological_age"].to_numpy(dtype=np.float64)
    target = _tissue_loss(table, volumes)
    extra = target - _healthy_tissue_loss(b, cfg, volumes)
    todo = (np.abs(extra) > 1e-9) & (target > 1e-9)
    more = extra > 0
    low, high = np.where(more, 0.0, -b), np.where(more, 200.0, 0.0)
    for _ in range(40):  # 200 / 2**40 years: far below the 1e-4 y rounding
        mid = (low + high) / 2
        enough = _healthy_tissue_loss(b + mid, cfg, volumes) >= target
        high = np.where(todo & enough, mid, high)
        low = np.where(todo & ~enough, mid, low)
    return np.round(np.where(todo, b + high, b), 4)


def _plan_effects(row: Mapping[str, Any], share: float,
                  anat: _anatomy.TemplateAnatomy) -> tuple[dict[str, float], dict[str, float]]:
    """Flow amplitudes and GM-to-CSF conversion fractions realising a subject's losses.

    The ventricles' flow realises the ageing ratio times the subject's own ventricle size.
    """
    ratio = float(row["ventricle_ratio"]) * float(row.get("ventricle_scale", 1.0))
    amplitudes = {"ventricles": anat.bases["ventricles"].amplitude_for(ratio)}
    conversions = {}
    for region in _AGEING_OF:
        loss = float(row[f"loss_{region}"])
        basis = anat.bases[region]
        by_flow = min(1 - (1 - loss) ** share, float(basis.response[-1]))
        amplitudes[region] = basis.amplitude_for(by_flow)
        conversions[region] = 1 - (1 - loss) / (1 - by_flow)
    return amplitudes, conversions


# ----------------------------------------------------------------------------- one subject
def _scan_value(row: Mapping[str, Any], key: str, default: float) -> float:
    """A per-subject scanner setting of the cohort table (the site's value if absent)."""
    value = row.get(f"scan_{key}", default)
    return float(default if value is None or not np.isfinite(value) else value)


def _source_image(anat: _anatomy.TemplateAnatomy, row: Mapping[str, Any], site: SiteConfig,
                  conversions: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """The subject's template-space intensities on the box: tissue mixture plus texture.

    Tissue intensities and texture strength are the subject's own (``scan_*`` columns of the
    cohort table, drawn around the site's values).
    """
    factor = np.ones(anat.gm.size, dtype=np.float32)
    for name, frac in conversions.items():
        idx, w = anat.conversions[name]
        factor[idx] -= np.float32(frac) * w
    gm = anat.gm * np.clip(factor, 0, 1).reshape(anat.box_shape)
    csf = anat.csf + (anat.gm - gm) + (1 - anat.mask)  # outside the brain: CSF
    weights = rng.normal(0, 0.5, size=4).astype(np.float32)
    patchy = np.clip(1 + np.tensordot(weights, anat.wmh_patches, axes=1), 0, 2)
    wmh = np.float32(row["wmh_load"]) * anat.wmh_prior * patchy
    gm_level = _scan_value(row, "gm", site.gm) * site.wm
    csf_level = _scan_value(row, "csf", site.csf) * site.wm
    texture = np.float32(_scan_value(row, "texture", 1.0))
    mid, half = (site.wm + gm_level) / 2, (site.wm - gm_level) / 2 * row["contrast_factor"]
    mu_gm, mu_wm = np.float32(mid - half), np.float32(mid + half)
    mu_wmh = np.float32(mu_gm * 0.9)  # T1 hypointense, about as dark as grey matter
    return (mu_gm * gm + anat.wm * (mu_wm * (1 - wmh) + mu_wmh * wmh)
            + np.float32(csf_level) * csf + mu_wm * texture * anat.texture).astype(np.float32)


def _rotation(deg: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (degrees) about x, y and z."""
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_displacement(anat: _anatomy.TemplateAnatomy, spacing_mm: float, sd_mm: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement (3, n) in voxels at the support points, of SD ``sd_mm`` on a
    control grid of ``spacing_mm``.

    Drawn on a coarse control grid, smoothed there (cheap) and upsampled trilinearly with
    :func:`scipy.ndimage.zoom`, instead of smoothing full-size noise per subject.
    """
    res = anat.resolution_mm
    box = np.asarray(anat.box_shape)
    coarse = np.maximum(np.ceil((box - 1) * res / spacing_mm).astype(int) + 1, 2)
    delta = np.zeros((5, 5, 5))
    delta[2, 2, 2] = 1
    gain = np.sqrt((ndi.gaussian_filter(delta, 0.7) ** 2).sum())
    noise = rng.standard_normal((3, *coarse))
    out = np.empty((3, anat.points.shape[1]), dtype=np.float32)
    for c in range(3):
        smooth = ndi.gaussian_filter(noise[c], 0.7, mode="nearest") / gain
        full = ndi.zoom(smooth.astype(np.float32), box / coarse, order=1, output=np.float32,
                        grid_mode=False)
        out[c] = full.reshape(-1)[anat.support_flat] * (sd_mm / res)
    return out


def _shape_displacement(anat: _anatomy.TemplateAnatomy, an: AnatomyConfig,
                        rng: np.random.Generator) -> np.ndarray:
    """The subject's own brain shape: smooth random displacements at two scales (lobes and
    gyri), summed (3, n), in voxels. The fine scale is drawn after the coarse one, so that a
    configuration without it keeps the coarse draws."""
    out = _random_displacement(anat, an.control_spacing_mm, an.deformation_sd_mm, rng)
    if an.fine_deformation_sd_mm > 0:
        out += _random_displacement(anat, an.fine_control_spacing_mm,
                                    an.fine_deformation_sd_mm, rng)
    return out


def _lateral_weight(anat: _anatomy.TemplateAnatomy, pos: np.ndarray | None,
                    asymmetry: float) -> np.ndarray:
    """Factor ``1 + a tanh(x / 8 mm)`` of the ventricles' flow at its voxels (x: the lateral
    offset from the template's midline): one ventricle moves more than the other."""
    res = anat.resolution_mm
    points = anat.points if pos is None else anat.points[:, pos]
    lateral = (points[0] - anat.centre[0]) * res / 8.0
    return (1 + np.float32(asymmetry) * np.tanh(lateral)).astype(np.float32)


def _warp_coordinates(anat: _anatomy.TemplateAnatomy, row: Mapping[str, Any],
                      amplitudes: Mapping[str, float], an: AnatomyConfig,
                      rng: np.random.Generator,
                      kept: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Template coordinates sampled by each support voxel: for the brain mask, and for the image.

    The atrophy sums the flows of each process and the whole brain's contraction about its
    centre, ``(1 + k)(x - c)`` with ``(1 + k)^-3 = 1 - brain_shrink``. The first coordinates,
    where the brain mask is read, follow the contraction by the share
    ``anatomy.mask_contraction_share`` (default 0: the young brain's outline, the default
    cohort's) but never the regional flows. With share 1 (the varied preset) a contracted
    brain has a smaller mask, as a brain extraction outlines the brain it sees, while thinner
    cortex and wider sulci stay inside it: with the young brain's outline the CSF rim inside
    the mask grows with every year of contraction, and the CSF fraction rose 0.025 per decade
    against 0.011 in the 50 real IXI scans (0.012 with share 1, whose mask then lost 40 cm³
    per decade against the real 8.6: a size cue, so the preset is not the default).
    ``kept`` is the share of the contraction the image shows (``template_contraction_share``
    for a template-space image: the affine registration it stands for rescales the rest away).
    """
    scale = np.array([row["head_scale_x"], row["head_scale_y"], row["head_scale_z"]])
    rot = _rotation(np.array([row["rotation_x_deg"], row["rotation_y_deg"],
                              row["rotation_z_deg"]]))
    pull = np.linalg.inv(rot @ np.diag(scale)).astype(np.float32)  # subject -> template
    c = anat.centre[:, None]
    y_anat = c + pull @ (anat.points - c) + _shape_displacement(anat, an, rng)
    shrink = float(row.get("brain_shrink", 0.0))
    contraction = kept * ((1 - shrink) ** (-1 / 3) - 1) * (anat.points - c)
    atrophy = contraction.copy()
    asymmetry = float(row.get("ventricle_asymmetry", 0.0))
    for name, amp in amplitudes.items():
        basis = anat.bases[name]
        move = basis.displacement(amp)
        if name == "ventricles" and asymmetry:
            move = move * _lateral_weight(anat, basis.pos, asymmetry)
        atrophy[:, basis.pos] += move
    mask_at = y_anat + np.float32(an.mask_contraction_share) * (pull @ contraction)
    if an.mask_atrophy_share:  # the mask follows the regional flows too (not by default)
        mask_at = mask_at + np.float32(an.mask_atrophy_share) * (pull @ (atrophy - contraction))
    return mask_at, y_anat + pull @ atrophy


def _noise_gain(voxel_mm: tuple[float, float, float], res: float) -> float:
    """Noise SD on a grid of ``res`` mm over that in one acquired voxel: the square root of the
    number of acquired voxels a grid voxel averages (1 where the grid is finer)."""
    return float(np.sqrt(np.prod([min(v / res, 1.0) for v in voxel_mm])))


def _scanner(anat: _anatomy.TemplateAnatomy, values: np.ndarray, site: SiteConfig,
             site_beta: np.ndarray, rng: np.random.Generator,
             row: Mapping[str, Any] | None = None) -> np.ndarray:
    """Bias field, point spread and Rician noise applied to the support values.

    The bias strength, gamma, noise level and extra blur are the subject's (``scan_*`` columns of
    ``row``), else the site's. The point spread blurs axes whose acquired voxel is coarser than
    the grid, plus the extra blur; the noise SD is the site's per acquired voxel times
    :func:`_noise_gain`.
    """
    row = {} if row is None else row
    beta = (site_beta + rng.normal(0, 0.3, size=site_beta.shape)) * _scan_value(
        row, "bias", site.bias)
    values = values * np.exp(beta.astype(np.float32) @ anat.bias_basis)
    gamma = _scan_value(row, "gamma", 1.0)
    if gamma != 1.0:  # a non-linear contrast change, relative to white matter
        values = np.float32(site.wm) * (np.maximum(values, 0) / np.float32(site.wm)) ** np.float32(
            gamma)
    res = anat.resolution_mm
    blur = _scan_value(row, "blur_mm", 0.0)
    sigmas = [np.sqrt(max(v * v - res * res, 0.0) + blur * blur) / (np.sqrt(8 * np.log(2)) * res)
              for v in site.voxel_mm]
    if max(sigmas) > 0.2:
        vol = np.zeros(anat.gm.size, dtype=np.float32)
        vol[anat.support_flat] = values
        vol = vol.reshape(anat.box_shape)
        for axis, sigma in enumerate(sigmas):
            if sigma > 0.2:
                vol = ndi.gaussian_filter1d(vol, sigma, axis=axis, mode="nearest")
        values = vol.reshape(-1)[anat.support_flat]
    sigma = np.float32(_scan_value(row, "noise", site.noise) * site.wm
                       * _noise_gain(site.voxel_mm, res))
    n1 = rng.standard_normal(values.shape, dtype=np.float32)
    n2 = rng.standard_normal(values.shape, dtype=np.float32)
    return np.sqrt((values + sigma * n1) ** 2 + (sigma * n2) ** 2)


def _mask_margin(anat: _anatomy.TemplateAnatomy, row: Mapping[str, Any], cfg: SimulationConfig,
                 rng: np.random.Generator) -> np.ndarray:
    """The subject's brain-mask margin (mm) at the support points: its ``scan_mask_margin_mm``
    (the anatomy's fixed margin if absent) plus a smooth field of SD ``mask_margin_sd_mm``."""
    margin = _scan_value(row, "mask_margin_mm", cfg.anatomy.mask_margin_mm)
    basis = anat.bias_basis
    field = (rng.standard_normal(basis.shape[0]).astype(np.float32) @ basis
             / np.float32(anat.bias_basis_rms))
    return np.float32(margin) + np.float32(cfg.scanner.mask_margin_sd_mm) * field


def synthesise_subject(anat: _anatomy.TemplateAnatomy, row: Mapping[str, Any],
                       cfg: SimulationConfig, site_beta: np.ndarray,
                       seed: np.random.SeedSequence,
                       scanner_seed: np.random.SeedSequence | None = None,
                       mask_seed: np.random.SeedSequence | None = None) -> np.ndarray:
    """One subject's T1 image on the full template grid (float32, stored intensity units).

    Parameters
    ----------
    anat : TemplateAnatomy
        From :func:`brainage.data._anatomy.build_anatomy`.
    row : mapping
        The subject's row of the cohort table with doses (:func:`add_doses`).
    cfg : SimulationConfig
        Parameters.
    site_beta : ndarray, shape (9,)
        The site's bias-field pattern.
    seed : SeedSequence
        The subject's own random stream (deformation, WMH patches, bias, noise).
    scanner_seed : SeedSequence, optional
        A separate stream for the scanner's draws (bias variation, noise, mask-margin field):
        the same anatomy scanned again (:mod:`brainage.data.rescan`). None: they continue
        ``seed``'s stream (the cohort's own scans).
    mask_seed : SeedSequence, optional
        A separate stream for the brain-mask margin's variation alone. None: it continues the
        scanner's stream.
    """
    rng = np.random.default_rng(seed)
    site = cfg.sites[int(row["site_index"])]
    amplitudes, conversions = _plan_effects(row, cfg.anatomy.deformation_share, anat)
    source = _source_image(anat, row, site, conversions, rng)
    kept = 1.0 if cfg.native_space else cfg.anatomy.template_contraction_share
    y_anat, y = _warp_coordinates(anat, row, amplitudes, cfg.anatomy, rng, kept)
    values = ndi.map_coordinates(source, y, order=1, mode="nearest", output=np.float32)
    if scanner_seed is not None:  # anatomy drawn above from ``seed``, the scanner anew
        rng = np.random.default_rng(scanner_seed)
    values = _scanner(anat, values, site, site_beta, rng, row)
    outside = ndi.map_coordinates(anat.outside_mm, y_anat, order=1, mode="nearest",
                                  output=np.float32)
    mask_rng = rng if mask_seed is None else np.random.default_rng(mask_seed)
    values = values * (outside < _mask_margin(anat, row, cfg, mask_rng))
    box = np.zeros(anat.gm.size, dtype=np.float32)
    box[anat.support_flat] = values * np.float32(site.scale / site.wm)
    out = np.zeros(anat.shape, dtype=np.float32)
    out[anat.box] = box.reshape(anat.box_shape)
    return out


def _native_resample(volume: np.ndarray, anat: _anatomy.TemplateAnatomy, site: SiteConfig,
                     cfg: SimulationConfig, rng: np.random.Generator,
                     head_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample a template-space image to a native grid with a random rigid pose, at the
    subject's head size (``head_scale``, linear).

    Returns the data, its header affine (voxel to scanner mm) and the true scanner-to-template
    transform (4 x 4, mm; rigid times 1 / ``head_scale``).
    """
    res = anat.resolution_mm
    voxel = np.maximum(np.asarray(site.voxel_mm, dtype=float), res)
    fov = np.asarray(anat.shape) * res * max(head_scale, 1.0) + 20.0
    shape_ras = np.ceil(fov / voxel).astype(int)
    centre = anat.affine[:3, :3] @ ((np.asarray(anat.shape) - 1) / 2) + anat.affine[:3, 3]
    affine_ras = np.diag([*voxel, 1.0])
    affine_ras[:3, 3] = centre - voxel * (shape_ras - 1) / 2
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.orientations.axcodes2ornt(site.orientation))
    affine = affine_ras @ nib.orientations.inv_ornt_aff(ornt, shape_ras)
    shape = tuple(int(shape_ras[int(k)]) for k in ornt[:, 0].argsort())
    pose = np.eye(4)
    pose[:3, :3] = _rotation(rng.uniform(-1, 1, 3) * cfg.native_max_rotation_deg) / head_scale
    pose[:3, 3] = rng.uniform(-1, 1, 3) * cfg.native_max_shift_mm
    to_template_voxel = np.linalg.inv(anat.affine) @ pose @ affine
    data = ndi.affine_transform(volume, to_template_voxel[:3, :3], to_template_voxel[:3, 3],
                                output_shape=shape, order=1, output=np.float32)
    return data, affine, pose


def nifti_bytes(data: np.ndarray, affine: np.ndarray, dtype: Any, code: int) -> bytes:
    """Gzipped NIfTI-1 bytes with a zero gzip timestamp (same input, same bytes).

    nibabel's own ``.nii.gz`` writer stores the current time in the gzip header; serialising
    with :meth:`nibabel.Nifti1Image.to_bytes` and compressing with ``mtime=0`` avoids that.
    """
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


# ----------------------------------------------------------------------------- workers
_STATE: dict[str, Any] = {}


def _init_worker(anat: _anatomy.TemplateAnatomy, cfg: SimulationConfig, root: Path,
                 site_betas: np.ndarray) -> None:
    _STATE.update(anat=anat, cfg=cfg, root=root, site_betas=site_betas)


def _subject_job(job: tuple[dict[str, Any], np.random.SeedSequence]) -> dict[str, Any]:
    """Synthesise and write one subject (runs in a worker or in the main process)."""
    row, seed = job
    anat, cfg, root = _STATE["anat"], _STATE["cfg"], _STATE["root"]
    site_index = int(row["site_index"])
    image_seed, pose_seed = seed.spawn(2)
    volume = synthesise_subject(anat, row, cfg, _STATE["site_betas"][site_index], image_seed)
    sub = row["participant_id"]
    out = root / sub / "anat" / f"{sub}_T1w.nii.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"participant_id": sub}
    if cfg.native_space:
        volume, affine, pose = _native_resample(volume, anat, cfg.sites[site_index], cfg,
                                                np.random.default_rng(pose_seed),
                                                float(row.get("head_scale", 1.0)))
        info["native_to_template"] = pose.tolist()
        out.write_bytes(nifti_bytes(np.round(volume), affine, np.int16, code=1))
    else:
        out.write_bytes(nifti_bytes(np.round(volume), anat.affine, np.int16, code=4))
    return info


def _run_jobs(jobs: list, n_jobs: int, init_args: tuple,
              worker: Any = None) -> list[dict[str, Any]]:
    """Run subject jobs in order, on ``n_jobs`` processes (results do not depend on it);
    ``worker`` is :func:`_subject_job` (default) or :func:`_rescan_job`."""
    from tqdm.auto import tqdm

    worker = _subject_job if worker is None else worker
    if n_jobs == 1:
        _init_worker(*init_args)
        return [worker(j) for j in tqdm(jobs, desc="subjects", disable=None)]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with cf.ProcessPoolExecutor(n_jobs, mp_context=mp.get_context(method),
                                initializer=_init_worker, initargs=init_args) as pool:
        return list(tqdm(pool.map(worker, jobs, chunksize=4), total=len(jobs),
                         desc="subjects", disable=None))


# ----------------------------------------------------------------------------- outputs
_PARTICIPANT_COLUMNS = ["participant_id", "age", "sex", "site", "group", "mmse", "cdr_sb",
                        "updrs3", "hoehn_yahr"]
_TRUTH_FIRST = ["participant_id", "group", "age", "biological_age", "realised_biological_age",
                "deviation", "latent_severity", "acceleration_years"]
_PARTICIPANTS_JSON = {
    "age": {"Description": "chronological age at scan", "Units": "years"},
    "sex": {"Description": "sex", "Levels": {"M": "male", "F": "female"}},
    "site": {"Description": "scanner site (simulated)"},
    "group": {"Description": "diagnostic group",
              "Levels": {"HC": "healthy control", "AD": "Alzheimer's disease",
                         "PD": "Parkinson's disease"}},
    "mmse": {"Description": "Mini-Mental State Examination (0-30), AD only"},
    "cdr_sb": {"Description": "Clinical Dementia Rating, sum of boxes (0-18), AD only"},
    "updrs3": {"Description": "MDS-UPDRS part III motor score (0-132), PD only"},
    "hoehn_yahr": {"Description": "Hoehn and Yahr stage (1-5), PD only"},
}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _write_tsv(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.10g",
                 lineterminator="\n")


def _write_participants(root: Path, table: pd.DataFrame, seed: int, version: str) -> None:
    out = table[_PARTICIPANT_COLUMNS].copy()
    for col in ("mmse", "updrs3"):
        out[col] = out[col].astype("Int64")
    _write_tsv(root / "participants.tsv", out)
    _write_json(root / "participants.json", _PARTICIPANTS_JSON)
    _write_json(root / "dataset_description.json", {
        "Name": "brainage simulated cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "License": "CC0",
        "GeneratedBy": [{"Name": "brainage.data.simulate", "Version": version,
                         "Description": f"seed {seed}; template MNI152NLin2009cSym (nilearn)"}],
    })


def _realised_stats(table: pd.DataFrame, cfg: SimulationConfig) -> dict[str, Any]:
    gap = (table["realised_biological_age"] - table["age"]).groupby(table["group"]).mean()
    global_gap = (table["biological_age"] - table["age"]).groupby(table["group"]).mean()
    patients = table[table["group"] != "HC"]
    realised_corr = {}
    for name, sc in cfg.scores.items():
        rows = table[table["group"] == sc.group]
        ok = len(rows) > 2 and rows[name].std() > 0 and rows["latent_severity"].std() > 0
        realised_corr[name] = (float(np.corrcoef(rows["latent_severity"], rows[name])[0, 1])
                               if ok else None)
    return {"true_mean_brain_age_gap": {g: round(float(v), 4) for g, v in gap.items()},
            "true_mean_brain_age_gap_definition": "realised_biological_age - age (the age at "
            "which a healthy brain has lost as much tissue, disease losses included)",
            "mean_global_gap": {g: round(float(v), 4) for g, v in global_gap.items()},
            "patients_max_biological_age": (round(float(patients["biological_age"].max()), 4)
                                            if len(patients) else None),
            "controls_age_range": list(cfg.hc_age_range),
            "true_correlations": {
                name: {"score_group": sc.group, "with": ["latent_severity",
                                                         "acceleration_years"],
                       "configured": sc.corr, "realised_sample": realised_corr[name]}
                for name, sc in cfg.scores.items()}}


def _effect_maps(anat: _anatomy.TemplateAnatomy, cfg: SimulationConfig) -> dict[str, np.ndarray]:
    """Ground-truth effect strength per process at a reference dose (see simulation.json)."""
    maps = {}
    ref_age = {"biological_age": 80.0, "latent_severity": 0.0, "group": "HC"}
    for process, row in (("ageing", ref_age),
                         ("ad", {**ref_age, "latent_severity": 1.0, "group": "AD"}),
                         ("pd", {**ref_age, "latent_severity": 1.0, "group": "PD"})):
        t = add_doses(pd.DataFrame([row]), cfg, anat).iloc[0]
        if process != "ageing":  # disease alone: remove the ageing part of each loss
            base = add_doses(pd.DataFrame([ref_age]), cfg, anat).iloc[0]
            for region in _AGEING_OF:
                key = f"loss_{region}"
                t[key] = 1 - (1 - t[key]) / (1 - base[key])
            t["ventricle_ratio"] = 1.0
            t["brain_shrink"] = 0.0
        amps, conv = _plan_effects(t, cfg.anatomy.deformation_share, anat)
        wmh = float(t["wmh_load"]) if process == "ageing" else 0.0
        shrink = (1 - float(t["brain_shrink"])) ** (-1 / 3) - 1
        maps[process] = _anatomy.effect_strength(anat, amps, conv, wmh, shrink)
    return maps


def _write_truth(root: Path, table: pd.DataFrame, infos: list[dict[str, Any]],
                 anat: _anatomy.TemplateAnatomy, meta: dict[str, Any],
                 cfg: SimulationConfig) -> None:
    gt = root / "derivatives" / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    _write_json(gt / "dataset_description.json", {
        "Name": "ground truth of the brainage simulated cohort", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brainage.data.simulate", "Version": meta["version"]}]})
    rest = [c for c in table.columns if c not in _TRUTH_FIRST + _PARTICIPANT_COLUMNS]
    _write_tsv(gt / "participants_truth.tsv", table[_TRUTH_FIRST + ["site"] + rest])
    if cfg.native_space:
        xfm = gt / "transforms"
        xfm.mkdir(exist_ok=True)
        for info in infos:
            np.savetxt(xfm / f"{info['participant_id']}_from-native_to-{SPACE}_affine.txt",
                       np.asarray(info["native_to_template"]), fmt="%.8f")
    _write_json(gt / "simulation.json", meta)
    (gt / "regions.nii.gz").write_bytes(nifti_bytes(anat.labels, anat.affine, np.int16, 4))
    regions = pd.DataFrame(anat.regions)[["index", "name", "effect", "effects", "x_mm",
                                          "y_mm", "z_mm", "volume_ml"]]
    _write_tsv(gt / "regions.tsv", regions)
    for process, data in _effect_maps(anat, cfg).items():
        (gt / f"{process}_effect.nii.gz").write_bytes(
            nifti_bytes(data, anat.affine, np.float32, 4))


# ----------------------------------------------------------------------------- public API
@dataclass(frozen=True)
class SimulatedCohort:
    """What :func:`simulate_cohort` wrote.

    Parameters
    ----------
    root : Path
        The BIDS dataset.
    participants : DataFrame
        participants.tsv as written (NaN where "n/a").
    truth : DataFrame
        derivatives/ground_truth/participants_truth.tsv.
    """

    root: Path
    participants: pd.DataFrame
    truth: pd.DataFrame


def _check_arguments(counts: Mapping[str, Any], seed: Any, resolution_mm: Any,
                     n_jobs: Any) -> None:
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(n).__name__} {n!r}")
        check_setting(n >= 0, name, "a count >= 0", n)
    check_setting(sum(counts.values()) > 0, "n_healthy + n_ad + n_pd", "> 0 subjects",
                  sum(counts.values()))
    check_setting(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0,
                  "seed", "an int >= 0", seed)
    check_setting(isinstance(resolution_mm, (int, float)) and 1 <= resolution_mm <= 8,
                  "resolution_mm", "a voxel size in [1, 8] mm", resolution_mm)
    check_setting(isinstance(n_jobs, int) and n_jobs >= 1, "n_jobs", "an int >= 1", n_jobs)


def _prepare_root(out_dir: str | Path, overwrite: bool) -> Path:
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"out_dir {root} exists and is not empty; pass overwrite=True "
                                  "(CLI: --overwrite) to replace it")
        if not (root / "dataset_description.json").exists():
            raise FileExistsError(f"out_dir {root} is not empty and holds no "
                                  "dataset_description.json: refusing to delete it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _metadata(table: pd.DataFrame, cfg: SimulationConfig, anat: _anatomy.TemplateAnatomy,
              seed: int, resolution_mm: float, version: str) -> dict[str, Any]:
    """Content of simulation.json: parameters, seed, truths and calibration tables."""
    counts = table["group"].value_counts()
    return {"version": version, "seed": seed, "resolution_mm": resolution_mm,
            "space": "native" if cfg.native_space else SPACE, "template_space": SPACE,
            "grid": {"shape": list(anat.shape), "affine": anat.affine.tolist()},
            "counts": {g: int(counts.get(g, 0)) for g in GROUPS},
            **_realised_stats(table, cfg),
            "effect_maps": {"reference": "ageing: biological age 80 vs none; ad, pd: latent "
                            "severity 1, disease part only", "value": "|log det J| + GM "
                            "fraction converted to CSF (+ WMH load for ageing)"},
            "calibration": {n: {"amplitude_mm": b.amplitudes.round(4).tolist(),
                                "response": b.response.round(5).tolist(), "kind": b.kind}
                            for n, b in anat.bases.items()},
            "config": config_to_dict(cfg)}


def simulate_cohort(out_dir: str | Path, *, n_healthy: int = 100, n_ad: int = 0,
                    n_pd: int = 0, seed: int = 0, resolution_mm: float = 2,
                    config: SimulationConfig | None = None, n_jobs: int = 1,
                    overwrite: bool = False) -> SimulatedCohort:
    """Simulate a cohort and write it as a BIDS dataset with its ground truth.

    Parameters
    ----------
    out_dir : str or Path
        Dataset folder (created; must be empty unless ``overwrite``).
    n_healthy, n_ad, n_pd : int, default=100, 0, 0
        Subjects per group.
    seed : int, default=0
        Seed of everything: the same seed gives byte-identical files, whatever ``n_jobs``.
    resolution_mm : float, default=2
        Template grid (1 and 2 mm: nilearn's MNI152 grids; others resampled from 1 mm).
    config : SimulationConfig, optional
        Model parameters (defaults: :class:`SimulationConfig`).
    n_jobs : int, default=1
        Worker processes.
    overwrite : bool, default=False
        Replace an existing dataset in ``out_dir``.

    Returns
    -------
    SimulatedCohort
        The root folder and the participants and ground-truth tables.
    """
    counts = {"n_healthy": n_healthy, "n_ad": n_ad, "n_pd": n_pd}
    _check_arguments(counts, seed, resolution_mm, n_jobs)
    cfg = config if config is not None else SimulationConfig()
    if not isinstance(cfg, SimulationConfig):
        raise TypeError(f"config must be a SimulationConfig, got {type(cfg).__name__}")
    root = _prepare_root(out_dir, overwrite)

    cohort_seed, site_seed, subject_root = np.random.SeedSequence(seed).spawn(3)
    anat = _anatomy.build_anatomy(float(resolution_mm))
    table = draw_cohort(n_healthy, n_ad, n_pd, cfg, np.random.default_rng(cohort_seed))
    table = add_doses(table, cfg, anat)
    site_betas = np.random.default_rng(site_seed).normal(size=(len(cfg.sites), 9))
    jobs = list(zip(table.to_dict("records"), subject_root.spawn(len(table))))
    logger.info("simulating %d subjects at %g mm into %s", len(table), resolution_mm, root)
    infos = _run_jobs(jobs, n_jobs, (anat, cfg, root, site_betas))
    meta = _metadata(table, cfg, anat, seed, float(resolution_mm), VERSION)
    _write_participants(root, table, seed, VERSION)
    _write_truth(root, table, infos, anat, meta, cfg)
    participants = pd.read_csv(root / "participants.tsv", sep="\t", na_values="n/a")
    truth = pd.read_csv(root / "derivatives" / "ground_truth" / "participants_truth.tsv",
                        sep="\t", na_values="n/a")
    return SimulatedCohort(root, participants, truth)


def read_truth(root: str | Path) -> dict[str, Any]:
    """The ground-truth record (``derivatives/ground_truth/simulation.json``) of a cohort."""
    path = Path(root) / "derivatives" / "ground_truth" / "simulation.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a simulated cohort")
    return json.loads(path.read_text(encoding="utf-8"))


def ensure_cohort(out_dir: str | Path, *, n_healthy: int = 100, n_ad: int = 0, n_pd: int = 0,
                  seed: int = 0, resolution_mm: float = 2, config: SimulationConfig | None = None,
                  n_jobs: int = 1) -> SimulatedCohort:
    """Reuse the cohort in ``out_dir`` if it was simulated with these settings, else simulate it.

    The settings recorded in ``simulation.json`` (counts, seed, resolution, model parameters
    and package version) are compared with the requested ones; any difference regenerates
    the whole cohort, so a changed parameter never mixes old and new subjects.

    Parameters
    ----------
    out_dir, n_healthy, n_ad, n_pd, seed, resolution_mm, config, n_jobs
        As for :func:`simulate_cohort`.
    """

    root = Path(out_dir)
    cfg = config if config is not None else SimulationConfig()
    wanted = {"version": VERSION, "seed": seed, "resolution_mm": float(resolution_mm),
              "counts": {"HC": n_healthy, "AD": n_ad, "PD": n_pd}, "config": config_to_dict(cfg)}
    try:
        meta = read_truth(root)
    except (FileNotFoundError, json.JSONDecodeError):
        meta = None
    if meta is not None and json.loads(json.dumps({k: meta.get(k) for k in wanted})) == \
            json.loads(json.dumps(wanted)):
        logger.info("reusing the simulated cohort in %s (same settings)", root)
        participants = pd.read_csv(root / "participants.tsv", sep="\t", na_values="n/a")
        truth = pd.read_csv(root / "derivatives" / "ground_truth" / "participants_truth.tsv",
                            sep="\t", na_values="n/a")
        return SimulatedCohort(root, participants, truth)
    return simulate_cohort(root, n_healthy=n_healthy, n_ad=n_ad, n_pd=n_pd, seed=seed,
                           resolution_mm=resolution_mm, config=cfg, n_jobs=n_jobs,
                           overwrite=True)


# ----------------------------------------------------------------------------- rescans
#: Rescan sessions: ``repeat`` scans the subject again at its own site (a repeat session:
#: new head pose, bias field, noise and brain-mask variation; the site's protocol and the
#: subject's contrast, noise level, blur, texture and mean mask margin kept); ``travel`` scans
#: it at another site (a travelling subject: every scanner setting drawn anew around that
#: site's, as for a new subject there).
RESCAN_SESSIONS = ("repeat", "travel")
#: What a ``repeat`` rescan draws anew (all by default): ``pose`` (rotation and residual
#: scale), ``scanner`` (bias field, noise and the mask margin's variation), ``mask`` (the mask
#: margin's variation alone). Fewer of them isolate what limits the repeatability.
REDRAW = ("pose", "scanner", "mask")
_POSE_COLUMNS = [f"{k}_{ax}" for k in ("head_scale",) for ax in "xyz"] + [
    f"rotation_{ax}_deg" for ax in "xyz"]
_RESCAN_TAG = 0x5E55  # spawn-key prefix of the rescans' streams, apart from the cohort's
RESCAN_FILE = "rescans.json"
_RESCAN_FIRST = ["participant_id", "session", "group", "age", "biological_age",
                 "realised_biological_age", "site", "original_site"]


@dataclass(frozen=True)
class SimulatedRescans:
    """What :func:`simulate_rescans` wrote.

    Parameters
    ----------
    root : Path
        The rescans' BIDS dataset (``sub-X/ses-<session>/anat/sub-X_ses-<session>_T1w.nii.gz``).
    truth : DataFrame
        ``derivatives/ground_truth/rescans_truth.tsv``: one row per rescan, the subject's
        truth row with the rescan's own site, pose and scanner columns.
    """

    root: Path
    truth: pd.DataFrame


def _cohort_table(cohort_root: Path) -> tuple[pd.DataFrame, SimulationConfig, dict[str, Any]]:
    """The cohort's table as :func:`simulate_cohort` drew it (exact floats, not the TSV's
    rounded ones), redrawn from ``simulation.json``'s seed, counts and configuration and
    checked against ``participants_truth.tsv``."""
    meta = read_truth(cohort_root)
    cfg = config_from_dict(meta["config"])
    counts = meta["counts"]
    cohort_seed = np.random.SeedSequence(int(meta["seed"])).spawn(3)[0]
    table = draw_cohort(int(counts["HC"]), int(counts["AD"]), int(counts["PD"]), cfg,
                        np.random.default_rng(cohort_seed))
    written = pd.read_csv(cohort_root / "derivatives" / "ground_truth" / "participants_truth.tsv",
                          sep="\t", na_values="n/a")
    same = (len(written) == len(table)
            and (written["participant_id"].to_numpy() == table["participant_id"].to_numpy()).all()
            and np.allclose(written["biological_age"], table["biological_age"], atol=1e-3))
    if not same:
        raise SimulationConfigError(
            f"{cohort_root}: participants_truth.tsv does not match the cohort its "
            "simulation.json describes (edited, or simulated by another version); simulate the "
            "cohort again before its rescans")
    return table, cfg, meta


def _check_rescan_request(table: pd.DataFrame, participants: Any, sessions: Any,
                          cfg: SimulationConfig, cohort_root: Path) -> tuple[list[str], list[str]]:
    if isinstance(participants, str) or not all(isinstance(p, str) for p in participants):
        raise TypeError(f"participants must be a sequence of participant ids (str), got "
                        f"{participants!r}")
    participants = list(dict.fromkeys(participants))
    known = table["participant_id"].tolist()
    unknown = [p for p in participants if p not in set(known)]
    if unknown or not participants:
        raise SimulationConfigError(
            f"participants must be ids of the cohort in {cohort_root}, got "
            f"{unknown or participants!r}{closest_hint(unknown[0], known) if unknown else ''}")
    if isinstance(sessions, str):
        sessions = [sessions]
    sessions = list(dict.fromkeys(sessions))
    for name in sessions:
        if name not in RESCAN_SESSIONS:
            raise SimulationConfigError(f"rescan session must be one of {RESCAN_SESSIONS}, got "
                                        f"{name!r}{closest_hint(str(name), RESCAN_SESSIONS)}")
    check_setting(len(sessions) > 0, "sessions", f"one or more of {RESCAN_SESSIONS}", sessions)
    if "travel" in sessions and len(cfg.sites) < 2:
        raise SimulationConfigError(f"{cohort_root}: a 'travel' rescan needs another site; "
                                    "the cohort was simulated with one")
    return participants, sessions


def _rescan_row(row: Mapping[str, Any], session: str, cfg: SimulationConfig,
                rng: np.random.Generator, redraw: Sequence[str] = REDRAW) -> dict[str, Any]:
    """The subject's truth row with a rescan's draws: a new head pose (the rotation and the
    scale an affine registration leaves), and a new bias strength (``repeat``) or a new site
    with every scanner setting drawn around it (``travel``)."""
    an, sc = cfg.anatomy, cfg.scanner
    new = dict(row)
    new["session"] = session
    new["original_site"] = row["site"]
    scale = np.exp(rng.normal(0, an.registered_scale_sd, size=3))
    rot = rng.normal(0, an.rotation_sd_deg, size=3)
    bias = cfg.sites[int(row["site_index"])].bias * rng.uniform(*sc.bias_range)
    if session == "repeat" and "pose" not in redraw:
        return new | ({"scan_bias": bias} if "scanner" in redraw else {})
    for i, ax in enumerate("xyz"):
        new[f"head_scale_{ax}"] = float(scale[i])
        new[f"rotation_{ax}_deg"] = float(rot[i])
    if session == "repeat":
        return new | ({"scan_bias": bias} if "scanner" in redraw else {})
    others = [i for i in range(len(cfg.sites)) if i != int(row["site_index"])]
    weights = np.array([cfg.sites[i].weight for i in others])
    site_index = int(others[rng.choice(len(others), p=weights / weights.sum())])
    drawn = _draw_scanner(pd.DataFrame({"site_index": [site_index]}), cfg, rng)
    new.update({k: float(v) for k, v in drawn.iloc[0].items() if k.startswith("scan_")})
    new["site_index"], new["site"] = site_index, cfg.sites[site_index].name
    return new


def _rescan_seeds(seed: int, subject: int, session: str) -> list[np.random.SeedSequence]:
    """Row draws, scanner and native-pose streams of one rescan: fixed by the seed, the
    subject's position in the cohort and the session, whichever other rescans are made."""
    key = (_RESCAN_TAG, subject, RESCAN_SESSIONS.index(session))
    return np.random.SeedSequence(seed, spawn_key=key).spawn(3)


def _rescan_job(job: tuple[Any, ...]) -> dict[str, Any]:
    """Synthesise and write one rescan: the subject's anatomy stream, a new scanner stream
    (or the original's, with a new mask stream, or none new: see :data:`REDRAW`)."""
    row, image_seed, scanner_seed, pose_seed, mask_seed = job
    anat, cfg, root = _STATE["anat"], _STATE["cfg"], _STATE["root"]
    site_index = int(row["site_index"])
    volume = synthesise_subject(anat, row, cfg, _STATE["site_betas"][site_index], image_seed,
                                scanner_seed=scanner_seed, mask_seed=mask_seed)
    sub, ses = row["participant_id"], f"ses-{row['session']}"
    out = root / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.native_space:
        volume, affine, _ = _native_resample(volume, anat, cfg.sites[site_index], cfg,
                                             np.random.default_rng(pose_seed),
                                             float(row.get("head_scale", 1.0)))
        out.write_bytes(nifti_bytes(np.round(volume), affine, np.int16, code=1))
    else:
        out.write_bytes(nifti_bytes(np.round(volume), anat.affine, np.int16, code=4))
    return {"participant_id": sub, "session": row["session"]}


def _rescan_settings(cohort_root: Path, meta: Mapping[str, Any], participants: list[str],
                     sessions: list[str], seed: int,
                     redraw: Sequence[str] = REDRAW) -> dict[str, Any]:

    cohort_meta = cohort_root / "derivatives" / "ground_truth" / "simulation.json"
    return {"version": VERSION, "seed": seed, "sessions": sessions,
            "repeat_redraws": [r for r in REDRAW if r in redraw],
            "participants": participants, "cohort": str(cohort_root.resolve()),
            "cohort_seed": meta["seed"],
            "cohort_simulation_sha256": sha256_file(cohort_meta)}


def simulate_rescans(cohort_root: str | Path, out_dir: str | Path, *,
                     participants: Any, sessions: Any = RESCAN_SESSIONS, seed: int = 0,
                     n_jobs: int = 1, overwrite: bool = False,
                     redraw: Sequence[str] = REDRAW) -> SimulatedRescans:
    """Scan simulated subjects again: same anatomy, ages and disease, new scanner draws.

    Each rescan keeps the subject's truth row (anatomy, biological age, disease, head size,
    own ventricle size, random displacement and WMH patches: the cohort's own random stream
    for them) and draws anew what a new session changes (see :data:`RESCAN_SESSIONS`): the
    head pose, the bias field, the noise and the brain-mask margin's variation, and for a
    ``travel`` rescan the site with every scanner setting of the subject. The cohort's files
    are only read; the rescans go to their own BIDS dataset ``out_dir``.

    Parameters
    ----------
    cohort_root : str or Path
        A cohort written by :func:`simulate_cohort`.
    out_dir : str or Path
        The rescans' BIDS folder (created; must be empty unless ``overwrite``; never the
        cohort's folder or inside it).
    participants : sequence of str
        Participant ids of the cohort to rescan.
    sessions : str or sequence of str, default=("repeat", "travel")
        Which rescans each participant gets.
    seed : int, default=0
        Seed of the rescans' draws: the same seed gives byte-identical rescans, whatever
        ``n_jobs`` or which other participants are rescanned.
    n_jobs : int, default=1
        Worker processes.
    overwrite : bool, default=False
        Replace an existing rescans dataset in ``out_dir``.
    redraw : sequence of str, default=("pose", "scanner", "mask")
        What a ``repeat`` rescan draws anew (:data:`REDRAW`); fewer isolate one source of
        disagreement (a ``travel`` rescan draws everything).

    Returns
    -------
    SimulatedRescans

    Raises
    ------
    SimulationConfigError
        An unknown participant or session, a ``travel`` rescan of a one-site cohort, an
        ``out_dir`` inside the cohort, or a cohort whose truth table its settings do not give.

    References
    ----------
    .. [1] Dörfel R.P. et al. (2023). Prediction of brain age using structural magnetic
       resonance imaging: a comparison of accuracy and test-retest reliability of publicly
       available software packages. Hum Brain Mapp 44(17), 6139-6148.
    """
    cohort_root = Path(cohort_root)
    check_setting(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0,
                  "seed", "an int >= 0", seed)
    check_setting(isinstance(n_jobs, int) and n_jobs >= 1, "n_jobs", "an int >= 1", n_jobs)
    out = Path(out_dir).resolve()
    if out == cohort_root.resolve() or cohort_root.resolve() in out.parents:
        raise SimulationConfigError(f"out_dir {out_dir} is the cohort's folder or inside it: "
                                    "rescans go to their own dataset, the cohort is never "
                                    "written")
    table, cfg, meta = _cohort_table(cohort_root)
    participants, sessions = _check_rescan_request(table, participants, sessions, cfg,
                                                   cohort_root)
    if isinstance(redraw, str) or not set(redraw) <= set(REDRAW):
        raise SimulationConfigError(f"redraw must be a sequence of {REDRAW}, got {redraw!r}")
    root = _prepare_root(out_dir, overwrite)
    anat = _anatomy.build_anatomy(float(meta["resolution_mm"]))
    table = add_doses(table, cfg, anat)
    _, site_seed, subject_root = np.random.SeedSequence(int(meta["seed"])).spawn(3)
    site_betas = np.random.default_rng(site_seed).normal(size=(len(cfg.sites), 9))
    subject_seeds = subject_root.spawn(len(table))
    position = {pid: i for i, pid in enumerate(table["participant_id"])}
    jobs, rows = [], []
    for pid in participants:
        i = position[pid]
        image_seed, original_pose = subject_seeds[i].spawn(2)
        for session in sessions:
            draws, scanner_seed, pose_seed = _rescan_seeds(int(seed), i, session)
            row = _rescan_row(table.iloc[i].to_dict(), session, cfg,
                              np.random.default_rng(draws), redraw)
            mask_seed = None
            if session == "repeat":
                pose_seed = pose_seed if "pose" in redraw else original_pose
                if "scanner" not in redraw:
                    mask_seed = scanner_seed.spawn(1)[0] if "mask" in redraw else None
                    scanner_seed = None
            jobs.append((row, image_seed, scanner_seed, pose_seed, mask_seed))
            rows.append(row)
    logger.info("simulating %d rescans of %d subjects into %s", len(jobs), len(participants),
                root)
    _run_jobs(jobs, n_jobs, (anat, cfg, root, site_betas), worker=_rescan_job)
    truth = pd.DataFrame(rows)
    truth = truth[_RESCAN_FIRST + [c for c in truth.columns if c not in _RESCAN_FIRST]]
    _write_rescan_dataset(root, truth, _rescan_settings(cohort_root, meta, participants,
                                                        sessions, int(seed), redraw))
    return SimulatedRescans(root, pd.read_csv(
        root / "derivatives" / "ground_truth" / "rescans_truth.tsv", sep="\t", na_values="n/a"))


def _write_rescan_dataset(root: Path, truth: pd.DataFrame, settings: dict[str, Any]) -> None:
    """participants.tsv (ages for prediction), sessions.tsv per subject (site of each
    session), the truth table and the settings."""
    people = truth.drop_duplicates("participant_id")[["participant_id", "age", "sex", "group"]]
    _write_tsv(root / "participants.tsv", people)
    _write_json(root / "participants.json", {k: _PARTICIPANTS_JSON[k]
                                             for k in ("age", "sex", "group")})
    for pid, rows in truth.groupby("participant_id", sort=False):
        sessions = pd.DataFrame({"session_id": "ses-" + rows["session"], "site": rows["site"]})
        _write_tsv(root / str(pid) / f"{pid}_sessions.tsv", sessions)
    _write_json(root / "dataset_description.json", {
        "Name": "brainage simulated rescans", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "License": "CC0",
        "GeneratedBy": [{"Name": "brainage.data.simulate", "Version": settings["version"],
                         "Description": f"simulate_rescans, seed {settings['seed']}; rescans of "
                                        f"the cohort simulated with seed "
                                        f"{settings['cohort_seed']}"}]})
    gt = root / "derivatives" / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    _write_tsv(gt / "rescans_truth.tsv", truth)
    _write_json(gt / RESCAN_FILE, settings)


def ensure_rescans(cohort_root: str | Path, out_dir: str | Path, *, participants: Any,
                   sessions: Any = RESCAN_SESSIONS, seed: int = 0, n_jobs: int = 1,
                   redraw: Sequence[str] = REDRAW) -> SimulatedRescans:
    """Reuse the rescans in ``out_dir`` if they were made with these settings from this
    cohort (same ``simulation.json``), else simulate them (:func:`simulate_rescans`)."""
    root = Path(out_dir)
    path = root / "derivatives" / "ground_truth" / RESCAN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            _, _, meta = _cohort_table(Path(cohort_root))
            wanted = _rescan_settings(Path(cohort_root), meta, list(dict.fromkeys(participants)),
                                      [sessions] if isinstance(sessions, str)
                                      else list(dict.fromkeys(sessions)), int(seed), redraw)
        except (json.JSONDecodeError, FileNotFoundError, SimulationConfigError):
            old, wanted = None, {}
        if old == wanted:
            logger.info("reusing the simulated rescans in %s (same settings)", root)
            return SimulatedRescans(root, pd.read_csv(
                root / "derivatives" / "ground_truth" / "rescans_truth.tsv", sep="\t",
                na_values="n/a"))
    return simulate_rescans(cohort_root, out_dir, participants=participants, sessions=sessions,
                            seed=seed, n_jobs=n_jobs, overwrite=True, redraw=redraw)
