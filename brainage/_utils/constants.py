"""Constants of the study that several stages use: one definition each."""

from __future__ import annotations

__all__ = ["AGE_RANGE", "BRAIN_EXTRACTION_METHODS", "CHECKPOINT_FILE", "GROUPS",
           "PREDICTION_VALUES", "SPACES", "TRUST_VALUES", "VERSION"]

#: The package version (also ``brainage.__version__``).
VERSION = "0.1.0"

#: Study groups: healthy controls, Alzheimer's disease, Parkinson's disease.
GROUPS = ("HC", "AD", "PD")

#: Plausible chronological (and predicted) ages, in years, inclusive.
AGE_RANGE = (0.0, 120.0)

#: Spaces a scan may be in. ``native`` scans are registered to MNI152; ``MNI152NLin2009cSym``
#: scans (the simulated cohort) and ``MNI152Lin`` arrays (OpenBHB quasi-raw) are only resampled.
SPACES = ("native", "MNI152NLin2009cSym", "MNI152Lin")

#: How native scans that are not skull-stripped lose their skull: the subject's own brain mask
#: (deepbet, before registration) or the template's brain mask (after registration).
BRAIN_EXTRACTION_METHODS = ("deepbet", "template")

#: The prediction of one scan by one head, in every table that holds predictions (the run's
#: ``predictions.csv`` and ``brainage predict``'s CSV): the predicted age, the gap (predicted
#: minus chronological age), and both after the head's age-bias correction, in years.
PREDICTION_VALUES = ("predicted", "gap", "corrected_predicted", "corrected_gap")

#: What each prediction says of its own trust, in the same tables, after
#: :data:`PREDICTION_VALUES`: the nominal level of the intervals; the split-conformal interval
#: of the age (around ``predicted``; needs no age) and of the bias-corrected gap (needs the age
#: and a correction); the out-of-distribution score (distance of the scan's features to the
#: training scans', in units of the threshold) and flag (score above 1); and whether the
#: chronological age (the predicted age when the age is unknown) lies outside the training ages.
TRUST_VALUES = ("interval_level", "age_lower", "age_upper", "corrected_gap_lower",
                "corrected_gap_upper", "ood_score", "ood", "outside_age_range")

#: File name of a head's weights in a model folder (``<head>/best.pt``): written by training
#: (:mod:`brainage.models.train`, which may import only ``_utils``), re-exported by
#: :mod:`brainage.inference.model_folder`, the folder's owner.
CHECKPOINT_FILE = "best.pt"
