"""Random MRI augmentations and the two-view sampling of Rank-N-Contrast.

The transforms are MONAI's random array transforms, applied on CPU to one scan ``(C, D, H, W)``
at a time: a small random affine (rotation, scaling, translation), a left-right flip, a smooth
multiplicative bias field, a gamma contrast change, an intensity scaling and Gaussian noise.
The intensity magnitudes assume scans normalised to unit scale (brain intensities of order 1).

Determinism without hidden state: every draw is seeded from ``(seed, epoch, index)`` with
:func:`view_seed`, so a sample's augmentations do not depend on the data order, on the worker
that loads it, on the number of processes (DDP) or on whether training was resumed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandFlip,
    RandGaussianNoise,
    RandScaleIntensity,
)
from torch import Tensor

from brainage._utils import check_int

logger = logging.getLogger(__name__)

__all__ = ["AugmentConfig", "RandomViews", "build_augmentation", "view_seed"]

_PROBABILITIES = ("affine_prob", "flip_prob", "bias_field_prob", "contrast_prob",
                  "intensity_prob", "noise_prob")
_MAGNITUDES = ("rotate_deg", "scale", "translate_vox", "bias_field_coeff", "intensity_scale",
               "noise_std")


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of the random augmentations (probabilities are per transform and per view).

    Parameters
    ----------
    affine_prob : float, default=0.8
        Probability of the random affine.
    rotate_deg : float, default=8.0
        Maximum absolute rotation about each axis, degrees.
    scale : float, default=0.05
        Maximum relative change of scale per axis (0.05: 0.95-1.05).
    translate_vox : float, default=2.0
        Maximum absolute translation per axis, voxels.
    flip_prob : float, default=0.5
        Probability of a flip along ``flip_axis``.
    flip_axis : int, default=0
        Spatial axis of the flip; 0 is left-right for RAS-oriented scans.
    bias_field_prob : float, default=0.3
        Probability of a smooth multiplicative bias field (polynomial of degree 3).
    bias_field_coeff : float, default=0.1
        Maximum absolute polynomial coefficient of the log bias field.
    contrast_prob : float, default=0.3
        Probability of a gamma contrast change, gamma in ``contrast_gamma``.
    contrast_gamma : tuple of 2 float, default=(0.98, 1.02)
        Range of gamma. Kept narrow on purpose: grey/white-matter contrast falls with age
        (Salat et al. 2009; the simulator's ``contrast_decline``), and gamma ``g`` turns a
        GM/WM intensity ratio ``r`` into ``r**g``. At the simulated sites (``r`` about 0.6) the
        former default range 0.8-1.25 moved the ratio as far as about 65 years of simulated
        decline and so taught the encoder to ignore an ageing cue; 0.98-1.02 moves it by
        about as much as 6 years (``tests/models/test_augment.py``).
    intensity_prob : float, default=0.3
        Probability of an intensity scaling by ``1 + u``, ``u`` uniform in
        ``[-intensity_scale, intensity_scale]``.
    intensity_scale : float, default=0.1
        See ``intensity_prob``.
    noise_prob : float, default=0.3
        Probability of additive Gaussian noise.
    noise_std : float, default=0.03
        Maximum standard deviation of the noise (MONAI draws it uniformly in [0, noise_std]).
    """

    affine_prob: float = 0.8
    rotate_deg: float = 8.0
    scale: float = 0.05
    translate_vox: float = 2.0
    flip_prob: float = 0.5
    flip_axis: int = 0
    bias_field_prob: float = 0.3
    bias_field_coeff: float = 0.1
    contrast_prob: float = 0.3
    contrast_gamma: tuple[float, float] = (0.98, 1.02)
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1
    noise_prob: float = 0.3
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], "
                                 f"got {value!r}")
        for name in _MAGNITUDES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0, "
                                 f"got {value!r}")
        if self.flip_axis not in (0, 1, 2):
            raise ValueError(f"AugmentConfig.flip_axis must be a spatial axis 0, 1 or 2, "
                             f"got {self.flip_axis!r}")
        gamma = tuple(self.contrast_gamma)
        if len(gamma) != 2 or not 0 < gamma[0] <= gamma[1]:
            raise ValueError(f"AugmentConfig.contrast_gamma must be (low, high) with "
                             f"0 < low <= high, got {self.contrast_gamma!r}")
        object.__setattr__(self, "contrast_gamma", (float(gamma[0]), float(gamma[1])))
        if self.scale >= 1:
            raise ValueError(f"AugmentConfig.scale must be < 1 (a relative change), "
                             f"got {self.scale!r}")

    def to_dict(self) -> dict:
        """Plain-type dictionary for checkpoints and JSON."""
        out = asdict(self)
        out["contrast_gamma"] = list(self.contrast_gamma)
        return out


