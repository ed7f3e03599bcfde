"""Configuration of the simulator: the settings of :mod:`brainage.data.simulate`, apart from
the synthesis that uses them.

Eight frozen dataclasses (:class:`SimulationConfig` and the groups it nests: sites, ageing,
individual ageing, disease, scores, individual anatomy, scanner randomisation), each checking
its values when built, and their round trip to plain values (:func:`config_from_dict`,
:func:`config_to_dict`) and files (:func:`load_config_file`). What each setting means in the
model, with its sources, is in the docstring of :mod:`brainage.data.simulate`, which
re-exports every public name here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainage._utils import closest_hint
from brainage.exceptions import BrainageError

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
    "SimulationConfig",
    "SimulationConfigError",
    "SiteConfig",
    "check_setting",
    "config_from_dict",
    "config_to_dict",
    "varied_config",
    "preset_config",
    "PRESETS",
    "load_config_file",
]


class SimulationConfigError(BrainageError, ValueError):
    """A simulation parameter is out of range or unknown."""


def check_setting(ok: bool, name: str, allowed: str, given: Any) -> None:
    """Raise :class:`SimulationConfigError` naming the setting, what is allowed and what was
    given, unless ``ok``."""
    if not ok:
        raise SimulationConfigError(f"{name} must be {allowed}, got {given!r}")


def _check_range(name: str, rng: tuple[float, float]) -> None:
    check_setting(len(rng) == 2 and 0 <= rng[0] < rng[1] <= 120, name,
                  "a (low, high) pair of ages with 0 <= low < high <= 120", rng)


@dataclass(frozen=True)
class SiteConfig:
    """One scanner site.

    Parameters
    ----------
    name : str
        Site label written to participants.tsv.
    gm, wm, csf : float, default=0.74, 1.0, 0.35
        Tissue intensities relative to white matter.
    scale : float, default=1000
        Stored intensity of white matter.
    noise : float, default=0.03
        Rician noise SD as a fraction of the WM intensity, in one acquired voxel
        (``voxel_mm``); a coarser grid averages it down (:func:`_noise_gain`).
    bias : float, default=0.04
        SD of the log bias field's polynomial coefficients: the bias left after a bias-field
        correction (the simulated scans, delivered in template space, get no N4).
    voxel_mm : tuple of float, default=(1, 1, 1)
        Acquired voxel size: a Gaussian point spread blurs axes coarser than the output grid;
        native-space output uses it (or the output resolution, if coarser) as voxel size.
    orientation : str, default="RAS"
        Axis codes of native-space output.
    weight : float, default=1
        Relative share of subjects scanned here.
    """

    name: str
    gm: float = 0.74
    wm: float = 1.0
    csf: float = 0.35
    scale: float = 1000.0
    noise: float = 0.03
    bias: float = 0.04
    voxel_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    weight: float = 1.0

    def __post_init__(self) -> None:
        p = f"site {self.name!r}"
        check_setting(isinstance(self.name, str) and self.name.isalnum(), "site name",
                      "a non-empty alphanumeric string", self.name)
        for key in ("gm", "wm", "csf", "scale", "weight"):
            check_setting(getattr(self, key) > 0, f"{p}: {key}", "> 0", getattr(self, key))
        check_setting(0 <= self.noise <= 0.5, f"{p}: noise", "in [0, 0.5]", self.noise)
        check_setting(0 <= self.bias <= 1, f"{p}: bias", "in [0, 1]", self.bias)
        check_setting(len(self.voxel_mm) == 3 and all(0 < v <= 8 for v in self.voxel_mm),
                      f"{p}: voxel_mm", "three sizes in (0, 8] mm", self.voxel_mm)
        codes = self.orientation
        valid = (isinstance(codes, str) and len(codes) == 3
                 and sorted(_axis(c) for c in codes) == [0, 1, 2])
        check_setting(valid, f"{p}: orientation", "three axis codes such as 'RAS' or 'LPI'", codes)


def _axis(code: str) -> int:
    return {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(code, -1)


DEFAULT_SITES = (
    SiteConfig("siteA", gm=0.74, csf=0.35, scale=900.0, noise=0.03, bias=0.04,
                      voxel_mm=(1.0, 1.0, 1.0), orientation="RAS"),
    SiteConfig("siteB", gm=0.76, csf=0.38, scale=1100.0, noise=0.035, bias=0.05,
                      voxel_mm=(1.2, 1.2, 1.2), orientation="LPS"),
    SiteConfig("siteC", gm=0.72, csf=0.32, scale=700.0, noise=0.03, bias=0.035,
                      voxel_mm=(0.9, 0.9, 3.0), orientation="PIR"),
)


def _knots(value: Any) -> tuple[tuple[float, float], ...]:
    """``((age, value), ...)`` as a tuple of float pairs (JSON/YAML gives lists)."""
    return tuple((float(a), float(v)) for a, v in value)


def _check_knots(name: str, knots: Any, high: float) -> None:
    ok = (len(knots) >= 2 and all(len(k) == 2 for k in knots)
          and all(0 <= k[0] <= 120 and 0 <= k[1] <= high for k in knots)
          and all(a[0] < b[0] for a, b in zip(knots, knots[1:])))
    check_setting(ok, name, f"at least two (age, value) pairs with increasing ages in [0, 120] and "
           f"values in [0, {high:g}]", knots)


@dataclass(frozen=True)
class AgeingConfig:
    """Dose-response of healthy ageing in biological age (see module docstring).

    Parameters
    ----------
    brain_rate : tuple of (age, rate) pairs
        Whole-brain tissue (grey plus white matter) volume loss per year, as a fraction of the
        current volume, at these ages (linear between them, constant beyond the last; the first
        pair's rate before it). Default 0 at 18.3, 0.2 %/y at 35, 0.5 %/y at 60 and 0.6 %/y at
        100 (Hedman 2012, 56 longitudinal studies). Issue 28 keeps these literature rates: the
        CSF fraction inside the brain mask that rose more than twice as fast with age as in real
        scans came from the brain mask, which kept the young brain's outline while the brain
        contracted (a brain extraction outlines the brain it sees), not from the rates.
    wm_share : tuple of (age, share) pairs
        Share of the parenchymal loss (outside the ventricles and the regions below) carried by
        a contraction of the whole brain, which removes white matter with grey (the rest thins
        the cortex): none before 40, half by 70 (white matter grows into middle age and
        declines late; Walhovd 2005, Fjell 2013).
    hippocampus, subcortical : tuple of float
        ``(onset_years, anchor_age, rate_per_year_at_anchor)`` of the cumulative volume loss
        of hippocampus and entorhinal cortex; thalamus, putamen and caudate.
    ventricle_gain : float, default=1.0
        Ventricular volume ratio at 70 minus 1 (ratio 1 + gain ((b - 20)+ / 50)^2).
    contrast_decline : float, default=0.003
        Fractional loss of GM/WM contrast per year after 20.
    wmh_max, wmh_tau : float, default=0.6, 10
        Periventricular WM hypointensity at b = 90 and its e-folding time (years).
    """

    brain_rate: tuple[tuple[float, float], ...] = ((18.3, 0.0), (60.0, 0.005), (100.0, 0.006))
    wm_share: tuple[tuple[float, float], ...] = ((40.0, 0.0), (70.0, 0.5))
    hippocampus: tuple[float, float, float] = (40.0, 75.0, 0.010)
    subcortical: tuple[float, float, float] = (20.0, 60.0, 0.003)
    ventricle_gain: float = 1.0
    contrast_decline: float = 0.003
    wmh_max: float = 0.6
    wmh_tau: float = 10.0

    def __post_init__(self) -> None:
        for key, high in (("brain_rate", 0.05), ("wm_share", 1.0)):
            knots = getattr(self, key)
            check_setting(isinstance(knots, (list, tuple)), f"ageing.{key}", "(age, value) pairs",
                   knots)
            _check_knots(f"ageing.{key}", knots, high)
            object.__setattr__(self, key, _knots(knots))
        for key in ("hippocampus", "subcortical"):
            onset, anchor, rate = getattr(self, key)
            check_setting(0 <= onset < anchor <= 120 and 0 <= rate < 0.1, f"ageing.{key}",
                   "(onset, anchor, rate) with 0 <= onset < anchor <= 120, 0 <= rate < 0.1",
                   getattr(self, key))
        check_setting(0 <= self.ventricle_gain <= 3, "ageing.ventricle_gain", "in [0, 3]",
                      self.ventricle_gain)
        check_setting(0 <= self.contrast_decline <= 0.01, "ageing.contrast_decline", "in [0, 0.01]",
                      self.contrast_decline)
        check_setting(0 <= self.wmh_max <= 1, "ageing.wmh_max", "in [0, 1]", self.wmh_max)
        check_setting(self.wmh_tau > 0, "ageing.wmh_tau", "> 0", self.wmh_tau)


#: The ageing processes that draw an individual rate factor (:class:`IndividualAgeing`), each
#: a column ``rate_<name>`` of the cohort table.
INDIVIDUAL_MARKERS = ("brain", "cortex", "hippocampus", "subcortical", "ventricles", "wmh",
                      "contrast")


@dataclass(frozen=True)
class IndividualAgeing:
    r"""Each subject's own rates of ageing: a factor per process, log-normal with mean 1.

    Subject ``i``'s factor of process ``m`` is :math:`f_{im} = \exp(\sigma_m z_{im} -
    \sigma_m^2 / 2)` (mean 1: the population curves of :class:`AgeingConfig` stay the mean),
    :math:`z_{im} = \lambda_m g_i + \sqrt{1 - \lambda_m^2}\, e_{im}` with a whole-brain
    rate :math:`g_i \sim N(0, 1)` shared by all processes (``brain`` is :math:`g` itself,
    :math:`\lambda = 1`) and independent :math:`e_{im} \sim N(0, 1)`: two processes
    correlate at :math:`\lambda_m \lambda_k` on the log scale. The factor multiplies the
    process's age-dependent dose at the subject's biological age (the whole brain's
    contraction, the cortex's thinning, the hippocampal and subcortical losses, the ventricles'
    growth, the WMH load, the GM/WM contrast's decline). Sources and the values' reading of
    them: ``book/methods.md`` ("Individual ageing and randomisation").

    Parameters
    ----------
    brain_sd, cortex_sd, hippocampus_sd, subcortical_sd, ventricles_sd, wmh_sd, contrast_sd : float
        Log-scale SD :math:`\sigma_m`. Defaults 0: off, every rate exactly 1 and no draw, the
        default cohort's simulator (without the preset). The varied preset
        (:data:`VARIED_SETTINGS`, an opt-in experiment) sets 0.15, 0.2, 0.8, 0.7, 0.6, 1.2,
        0.6, read from the literature as follows. Regional
        rates of shrinkage differ between healthy adults about as much as their mean (Raz
        2005; Fjell 2009), WMH volume at one age spans orders of magnitude and is analysed on
        a log scale (de Leeuw 2001), so the regional, ventricular, WMH and contrast factors are
        wide. The whole-brain and cortical factors are narrow: they carry most of the tissue
        loss, and wide ones would spread the realised brain age of controls far beyond the
        brain-age gaps reported in healthy adults (SD about 5 y; Cole 2017): with these
        values the controls' realised brain age minus chronological age has SD about 6 y
        (3 y under 40, 8 y over 60).
    cortex_loading, hippocampus_loading, subcortical_loading, ventricles_loading : float
        :math:`\lambda_m` (defaults 0.6, 0.5, 0.5, 0.5): regional atrophy rates correlate
        moderately with each other and with whole-brain atrophy (Fjell 2009).
    wmh_loading, contrast_loading : float
        :math:`\lambda_m` (defaults 0.3, 0.3): WMH and contrast loss correlate weakly with
        atrophy.
    """

    brain_sd: float = 0.0
    cortex_sd: float = 0.0
    hippocampus_sd: float = 0.0
    subcortical_sd: float = 0.0
    ventricles_sd: float = 0.0
    wmh_sd: float = 0.0
    contrast_sd: float = 0.0
    cortex_loading: float = 0.6
    hippocampus_loading: float = 0.5
    subcortical_loading: float = 0.5
    ventricles_loading: float = 0.5
    wmh_loading: float = 0.3
    contrast_loading: float = 0.3

    def __post_init__(self) -> None:
        for name in INDIVIDUAL_MARKERS:
            sd = getattr(self, f"{name}_sd")
            check_setting(isinstance(sd, (int, float)) and not isinstance(sd, bool)
                          and 0 <= sd <= 2, f"individual.{name}_sd", "a number in [0, 2]", sd)
            if name != "brain":
                lam = getattr(self, f"{name}_loading")
                check_setting(isinstance(lam, (int, float)) and not isinstance(lam, bool)
                              and -1 <= lam <= 1, f"individual.{name}_loading",
                              "a number in [-1, 1]", lam)

    @property
    def active(self) -> bool:
        """Whether any process draws an individual rate (an SD above 0)."""
        return any(getattr(self, f"{name}_sd") > 0 for name in INDIVIDUAL_MARKERS)

    def loading(self, name: str) -> float:
        r""":math:`\lambda` of process ``name`` (1 for ``brain``)."""
        return 1.0 if name == "brain" else float(getattr(self, f"{name}_loading"))


@dataclass(frozen=True)
class DiseaseConfig:
    """A patient group.

    Parameters
    ----------
    age_range : tuple of float
        Chronological ages drawn uniformly in [low, high).
    p_male : float
        Probability of a male subject.
    acceleration_max_years : float
        Extra brain-age deviation at latent severity 1.
    severity_beta : tuple of float, default=(2, 2)
        Beta distribution of the latent severity.
    losses : dict
        Extra fractional volume loss at severity 1, per region group.
    """

    age_range: tuple[float, float]
    p_male: float
    acceleration_max_years: float
    losses: dict[str, float]
    severity_beta: tuple[float, float] = (2.0, 2.0)

    def check(self, name: str) -> None:
        _check_range(f"{name}.age_range", self.age_range)
        check_setting(0 <= self.p_male <= 1, f"{name}.p_male", "in [0, 1]", self.p_male)
        check_setting(0 <= self.acceleration_max_years <= 40, f"{name}.acceleration_max_years",
                      "in [0, 40] years", self.acceleration_max_years)
        check_setting(len(self.severity_beta) == 2 and min(self.severity_beta) > 0,
                      f"{name}.severity_beta", "two positive Beta parameters", self.severity_beta)
        for region, loss in self.losses.items():
            check_setting(region in _LOSS_REGIONS, f"{name}.losses",
                          f"keys among {sorted(_LOSS_REGIONS)}", region)
            check_setting(0 <= loss < 0.9, f"{name}.losses[{region!r}]", "in [0, 0.9)", loss)


_LOSS_REGIONS = {"hippocampus", "entorhinal", "temporoparietal", "putamen", "caudate",
                 "midbrain", "thalamus", "cortex"}


@dataclass(frozen=True)
class ScoreConfig:
    """A clinical score generated from the latent severity.

    Parameters
    ----------
    group : str
        Group that has the score (``"AD"`` or ``"PD"``); others get "n/a".
    mean, sd : float
        Mean and SD of the score over the group.
    corr : float
        True correlation of the continuous score with the latent severity (sign included).
    low, high, step : float
        Range and rounding step of the recorded score.
    """

    group: str
    mean: float
    sd: float
    corr: float
    low: float
    high: float
    step: float = 1.0

    def check(self, name: str) -> None:
        check_setting(self.group in ("AD", "PD"), f"scores.{name}.group", "'AD' or 'PD'",
                      self.group)
        check_setting(-1 <= self.corr <= 1, f"scores.{name}.corr", "in [-1, 1]", self.corr)
        check_setting(self.sd > 0 and self.low < self.high and self.step > 0, f"scores.{name}",
                      "sd > 0, low < high, step > 0", (self.sd, self.low, self.high, self.step))


def _default_scores() -> dict[str, ScoreConfig]:
    return {"mmse": ScoreConfig("AD", 21.0, 4.0, -0.7, 0, 30),
            "cdr_sb": ScoreConfig("AD", 5.0, 2.5, 0.7, 0, 18, 0.5),
            "updrs3": ScoreConfig("PD", 30.0, 12.0, 0.6, 0, 132),
            "hoehn_yahr": ScoreConfig("PD", 2.2, 0.8, 0.6, 1, 5, 0.5)}


@dataclass(frozen=True)
class AnatomyConfig:
    """Individual anatomy, independent of age.

    Parameters
    ----------
    deformation_sd_mm : float, default=3
        SD of the random displacement at the control points.
    control_spacing_mm : float, default=24
        Spacing of the random displacement's control grid.
    male_head_scale : float, default=1.02
        Linear head scale of men (women: its inverse): male TIV about 12 % larger.
    head_scale_sd : float, default=0.033
        SD of the log linear head scale (isotropic): TIV SD about 10 %.
    registered_scale_sd : float, default=0.012
        SD of the log linear scale per axis left after an affine registration: images in
        template space show this, not the head size (an affine registration removes it, as it
        does from real scans); native-space images show the whole head size.
    rotation_sd_deg : float, default=2
        SD of the rotation about each axis.
    ventricle_sd : float, default=0.3
        SD of the log ventricular volume (a subject's own ventricle size at any age).
    mask_margin_mm : float, default=2
        Margin of a subject's brain mask around the template brain mask at y(x), the CSF rim a
        brain extraction keeps, where the cohort table has no ``scan_mask_margin_mm`` (each
        subject draws its own: :class:`ScannerRandomisation`).
    deformation_share : float, default=0.5
        Exponent share of a volume loss realised by deformation (rest: GM-to-CSF conversion).
    fine_deformation_sd_mm : float, default=0
        SD of a second, finer random displacement (issue 28: brain shape at two scales, lobes
        and gyri), added to the coarse one; 0 (default) turns it off, the varied preset
        (:data:`VARIED_SETTINGS`) sets 1.
    fine_control_spacing_mm : float, default=12
        Spacing of the fine displacement's control grid.
    mask_contraction_share : float, default=0
        Share of the whole brain's contraction that the brain mask follows (issue 28): 0
        (default), the young brain's outline, the default cohort's mask, so that a CSF rim
        grows inside the mask with the contraction; 1, the mask outlines the contracted
        brain (a brain extraction outlines the brain it sees; the varied preset's first
        version). Measured on the 50 real IXI scans (deepbet masks, 4 mm model grid, MNI
        space), the mask's volume falls 8.6 cm³ per decade; simulated with 1, 40, with 0,
        +2.5 (``docs/real-data.md``): with 1 the mask's size became a cue of age that real
        scans do not carry, and a model trained on that cohort read real scans worse. The
        project's affine registration removes the contraction from a registered scan
        (``benchmarks/bench_registered_contraction.py``), which
        ``template_contraction_share`` 0 stands for.
    mask_atrophy_share : float, default=0
        Share of the regional ageing and disease flows (the cortex receding from the brain's
        outline, the hippocampus, the ventricles) that the brain mask follows: 0 (default), the
        mask ignores them, so that the CSF a receding cortex leaves at the brain's edge stays
        inside the mask; 1, a brain extraction that outlines the receding cortex. With
        ``template_contraction_share`` 0, a share of 0.3 gave the simulated controls the 50
        real IXI scans' age trends of the CSF fraction and the mask volume (a choice that
        looked at the real ages); a quick model trained on that cohort did not read the real
        scans better (``docs/real-data.md``).
    template_contraction_share : float, default=1
        Share of the whole brain's contraction that a template-space image keeps (issue 28).
        Template-space images stand for scans after the project's affine brain-to-brain
        registration, which rescales a brain to the template's size: it removes a head's size
        (only ``registered_scale_sd`` is left) and likewise a uniform contraction of the whole
        brain about its centre. 0: the registration removes the contraction; the other
        processes (thinner cortex, wider sulci, larger ventricles, regional losses) stay.
        Native-space images always keep the whole contraction (their registration removes it).
    ventricle_asymmetry_sd : float, default=0
        SD of the subject's ventricular asymmetry ``a``: the flow that sets the ventricles'
        size is ``1 + a`` times stronger on one side and ``1 - a`` on the other (issue 28:
        lateral ventricles differ between hemispheres in healthy adults; the simulator's
        choice, measured in ``tests/data/test_simulate_anatomy.py``). 0 (default): off, no
        draw; the varied preset sets 0.15.
    """

    deformation_sd_mm: float = 3.0
    control_spacing_mm: float = 24.0
    male_head_scale: float = 1.02
    head_scale_sd: float = 0.033
    registered_scale_sd: float = 0.012
    rotation_sd_deg: float = 2.0
    ventricle_sd: float = 0.3
    mask_margin_mm: float = 2.0
    deformation_share: float = 0.5
    fine_deformation_sd_mm: float = 0.0
    fine_control_spacing_mm: float = 12.0
    ventricle_asymmetry_sd: float = 0.0
    mask_contraction_share: float = 0.0
    template_contraction_share: float = 1.0
    mask_atrophy_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("mask_contraction_share", "template_contraction_share",
                     "mask_atrophy_share"):
            share = getattr(self, name)
            check_setting(isinstance(share, (int, float)) and not isinstance(share, bool)
                          and 0 <= share <= 1, f"anatomy.{name}", "a number in [0, 1]", share)
        check_setting(0 <= self.fine_deformation_sd_mm <= 5, "anatomy.fine_deformation_sd_mm",
                      "in [0, 5]", self.fine_deformation_sd_mm)
        check_setting(6 <= self.fine_control_spacing_mm <= 40, "anatomy.fine_control_spacing_mm",
                      "in [6, 40]", self.fine_control_spacing_mm)
        check_setting(0 <= self.ventricle_asymmetry_sd <= 0.5, "anatomy.ventricle_asymmetry_sd",
                      "in [0, 0.5]", self.ventricle_asymmetry_sd)
        check_setting(0 <= self.deformation_sd_mm <= 10, "anatomy.deformation_sd_mm", "in [0, 10]",
                      self.deformation_sd_mm)
        check_setting(8 <= self.control_spacing_mm <= 80, "anatomy.control_spacing_mm",
                      "in [8, 80]", self.control_spacing_mm)
        check_setting(0.8 <= self.male_head_scale <= 1.25, "anatomy.male_head_scale",
                      "in [0.8, 1.25]", self.male_head_scale)
        for key, high in (("head_scale_sd", 0.2), ("registered_scale_sd", 0.2),
                          ("ventricle_sd", 1.0), ("deformation_share", 1.0),
                          ("mask_margin_mm", 10.0), ("rotation_sd_deg", 15.0)):
            check_setting(0 <= getattr(self, key) <= high, f"anatomy.{key}", f"in [0, {high:g}]",
                          getattr(self, key))


@dataclass(frozen=True)
class ScannerRandomisation:
    """Per-subject domain randomisation of the scanner around its site (SynthSeg-style).

    Each subject's scan draws its own tissue intensities, bias-field strength, noise level,
    extra blur and texture strength, independently of age, so that no intensity cue can stand
    in for age and sites differ only mildly (Billot 2023).

    Parameters
    ----------
    gm_sd, csf_sd : float, default=0.03, 0.04
        SD of the subject's GM and CSF intensities (relative to WM) around the site's.
    noise_range : tuple of float, default=(0.6, 1.6)
        Range of the noise level's factor (log-uniform).
    bias_range : tuple of float, default=(0.3, 1.5)
        Range of the bias field strength's factor (uniform).
    blur_fwhm_mm : tuple of float, default=(0, 2)
        Range of an extra isotropic Gaussian blur's FWHM (uniform; resolution randomisation).
    texture_range : tuple of float, default=(0.5, 1.5)
        Range of the template texture's factor (uniform).
    mask_margin_mm : tuple of float, default=(1.5, 6)
        Range of the subject's brain-mask margin around the template brain at y(x) (uniform),
        the CSF rim a brain extraction keeps: tools and settings differ (a template mask, BET,
        deepbet), and with the margin fixed the width of the dark rim grew with atrophy alone,
        so it stood in for age (a one-voxel tighter mask moved the quick model's ages by -24
        years on simulated controls and by -20 on real IXI scans). Its centre, 3.75 mm, gives
        young simulated brains the real scans' mask volume and CSF fraction (at the 4 mm model
        grid, a millimetre of margin adds about 59 cm³ of mask and 2.3 points of CSF fraction;
        real deepbet masks of ``../shared/data/ixi10``: median 2078 cm³, CSF fraction 0.104,
        ``benchmarks/bench_sim2real.py``); its width, about twice the real scans' spread of mask
        volume, keeps the rim's width from standing in for age.
    mask_margin_sd_mm : float, default=1
        SD of a smooth variation of the margin over the brain (a second-order polynomial
        field), independent of age.
    gamma_sd : float, default=0
        SD of the log of a per-subject gamma exponent applied to the noise-free intensities
        relative to white matter (issue 28): a non-linear contrast change (sequence timing,
        scanner). 0 (default): off, no draw, every gamma 1. The varied preset sets 0.1,
        which moves the GM and CSF levels by about as much as 60 years of GM/WM contrast
        decline, so the global intensity levels no longer stand in for age. SynthSeg draws
        far wider exponents to cover any contrast (Billot 2023); T1w alone needs less.
    """

    gm_sd: float = 0.03
    csf_sd: float = 0.04
    noise_range: tuple[float, float] = (0.6, 1.6)
    bias_range: tuple[float, float] = (0.3, 1.5)
    blur_fwhm_mm: tuple[float, float] = (0.0, 2.0)
    texture_range: tuple[float, float] = (0.5, 1.5)
    mask_margin_mm: tuple[float, float] = (1.5, 6.0)
    mask_margin_sd_mm: float = 1.0
    gamma_sd: float = 0.0

    def __post_init__(self) -> None:
        check_setting(0 <= self.gm_sd <= 0.2, "scanner.gm_sd", "in [0, 0.2]", self.gm_sd)
        gamma = self.gamma_sd
        check_setting(isinstance(gamma, (int, float)) and not isinstance(gamma, bool)
                      and 0 <= gamma <= 0.5, "scanner.gamma_sd", "a number in [0, 0.5]", gamma)
        check_setting(0 <= self.mask_margin_sd_mm <= 5, "scanner.mask_margin_sd_mm", "in [0, 5]",
                      self.mask_margin_sd_mm)
        check_setting(0 <= self.csf_sd <= 0.2, "scanner.csf_sd", "in [0, 0.2]", self.csf_sd)
        for key, low, high in (("noise_range", 0.01, 10.0), ("bias_range", 0.0, 10.0),
                               ("blur_fwhm_mm", 0.0, 8.0), ("texture_range", 0.0, 3.0),
                               ("mask_margin_mm", 0.0, 10.0)):
            rng = getattr(self, key)
            check_setting(len(rng) == 2 and low <= rng[0] <= rng[1] <= high, f"scanner.{key}",
                          f"a (low, high) pair in [{low:g}, {high:g}]", rng)


def _default_ad() -> DiseaseConfig:
    return DiseaseConfig((55.0, 80.0), 0.4, 16.0,
                         {"hippocampus": 0.30, "entorhinal": 0.35, "temporoparietal": 0.20})


def _default_pd() -> DiseaseConfig:
    return DiseaseConfig((45.0, 85.0), 0.6, 6.0,
                         {"putamen": 0.20, "caudate": 0.15, "midbrain": 0.20})


@dataclass(frozen=True)
class SimulationConfig:
    """All parameters of the simulated cohort (counts, seed and resolution are arguments).

    Parameters
    ----------
    sigma_bio : float, default=3
        SD (years) of healthy biological-age deviation.
    hc_age_range : tuple of float, default=(20, 100)
        Ages of healthy controls. Patients' biological ages are kept at or below its upper
        end (their healthy deviation is redrawn), the oldest brain the controls show.
    hc_p_male : float, default=0.5
        Probability of a male control.
    ad, pd : DiseaseConfig
        Patient groups (defaults: AD 55-80 y, +8 y mean global acceleration; PD 45-85 y,
        +3 y). ``age_range[1] + acceleration_max_years`` must not exceed
        ``hc_age_range[1]``.
    ageing : AgeingConfig
        Dose-response of ageing (the population's mean curves).
    individual : IndividualAgeing
        Each subject's own rate factors around those curves.
    anatomy : AnatomyConfig
        Individual anatomy.
    scanner : ScannerRandomisation
        Per-subject randomisation of the scanner around its site.
    scores : dict of ScoreConfig
        ``mmse``, ``cdr_sb``, ``updrs3``, ``hoehn_yahr``.
    sites : tuple of SiteConfig
        Scanner sites (default: three).
    native_space : bool, default=False
        Write images in a native scanner space (random rigid pose, the site's voxel size and
        orientation) instead of the template grid.
    native_max_rotation_deg, native_max_shift_mm : float, default=15, 15
        Range of the native pose.
    """

    sigma_bio: float = 3.0
    hc_age_range: tuple[float, float] = (20.0, 100.0)
    hc_p_male: float = 0.5
    ad: DiseaseConfig = field(default_factory=_default_ad)
    pd: DiseaseConfig = field(default_factory=_default_pd)
    ageing: AgeingConfig = field(default_factory=AgeingConfig)
    individual: IndividualAgeing = field(default_factory=IndividualAgeing)
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    scanner: ScannerRandomisation = field(default_factory=ScannerRandomisation)
    scores: dict[str, ScoreConfig] = field(default_factory=_default_scores)
    sites: tuple[SiteConfig, ...] = DEFAULT_SITES
    native_space: bool = False
    native_max_rotation_deg: float = 15.0
    native_max_shift_mm: float = 15.0

    def __post_init__(self) -> None:
        check_setting(0 <= self.sigma_bio <= 20, "sigma_bio", "in [0, 20] years", self.sigma_bio)
        _check_range("hc_age_range", self.hc_age_range)
        check_setting(0 <= self.hc_p_male <= 1, "hc_p_male", "in [0, 1]", self.hc_p_male)
        self.ad.check("ad")
        self.pd.check("pd")
        for name, dis in (("ad", self.ad), ("pd", self.pd)):
            oldest = dis.age_range[1] + dis.acceleration_max_years
            check_setting(oldest <= self.hc_age_range[1], f"{name}.age_range",
                          f"such that age_range[1] + acceleration_max_years <= "
                          f"hc_age_range[1] = {self.hc_age_range[1]:g} (patients' biological "
                          "ages must lie inside the controls' age range)",
                          (dis.age_range, dis.acceleration_max_years))
        for name, score in self.scores.items():
            check_setting(name in _default_scores(), "scores",
                          f"keys among {list(_default_scores())}", name)
            score.check(name)
        check_setting(len(self.sites) > 0, "sites", "at least one site", self.sites)
        names = [s.name for s in self.sites]
        check_setting(len(set(names)) == len(names), "sites", "sites with distinct names", names)
        check_setting(0 <= self.native_max_rotation_deg <= 45, "native_max_rotation_deg",
                      "in [0, 45]", self.native_max_rotation_deg)
        check_setting(0 <= self.native_max_shift_mm <= 50, "native_max_shift_mm", "in [0, 50]",
                      self.native_max_shift_mm)


_DEFAULT = SimulationConfig()
_NESTED: dict[str, Any] = {"ad": DiseaseConfig, "pd": DiseaseConfig, "ageing": AgeingConfig,
                           "individual": IndividualAgeing,
                           "anatomy": AnatomyConfig, "scanner": ScannerRandomisation}


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, rejecting unknown keys with a suggestion."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} must be a mapping of settings, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise SimulationConfigError(f"unknown setting {where}.{key}: allowed are "
                                        f"{', '.join(known)}{closest_hint(key, known)}")
    kwargs = {}
    for key, value in data.items():
        if key in _NESTED and cls is SimulationConfig:
            value = _build(_NESTED[key], _merged(getattr(_DEFAULT, key), value, where, key),
                           f"{where}.{key}")
        elif key == "sites" and cls is SimulationConfig:
            value = tuple(_build(SiteConfig, s, f"{where}.sites[{i}]")
                          for i, s in enumerate(value))
        elif key == "scores" and cls is SimulationConfig:
            defaults = _default_scores()
            value = {**defaults, **{
                k: _build(ScoreConfig, _merged(defaults.get(k), v, where, f"scores.{k}"),
                          f"{where}.scores.{k}") for k, v in value.items()}}
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _merged(default: Any, value: Any, where: str, key: str) -> Any:
    """Partial settings of a nested group on top of its defaults."""
    if default is None or not isinstance(value, Mapping):
        return value
    return {**{f.name: getattr(default, f.name) for f in dataclasses.fields(default)}, **value}


def config_from_dict(data: Mapping[str, Any]) -> SimulationConfig:
    """Build a :class:`SimulationConfig` from plain values (JSON/YAML), defaults elsewhere.

    Raises
    ------
    SimulationConfigError
        For an unknown key (naming it and the closest allowed one) or a value out of range.
    """
    return _build(SimulationConfig, data, "config")


def config_to_dict(config: SimulationConfig) -> dict[str, Any]:
    """Plain-value form of ``config`` (JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_config_file(path: str | Path, preset: str | None = None) -> SimulationConfig:
    """Read a JSON or YAML file of :class:`SimulationConfig` settings, on top of the defaults
    or, with ``preset="varied"``, of the varied preset (:data:`VARIED_SETTINGS`)."""
    check_setting(preset is None or preset in PRESETS, "preset",
                  f"None or one of {', '.join(PRESETS)}", preset)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"simulation config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    try:
        return varied_config(data) if preset == "varied" else config_from_dict(data)
    except (SimulationConfigError, TypeError) as err:
        raise type(err)(f"{path}: {err}") from err


#: The varied preset: an opt-in experiment, not the default (plain values for
#: :func:`config_from_dict`; :func:`varied_config` builds it). Individual ageing rates at the
#: literature's spreads (:class:`IndividualAgeing`), a per-subject gamma, a finer second scale
#: of brain shape, ventricular asymmetry and template-space images without the whole brain's
#: contraction (``template_contraction_share`` 0: the affine registration removes it,
#: ``benchmarks/bench_registered_contraction.py``). Measured with the quick model retrained on
#: it (``docs/real-data.md``): its first version (the mask following the contraction instead)
#: brought the CSF fraction's age trend to the 50 real IXI scans' (0.012 against 0.011 per
#: decade; default 0.026) and kept the simulated test MAE close (RNC 7.10 -> 8.63, L1 7.72 ->
#: 7.82 y) but read real scans worse (RNC r 0.48 -> 0.27, mean gap -16.8 -> -21.3 y: the model
#: read the contracting mask's size); this version reads them worse still (simulated test MAE
#: 10.69 and 10.29 y, real RNC r 0.11, mean gap -25.2 y). The default (every field off) is the
#: default simulator.
VARIED_SETTINGS: dict[str, Any] = {
    "individual": {"brain_sd": 0.15, "cortex_sd": 0.2, "hippocampus_sd": 0.8,
                   "subcortical_sd": 0.7, "ventricles_sd": 0.6, "wmh_sd": 1.2,
                   "contrast_sd": 0.6},
    "anatomy": {"fine_deformation_sd_mm": 1.0, "ventricle_asymmetry_sd": 0.15,
                "template_contraction_share": 0.0},
    "scanner": {"gamma_sd": 0.1},
}


def varied_config(overrides: Mapping[str, Any] | None = None) -> SimulationConfig:
    """The varied preset (:data:`VARIED_SETTINGS`) as a :class:`SimulationConfig`, with
    ``overrides`` (plain values as for :func:`config_from_dict`; a nested group's keys are
    merged into the preset's) on top."""
    data: dict[str, Any] = {key: dict(value) for key, value in VARIED_SETTINGS.items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data)


#: The named presets a profile (``sim_preset``) or ``brainage simulate --preset`` selects:
#: ``None`` is the default simulator.
PRESETS = ("varied",)


def preset_config(name: str | None) -> SimulationConfig:
    """The simulator's configuration of a named preset: ``None`` the defaults, ``"varied"``
    :func:`varied_config` (an opt-in experiment)."""
    check_setting(name is None or name in PRESETS, "preset",
                  f"None or one of {', '.join(PRESETS)}", name)
    return SimulationConfig() if name is None else varied_config()
