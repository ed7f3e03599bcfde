"""3D ResNet encoder (MONAI) and the linear age regressor.

The encoder is MONAI's :class:`monai.networks.nets.ResNet` without its classification layer, so
it returns globally average-pooled features of shape ``(B, D)`` with no normalisation, as in the
reference Rank-N-Contrast method. :class:`BrainAgeModel` puts a :class:`Regressor` on top and
maps its output back to years with the age mean and scale of the training set (stored as
buffers, so they travel with every checkpoint).

Age targets are *normalised* (``(age - mean) / scale`` with the training mean and standard
deviation): the L1 loss then has a scale near 1 whatever the age range, so one learning rate
serves both profiles, and a zero-initialised head starts at the mean predictor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from monai.networks.nets.resnet import ResNet, resnet_params
from torch import Tensor, nn

from brainage._utils import check_choice, check_int, dataclass_from_dict

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_PRESETS",
    "BrainAgeModel",
    "ModelConfig",
    "Regressor",
    "build_encoder",
    "build_model",
    "disable_inplace_relu",
]

#: ResNet depths MONAI defines (``monai.networks.nets.resnet.resnet_params``).
DEPTHS = tuple(sorted(int(name.removeprefix("resnet")) for name in resnet_params))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the 3D ResNet encoder.

    Parameters
    ----------
    depth : int, default=10
        ResNet depth, one of MONAI's (10, 18, 34, 50, 101, 152, 200); 10-34 use basic blocks,
        50 and deeper bottleneck blocks (feature size ``4 * widths[-1]``).
    widths : tuple of 4 int, default=(16, 32, 64, 128)
        Channels of the four stages (ResNet-18 of the paper profile: 64, 128, 256, 512).
    conv1_kernel : int, default=7
        Kernel size of the stem convolution (odd).
    conv1_stride : int, default=2
        Stride of the stem convolution; 2 is about 10x faster than 1 on CPU at the same input.
    no_max_pool : bool, default=False
        Skip the stem's 3x3x3 max-pool (stride 2).
    shortcut_type : str, default="B"
        Residual shortcut of downsampling blocks: "B" (1x1x1 convolution + batch norm) or "A"
        (zero-padded identity). MONAI's "A" shortcut passes ``out.data`` and so stops the
        gradient along that path; "B" is the default here for that reason.
    in_channels : int, default=1
        Input channels (1 for a T1w scan).
    """

    depth: int = 10
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    conv1_kernel: int = 7
    conv1_stride: int = 2
    no_max_pool: bool = False
    shortcut_type: str = "B"
    in_channels: int = 1

    def __post_init__(self) -> None:
        check_choice("ModelConfig.depth", self.depth, DEPTHS)
        widths = tuple(self.widths) if isinstance(self.widths, (list, tuple)) else None
        if widths is None or len(widths) != 4 or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
        ):
            raise ValueError(
                f"ModelConfig.widths must be 4 positive integers (one per ResNet stage), "
                f"got {self.widths!r}"
            )
        object.__setattr__(self, "widths", widths)
        for name in ("conv1_kernel", "conv1_stride", "in_channels"):
            check_int(f"ModelConfig.{name}", getattr(self, name), low=1)
        if self.conv1_kernel % 2 == 0:
            raise ValueError(f"ModelConfig.conv1_kernel must be odd, got {self.conv1_kernel}")
        check_choice("ModelConfig.shortcut_type", self.shortcut_type, ("A", "B"))

    @property
    def feature_dim(self) -> int:
        """Size D of the pooled feature vector."""
        block = resnet_params[f"resnet{self.depth}"][0]
        return self.widths[-1] * (4 if block == "bottleneck" else 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary (lists, ints, str) for checkpoints and JSON."""
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping (checkpoint metadata, a profile); unknown keys are errors."""
        return dataclass_from_dict(cls, values)


#: Named encoder settings of the study's profiles. ``quick`` is sized for a CPU build
#: (see benchmarks/bench_train.py); ``paper`` is the ResNet-18 of the reference study.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(depth=10, widths=(4, 8, 16, 32)),
    "quick": ModelConfig(depth=10, widths=(16, 32, 64, 128)),
    "paper": ModelConfig(depth=18, widths=(64, 128, 256, 512)),
}