def build_augmentation(cfg: AugmentConfig) -> Compose:
    """Compose the random transforms of ``cfg`` (spatial first, noise last).

    Parameters
    ----------
    cfg : AugmentConfig
        Magnitudes and probabilities.

    Returns
    -------
    monai.transforms.Compose
        Maps an image ``(C, D, H, W)`` to an augmented image of the same shape.
    """
    if not isinstance(cfg, AugmentConfig):
        raise TypeError(f"cfg must be an AugmentConfig, got {type(cfg).__name__}")
    rotate = math.radians(cfg.rotate_deg)
    return Compose([
        RandAffine(prob=cfg.affine_prob, rotate_range=(rotate,) * 3,
                   scale_range=(cfg.scale,) * 3, translate_range=(cfg.translate_vox,) * 3,
                   mode="bilinear", padding_mode="zeros"),
        RandFlip(prob=cfg.flip_prob, spatial_axis=cfg.flip_axis),
        RandBiasField(prob=cfg.bias_field_prob, degree=3,
                      coeff_range=(0.0, cfg.bias_field_coeff)),
        RandAdjustContrast(prob=cfg.contrast_prob, gamma=cfg.contrast_gamma),
        RandScaleIntensity(prob=cfg.intensity_prob, factors=cfg.intensity_scale),
        RandGaussianNoise(prob=cfg.noise_prob, mean=0.0, std=cfg.noise_std),
    ])


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for the augmentations of sample ``index`` in ``epoch``.

    ``numpy.random.SeedSequence`` mixes the three integers, so neighbouring epochs or
    indices give unrelated streams.
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        check_int(name, value, low=0)
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


class RandomViews:
    """Draw ``n_views`` augmented views of a scan, reproducibly.

    Parameters
    ----------
    cfg : AugmentConfig or None
        The augmentations; ``None`` returns copies of the input (no augmentation).
    n_views : int, default=2
        Views per call (2 for Rank-N-Contrast, 1 for the L1 baseline).

    Examples
    --------
    >>> views = RandomViews(AugmentConfig(), n_views=2)
    >>> out = views(torch.zeros(1, 12, 14, 10), seed=view_seed(0, epoch=0, index=3))
    >>> tuple(out.shape)
    (2, 1, 12, 14, 10)
    """

    def __init__(self, cfg: AugmentConfig | None, n_views: int = 2) -> None:
        check_int("n_views", n_views, low=1)
        self.cfg = cfg
        self.n_views = n_views
        self.transform = build_augmentation(cfg) if cfg is not None else None

    def __call__(self, image: Tensor, seed: int) -> Tensor:
        """Return ``n_views`` views of ``image : Tensor, shape (C, D, H, W)``.

        Returns
        -------
        Tensor, shape (n_views, C, D, H, W)
            Float32 views on the CPU; the same ``seed`` gives the same views.
        """
        if not isinstance(image, Tensor) or image.ndim != 4:
            shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
            raise ValueError(f"image must be a tensor of shape (C, D, H, W), got {shape}")
        image = image.detach().to("cpu", torch.float32)
        if self.transform is None:
            return image.unsqueeze(0).repeat(self.n_views, 1, 1, 1, 1)  # (V, C, D, H, W)
        self.transform.set_random_state(seed=seed)
        views = []
        for _ in range(self.n_views):  # successive draws from one seeded stream
            view = self.transform(image)
            views.append(torch.as_tensor(view.as_tensor() if hasattr(view, "as_tensor") else view,
                                         dtype=torch.float32))
        return torch.stack(views)  # V x (C, D, H, W) -> (V, C, D, H, W)
