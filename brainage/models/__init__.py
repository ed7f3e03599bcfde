"""Models: the network, the RNC loss, augmentation, datasets, training, Grad-RAM saliency.

The only users of torch. Imports only :mod:`brainage._utils` of brainage.
"""

from __future__ import annotations

from brainage._utils.lazy import lazy_exports

#: Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "AugmentConfig": "augment",
    "RandomViews": "augment",
    "build_augmentation": "augment",
    "view_seed": "augment",
    "affine_theta": "augment",
    "CHECKPOINT_FORMAT": "checkpoint",
    "read_checkpoint": "checkpoint",
    "write_checkpoint": "checkpoint",
    "VolumeDataset": "datasets",
    "FEATURE_STAGES": "features",
    "FeatureCapture": "features",
    "capture_features": "features",
    "feature_size": "features",
    "RnCLoss": "losses",
    "rnc_loss_reference": "losses",
    "BrainAgeModel": "network",
    "MODEL_PRESETS": "network",
    "ModelConfig": "network",
    "Regressor": "network",
    "build_encoder": "network",
    "build_model": "network",
    "disable_inplace_relu": "network",
    "GROUP_NORMALISATIONS": "saliency",
    "compare_enrichment": "saliency",
    "enrichment_auc": "saliency",
    "grad_ram": "saliency",
    "group_average": "saliency",
    "integrated_gradients": "saliency",
    "layer_shape": "saliency",
    "region_summary": "saliency",
    "save_attribution_maps": "saliency",
    "save_map": "saliency",
    "save_subject_maps": "saliency",
    "subject_enrichment": "saliency",
    "gradram_sign_table": "saliency",
    "offset_category": "saliency",
    "MAP_MEASURES": "saliency",
    "age_window_mean": "saliency",
    "attribution_spread": "saliency",
    "gradram_truth_table": "saliency",
    "holm": "saliency",
    "map_measures": "saliency",
    "median_interval": "saliency",
    "reference_prediction_table": "saliency",
    "typical_scan": "saliency",
    "truth_test_table": "saliency",
    "paired_differences": "saliency",
    "TrainConfig": "train",
    "TrainResult": "train",
    "encode": "train",
    "gather_views": "train",
    "load_model": "train",
    "predict": "train",
    "resolve_device": "train",
    "train_l1": "train",
    "train_permuted_age_model": "train",
    "train_rnc": "train",
}
_MODULES = (
    "augment", "checkpoint", "datasets", "features", "losses", "network", "saliency", "train",
)

__all__ = sorted([*_EXPORTS, *_MODULES])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MODULES)