def disable_inplace_relu(model: nn.Module) -> int:
    """Set ``inplace=False`` on every in-place activation of ``model``.

    MONAI's ResNet blocks build ``ReLU(inplace=True)`` whatever ``act`` the network receives.
    A full backward hook (as MONAI's Grad-CAM registers) fails on a layer whose output an
    in-place ReLU then overwrites, so the study's models never keep in-place activations.

    Parameters
    ----------
    model : nn.Module
        Changed in place.

    Returns
    -------
    int
        The number of activations changed.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
                               nn.SiLU, nn.Hardtanh, nn.Mish)) and module.inplace:
            module.inplace = False
            changed += 1
    return changed


def build_encoder(cfg: ModelConfig) -> nn.Module:
    """Build MONAI's 3D ResNet as a feature encoder.

    Parameters
    ----------
    cfg : ModelConfig
        The architecture.

    Returns
    -------
    nn.Module
        Maps ``(B, C, D, H, W)`` to pooled features ``(B, cfg.feature_dim)``; no in-place
        activations (:func:`disable_inplace_relu`).

    References
    ----------
    .. [1] He, K., Zhang, X., Ren, S., Sun, J. (2016). Deep Residual Learning for Image
       Recognition. CVPR 2016.
    .. [2] Hara, K., Kataoka, H., Satoh, Y. (2018). Can Spatiotemporal 3D CNNs Retrace the
       History of 2D CNNs and ImageNet? CVPR 2018.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    block, layers, _, _, _ = resnet_params[f"resnet{cfg.depth}"]
    encoder = ResNet(
        block=block,
        layers=list(layers),
        block_inplanes=list(cfg.widths),
        spatial_dims=3,
        n_input_channels=cfg.in_channels,
        conv1_t_size=cfg.conv1_kernel,
        conv1_t_stride=cfg.conv1_stride,
        no_max_pool=cfg.no_max_pool,
        shortcut_type=cfg.shortcut_type,
        feed_forward=False,  # no fc: forward returns the pooled (B, D) features
        bias_downsample=False,  # a batch norm follows the shortcut convolution
        act=("relu", {"inplace": False}),
    )
    disable_inplace_relu(encoder)  # the blocks ignore ``act`` above
    return encoder


class Regressor(nn.Module):
    """Linear head mapping pooled features to a normalised age.

    The features are first standardised with fixed buffers (``feature_mean``, ``feature_std``;
    identity until :meth:`set_standardisation`), so a head fitted on a frozen encoder sees
    features of unit scale; the map stays affine.

    Parameters
    ----------
    in_features : int
        Feature size D.

    Notes
    -----
    Weights and bias start at zero, so an untrained head predicts the training mean age.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        check_int("in_features", in_features, low=1)
        self.linear = nn.Linear(in_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

    def set_standardisation(self, features: Tensor) -> None:
        """Set the buffers from training ``features : Tensor, shape (N, D)``.

        The standard deviation is floored at 1e-6 (constant features stay finite).
        """
        if features.ndim != 2 or features.shape[1] != self.linear.in_features:
            raise ValueError(f"features must have shape (N, {self.linear.in_features}), "
                             f"got {tuple(features.shape)}")
        features = features.detach().float()
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0, unbiased=False).clamp_min(1e-6))

    def forward(self, features: Tensor) -> Tensor:
        """Map ``features : Tensor, shape (B, D)`` to normalised ages of shape (B,)."""
        if features.ndim != 2 or features.shape[1] != self.linear.in_features:
            raise ValueError(
                f"Regressor expects features of shape (B, {self.linear.in_features}), "
                f"got {tuple(features.shape)}"
            )
        standardised = (features - self.feature_mean) / self.feature_std  # (B, D)
        return self.linear(standardised).squeeze(1)  # (B, 1) -> (B,)


class BrainAgeModel(nn.Module):
    """Encoder, linear head and the age normalisation: predicts age in years.

    Parameters
    ----------
    encoder : nn.Module
        Maps ``(B, C, D, H, W)`` to features ``(B, D)`` (:func:`build_encoder`).
    head : Regressor
        Maps features to normalised ages ``(B,)``.
    age_mean : float, default=0.0
        Training mean age (years), added back to the head's output.
    age_scale : float, default=1.0
        Training age standard deviation (years, > 0), the head's unit.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, age_mean: float = 0.0,
                 age_scale: float = 1.0) -> None:
        super().__init__()
        if not math.isfinite(age_mean):
            raise ValueError(f"age_mean must be finite, got {age_mean!r}")
        if not (math.isfinite(age_scale) and age_scale > 0):
            raise ValueError(f"age_scale must be a finite number > 0, got {age_scale!r}")
        self.encoder = encoder
        self.head = head
        self.register_buffer("age_mean", torch.tensor(float(age_mean), dtype=torch.float64))
        self.register_buffer("age_scale", torch.tensor(float(age_scale), dtype=torch.float64))

    def normalise_age(self, age: Tensor) -> Tensor:
        """Years to the head's unit: ``(age - mean) / scale``."""
        return ((age.double() - self.age_mean) / self.age_scale).float()

    def forward_normalised(self, x: Tensor) -> Tensor:
        """Predicted normalised age, shape (B,), for ``x : Tensor, shape (B, C, D, H, W)``."""
        if x.ndim != 5:
            raise ValueError(f"BrainAgeModel expects input of shape (B, C, D, H, W), got "
                             f"{tuple(x.shape)}")
        return self.head(self.encoder(x)).float()

    def forward(self, x: Tensor) -> Tensor:
        """Predicted age in years, shape (B,), for ``x : Tensor, shape (B, C, D, H, W)``."""
        return (self.forward_normalised(x) * self.age_scale.float()) + self.age_mean.float()


def build_model(cfg: ModelConfig, age_mean: float = 0.0, age_scale: float = 1.0) -> BrainAgeModel:
    """Build a :class:`BrainAgeModel` (encoder of ``cfg``, zero-initialised linear head)."""
    encoder = build_encoder(cfg)
    return BrainAgeModel(encoder, Regressor(cfg.feature_dim), age_mean, age_scale)
