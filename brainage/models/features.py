"""The encoder's features of the scans a model predicts, captured in the same forward pass.

:func:`brainage.models.train.encode` runs the encoder alone; when the predicted age is needed
too (evaluation, ``brainage predict``), a second pass would double the cost.
:func:`capture_features` records the encoder's output with a forward hook while the model
predicts, so the age and the features come from one pass and the age is computed exactly as
without the hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from torch import Tensor, nn

__all__ = ["FeatureCapture", "capture_features"]


class FeatureCapture:
    """The encoder outputs recorded by :func:`capture_features`, one entry per forward pass."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def record(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        """Forward hook: keep ``output : Tensor, shape (B, D)`` as float64 on the CPU."""
        if output.ndim != 2:
            raise ValueError(f"the encoder's output must be pooled features of shape (B, D), "
                             f"got {tuple(output.shape)}")
        self.batches.append(output.detach().float().cpu().numpy().astype(np.float64))

    def array(self) -> np.ndarray:
        """Every recorded row in call order, shape (N, D); (0, 0) when nothing was recorded."""
        return np.concatenate(self.batches) if self.batches else np.zeros((0, 0))


@contextmanager
def capture_features(model: nn.Module) -> Iterator[FeatureCapture]:
    """Meanwhile, record the output of ``model.encoder`` at every forward pass of ``model``.

    Parameters
    ----------
    model : BrainAgeModel
        A model with an ``encoder`` that returns pooled features ``(B, D)``.

    Yields
    ------
    FeatureCapture
        Its :meth:`FeatureCapture.array` holds the features in the order of the passes (the
        dataset order of :func:`brainage.models.train.predict`).
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"model must have an encoder module (a BrainAgeModel), got "
                        f"{type(model).__name__}")
    capture = FeatureCapture()
    handle = encoder.register_forward_hook(capture.record)
    try:
        yield capture
    finally:
        handle.remove()
