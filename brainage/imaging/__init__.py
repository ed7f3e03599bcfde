"""Imaging: loading, registration to MNI152, preprocessing onto the model grid, the cache.

Imports only :mod:`brainage.data` and :mod:`brainage._utils` of brainage.
"""

from __future__ import annotations

from brainage._utils.lazy import lazy_exports

#: Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "BrainExtractionError": "brain_extraction",
    "BrainMask": "brain_extraction",
    "TIV_RANGE_CM3": "brain_extraction",
    "crop_to_mask": "brain_extraction",
    "extract_brain": "brain_extraction",
    "ROBUSTNESS_CASES": "perturb",
    "erode_brain": "perturb",
    "pad_neck": "perturb",
    "reorder_axes": "perturb",
    "robustness_case": "perturb",
    "shift_origin": "perturb",
    "ACQUISITION_CASES": "perturb",
    "MISREGISTRATIONS": "perturb",
    "acquisition_case": "perturb",
    "add_bias_field": "perturb",
    "add_rician_noise": "perturb",
    "misregister": "perturb",
    "motion_ghosting": "perturb",
    "resample_voxels": "perturb",
    "rigid_move": "perturb",
    "BRAIN_EXTRACTION_METHODS": "preprocess",
    "CohortItem": "preprocess",
    "PREPROCESS_VERSION": "preprocess",
    "PreprocessCache": "preprocess",
    "PreprocessError": "preprocess",
    "PreprocessParams": "preprocess",
    "header_tiv": "preprocess",
    "check_scan": "preprocess",
    "load_scan": "preprocess",
    "normalise_intensity": "preprocess",
    "preprocess_cohort": "preprocess",
    "preprocess_file": "preprocess",
    "preprocess_files": "preprocess",
    "resample_to_grid": "preprocess",
    "registration_misfit": "preprocess",
    "check_scan_format": "preprocess",
    "memory_budget": "preprocess",
    "ALIGNMENT_THRESHOLD": "registration",
    "MISFIT_THRESHOLD_MM": "registration",
    "RegistrationResult": "registration",
    "alignment_score": "registration",
    "ants_to_nifti": "registration",
    "brain_stage_pyramid": "registration",
    "mask_centre": "registration",
    "mask_pitch": "registration",
    "n4_correct": "registration",
    "nifti_to_ants": "registration",
    "outline_distances": "registration",
    "outline_misfit": "registration",
    "register_to_template": "registration",
    "registration_passes": "registration",
    "registration_qc_text": "registration",
    "template_grid": "registration",
    "template_images": "registration",
    "warp_to_template": "registration",
}
_MODULES = (
    "brain_extraction", "perturb", "preprocess", "registration",
)

__all__ = sorted([*_EXPORTS, *_MODULES])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MODULES)
