"""Random MRI augmentations and the two-view sampling of Rank-N-Contrast.

A small random affine (rotation, scaling, translation), a left-right flip, a smooth
multiplicative bias field, a gamma contrast change, an intensity scaling and Gaussian noise,
in that order. The intensity magnitudes assume scans normalised to unit scale (brain
intensities of order 1).

:class:`RandomViews` applies them to a whole batch at once, on the batch's device: MONAI's
random transforms (:func:`build_augmentation`, the same transforms one scan at a time, kept as
the reference) are a large part of a CPU training step. Measured by
``benchmarks/bench_augment.py`` on the project's idle 2-core machine, per 4 mm view: 7.6 ms for
MONAI's per-scan transforms against 2.5 ms batched (2 threads; 8.8 against 5.3 ms on one
thread); at 2 mm the gain is 1.6x on 2 threads and none on one (the trilinear resampling
dominates). Under load MONAI's many small per-scan operations slow down far more (245 against
31 ms per 4 mm view at a load of about 10). MONAI has no batched form of these transforms with
a seed per sample, hence this one; its formulas are MONAI's (``RandBiasField``'s Legendre
field, ``AdjustContrast``'s gamma on the min-max range, ``RandGaussianNoise``'s uniformly
drawn standard deviation), and the affine is ``torch.nn.functional.affine_grid`` /
``grid_sample`` (trilinear, zero padding) with its matrix built in voxel space.

Determinism without hidden state: every draw is seeded from ``(seed, epoch, index)`` with
:func:`view_seed`, so a sample's augmentations do not depend on the data order, on the worker
that loads it, on the number of processes (DDP) or on whether training was resumed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
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
from torch.nn import functional as F

from brainage._utils import check_int

logger = logging.getLogger(__name__)

__all__ = ["AugmentConfig", "RandomViews", "affine_theta", "build_augmentation", "view_seed"]

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


def _legendre_basis(shape: tuple[int, int, int], degree: int) -> np.ndarray:
    """Products of Legendre polynomials on [-1, 1]^3 of total degree <= ``degree``.

    MONAI's ``RandBiasField`` terms in its order; shape (n_terms, D, H, W), float32.
    """
    coords = [np.linspace(-1.0, 1.0, n) for n in shape]
    terms = []
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            for k in range(degree + 1 - i - j):
                polys = [np.polynomial.legendre.legval(c, np.eye(degree + 1)[n])
                         for c, n in zip(coords, (i, j, k))]
                terms.append(np.einsum("d,h,w->dhw", *polys))
    return np.stack(terms).astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix about the three axes (x, then y, then z), angles in radians."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def affine_theta(matrix: np.ndarray, translation: np.ndarray,
                 shape: tuple[int, int, int]) -> np.ndarray:
    """``affine_grid``'s matrix for a voxel-space affine about the volume's centre.

    Output voxel ``c`` (centred coordinates, axes D, H, W) samples the input at
    ``matrix @ c + translation``.

    Parameters
    ----------
    matrix : ndarray, shape (3, 3)
        Linear part, voxel axes (D, H, W).
    translation : ndarray, shape (3,)
        Voxels.
    shape : tuple of 3 int
        (D, H, W).

    Returns
    -------
    ndarray, shape (3, 4)
        For ``torch.nn.functional.affine_grid(..., align_corners=False)``, whose coordinates
        are normalised to [-1, 1] and ordered (W, H, D).
    """
    half = np.asarray(shape[::-1], dtype=np.float64) / 2  # centred voxel = normalised * half
    linear = np.asarray(matrix, dtype=np.float64)[::-1, ::-1]  # (D, H, W) -> (W, H, D)
    theta = np.empty((3, 4))
    theta[:, :3] = linear * half[None, :] / half[:, None]
    theta[:, 3] = np.asarray(translation, dtype=np.float64)[::-1] / half
    return theta


@dataclass
class _Draws:
    """Every random number of one view (drawn whether or not its transform applies)."""

    theta: np.ndarray | None
    flip: bool
    bias: np.ndarray | None
    gamma: float | None
    scale: float | None
    noise_std: float | None
    noise_seed: int


def _draw(cfg: AugmentConfig, rng: np.random.Generator, shape: tuple[int, int, int],
          n_terms: int) -> _Draws:
    rotate = math.radians(cfg.rotate_deg)
    apply = rng.uniform(size=6) < np.array([getattr(cfg, p) for p in _PROBABILITIES])
    angles = rng.uniform(-rotate, rotate, 3)
    scales = 1.0 + rng.uniform(-cfg.scale, cfg.scale, 3)
    shifts = rng.uniform(-cfg.translate_vox, cfg.translate_vox, 3)
    coeffs = rng.uniform(0.0, cfg.bias_field_coeff, n_terms)
    gamma = rng.uniform(*cfg.contrast_gamma)
    factor = 1.0 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale)
    std = rng.uniform(0.0, cfg.noise_std)
    noise_seed = int(rng.integers(2**62))
    return _Draws(
        theta=(affine_theta(_rotation(angles) @ np.diag(scales), shifts, shape)
               if apply[0] else None),
        flip=bool(apply[1]), bias=coeffs if apply[2] else None,
        gamma=float(gamma) if apply[3] else None, scale=float(factor) if apply[4] else None,
        noise_std=float(std) if apply[5] else None, noise_seed=noise_seed)


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
        if cfg is not None and not isinstance(cfg, AugmentConfig):
            raise TypeError(f"cfg must be an AugmentConfig or None, got {type(cfg).__name__}")
        self.cfg = cfg
        self.n_views = n_views
        self._basis: dict[tuple[tuple[int, ...], str], Tensor] = {}

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
        return self.batch(image.detach().to("cpu", torch.float32)[None], [seed])[0]

    def _bias_basis(self, shape: tuple[int, int, int], device: torch.device) -> Tensor:
        key = (shape, str(device))
        if key not in self._basis:
            self._basis[key] = torch.from_numpy(_legendre_basis(shape, 3)).to(device)
        return self._basis[key]

    @torch.no_grad()
    def batch(self, images: Tensor, seeds: Sequence[int] | Tensor) -> Tensor:
        """Views of a batch: ``images (B, C, D, H, W)`` -> ``(B, n_views, C, D, H, W)``.

        The views of sample ``b`` depend on ``seeds[b]`` alone (not on the other samples of
        the batch, their order, or the device's other work), drawn in one seeded stream:
        the affine, the flip, the bias field, the gamma, the scaling, the noise.
        """
        if not isinstance(images, Tensor) or images.ndim != 5:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"images must be a tensor of shape (B, C, D, H, W), got {shape}")
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        if len(seeds) != images.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {images.shape[0]} images")
        n, v = images.shape[0], self.n_views
        x = images.float().unsqueeze(1).expand(n, v, *images.shape[1:])
        x = x.reshape(n * v, *images.shape[1:]).clone()  # (B * V, C, D, H, W), sample-major
        if self.cfg is None:
            return x.view(n, v, *images.shape[1:])
        shape = tuple(int(d) for d in images.shape[2:])
        basis = self._bias_basis(shape, x.device)  # (T, D, H, W)
        draws = []
        for seed in seeds:  # successive views of a sample: successive draws of its stream
            rng = np.random.default_rng(seed)
            draws += [_draw(self.cfg, rng, shape, basis.shape[0]) for _ in range(v)]
        rows = [i for i, d in enumerate(draws) if d.theta is not None]
        if rows:
            theta = torch.as_tensor(np.stack([draws[i].theta for i in rows]),
                                    dtype=torch.float32, device=x.device)
            grid = F.affine_grid(theta, [len(rows), *x.shape[1:]], align_corners=False)
            x[rows] = F.grid_sample(x[rows], grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)
        rows = [i for i, d in enumerate(draws) if d.flip]
        if rows:
            x[rows] = x[rows].flip(2 + self.cfg.flip_axis)
        for i, d in enumerate(draws):  # one view at a time: a batched product's summation
            if d.bias is not None:    # order would depend on how many views it holds
                coeffs = torch.as_tensor(d.bias, dtype=torch.float32, device=x.device)  # (T,)
                x[i] *= torch.tensordot(coeffs, basis, dims=1).exp()  # (D, H, W)
        for i, d in enumerate(draws):  # per view: vectorised pow rounds by lane position
            if d.gamma is not None:
                low, high = x[i].amin(), x[i].amax()
                x[i] = ((x[i] - low) / (high - low + 1e-7)).pow(d.gamma) * (high - low) + low
            if d.scale is not None:
                x[i] *= d.scale
        for i, d in enumerate(draws):
            if d.noise_std is not None:
                generator = torch.Generator(device=x.device).manual_seed(d.noise_seed)
                x[i] += d.noise_std * torch.randn(x.shape[1:], generator=generator,
                                                  device=x.device)
        return x.view(n, v, *images.shape[1:])
