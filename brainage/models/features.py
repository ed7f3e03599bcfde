"""Feature statistics of the scans a model predicts, captured in the same forward pass.

The out-of-distribution score (:class:`brainage.analysis.uncertainty.FeatureOOD`) compares a
scan with the training scans in the space of the encoder's feature maps. The age head reads
only the last stage's pooled features, which a model trained for age is free to make blind to
what does not change age (a noise texture, a reversed contrast); the early stages keep it. So
the features are those of all four stages of the ResNet encoder (``layer1`` ... ``layer4``),
each feature map summarised by its mean and its standard deviation over space: the feature
ensemble of Lee et al. [1]_. The last stage's means are the pooled features the head reads
(:func:`brainage.models.train.encode`).

:func:`capture_features` records them with forward hooks while the model predicts, so the age
and the features come from one pass (:func:`brainage.models.train.encode` followed by a
prediction would double the cost), and the age is computed exactly as without the hooks.

References
----------
.. [1] Lee, K., Lee, K., Lee, H., Shin, J. (2018). A simple unified framework for detecting
   out-of-distribution samples and adversarial attacks. NeurIPS 2018, 7167-7177.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["FEATURE_STAGES", "FeatureCapture", "capture_features", "feature_size"]

#: Stages of the encoder whose feature maps are summarised, in order.
FEATURE_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _stages(model: nn.Module) -> list[nn.Module]:
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"model must have an encoder module (a BrainAgeModel), got "
                        f"{type(model).__name__}")
    missing = [name for name in FEATURE_STAGES if not isinstance(getattr(encoder, name, None),
                                                                 nn.Module)]
    if missing:
        raise TypeError(f"the model's encoder lacks the stage(s) {missing} (a MONAI ResNet "
                        f"has {list(FEATURE_STAGES)})")
    return [getattr(encoder, name) for name in FEATURE_STAGES]


def feature_size(model: nn.Module) -> int:
    """Length of the captured feature vector: 2 x the channels of the four stages."""
    channels = 0
    for stage in _stages(model):
        norms = [m for m in stage.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise TypeError("cannot read the channels of an encoder stage without batch norm")
        channels += norms[-1].num_features
    return 2 * channels


class FeatureCapture:
    """The feature statistics recorded by :func:`capture_features`, one row per scan."""

    def __init__(self, n_stages: int) -> None:
        self.n_stages = n_stages
        self.batches: list[np.ndarray] = []
        self._pending: list[Tensor] = []

    def hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        """Forward hook of a stage: keep ``output : Tensor, shape (B, C, D, H, W)`` summarised
        as channel means and standard deviations over space, shape (B, 2C)."""
        if output.ndim != 5:
            raise ValueError(f"an encoder stage must output (B, C, D, H, W) feature maps, got "
                             f"shape {tuple(output.shape)}")
        maps = output.detach().flatten(2)  # (B, C, D, H, W) -> (B, C, DHW)
        if maps.dtype != torch.float32:  # bf16 under CUDA autocast
            maps = maps.float()
        std, mean = torch.std_mean(maps, dim=2, unbiased=False)  # 2 x (B, C), one pass
        self._pending += [mean, std]
        if len(self._pending) == 2 * self.n_stages:  # the last stage of one forward pass
            self.batches.append(torch.cat(self._pending, dim=1).cpu().numpy())  # (B, F)
            self._pending = []

    def array(self) -> np.ndarray:
        """Every recorded row in call order, shape (N, F) (:func:`feature_size`): per stage the
        channel means, then the channel standard deviations; (0, 0) when nothing was recorded."""
        if not self.batches:
            return np.zeros((0, 0))
        return np.concatenate(self.batches).astype(np.float64)


@contextmanager
def capture_features(model: nn.Module) -> Iterator[FeatureCapture]:
    """Meanwhile, record the feature statistics of every scan ``model`` predicts.

    Parameters
    ----------
    model : BrainAgeModel
        A model whose encoder has the stages :data:`FEATURE_STAGES`.

    Yields
    ------
    FeatureCapture
        Its :meth:`FeatureCapture.array` holds the scans' features in the order of the passes
        (the dataset order of :func:`brainage.models.train.predict`).
    """
    stages = _stages(model)
    capture = FeatureCapture(len(stages))
    handles = [stage.register_forward_hook(capture.hook) for stage in stages]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
