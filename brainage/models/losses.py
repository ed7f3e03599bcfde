"""Rank-N-Contrast loss for learning representations ordered by a continuous label (age).

``RnCLoss`` is a vectorised, numerically stable evaluation of the loss of Zha et al. (2023);
``rnc_loss_reference`` evaluates the same definition directly (one loop over columns, float64)
and serves as the ground truth in tests and ``benchmarks/bench_losses.py``.

MONAI ships ``ContrastiveLoss`` (SimCLR) but no ranking-aware contrastive loss, so this module
writes it by hand.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["RnCLoss", "rnc_loss_reference"]


def _check_inputs(features: object, labels: object) -> None:
    """Raise ``TypeError``/``ValueError`` naming what was received for bad loss inputs."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if features.ndim != 3 or features.shape[1] != 2:
        raise ValueError(
            "features must have shape (N, 2, D) (two augmented views of N samples), "
            f"got shape {tuple(features.shape)}"
        )
    n_samples = features.shape[0]
    if n_samples < 1 or features.shape[2] < 1:
        raise ValueError(
            "features must hold at least one sample and one feature, "
            f"got shape {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got dtype {features.dtype}")
    label_ok = labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)
    if not label_ok or labels.shape[0] != n_samples:
        raise ValueError(
            f"labels must have shape ({n_samples},) or ({n_samples}, 1) to match features of shape "
            f"{tuple(features.shape)}, got shape {tuple(labels.shape)}"
        )


def _check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float or raise ``ValueError`` if it is not finite and > 0."""
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def _stack_views(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Stack the two views as in Zha et al.: all first views, then all second views."""
    z = torch.cat([features[:, 0], features[:, 1]], dim=0)  # (N, 2, D) -> (2N, D)
    y = labels.reshape(-1)  # (N,) or (N, 1) -> (N,)
    if not y.is_floating_point():
        y = y.to(features.dtype)
    y = y.repeat(2)  # (N,) -> (2N,), matching the order of z
    return z, y


def _pairwise(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Euclidean feature distances and absolute label differences, both of shape (n, n).

    ``torch.cdist`` without the matrix-multiplication shortcut keeps full precision and has a
    zero (sub)gradient where two rows coincide (the diagonal, or identical views), so no NaN.
    """
    distances = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")  # (n, n)
    label_diffs = (y[:, None] - y[None, :]).abs()  # (n, 1) - (1, n) -> (n, n)
    return distances, label_diffs


def _drop_diagonal(x: Tensor) -> Tensor:
    """Remove the diagonal of a square matrix: (n, n) -> (n, n - 1), row order kept."""
    n = x.shape[0]
    # Row-major trick: after the first element, the diagonal recurs every n + 1 elements.
    return x.flatten()[1:].view(n - 1, n + 1)[:, :-1].reshape(n, n - 1)


class RnCLoss(nn.Module):
    r"""Rank-N-Contrast loss (Zha et al., 2023).

    The two views of the ``N`` samples are stacked into :math:`n = 2N` embeddings
    :math:`z_1, \dots, z_n` (all first views, then all second views) with labels :math:`y`
    repeated accordingly. With :math:`s_{ij} = -\lVert z_i - z_j \rVert_2 / \tau` and
    :math:`d_{ij} = |y_i - y_j|`,

    .. math::

        L = \frac{1}{n(n-1)} \sum_{i=1}^{n} \sum_{j \ne i}
            -\log \frac{\exp s_{ij}}{\sum_{k \ne i,\ d_{ik} \ge d_{ij}} \exp s_{ik}} .

    For an anchor :math:`i` and a positive :math:`j`, every :math:`k` at least as far from
    :math:`i` in label space (ties included) is a negative. The loss therefore pulls together
    embeddings in the order of their labels.

    The evaluation is vectorised in :math:`O(n^2 \log n)`: each anchor's row is sorted by
    decreasing label distance, a running log-sum-exp of the logits gives every possible
    denominator, and each pair reads the value at the last position of its tie group
    (found with ``searchsorted``). Log-sum-exp keeps the loss finite for large distances or a
    small temperature, where the published implementation's ``exp`` underflows to ``log(0)``.

    Parameters
    ----------
    temperature : float, default=2.0
        :math:`\tau`, a finite number > 0 (Zha et al. use 2.0).

    References
    ----------
    .. [1] Zha, K., Cao, P., Son, J., Yang, Y., Katabi, D. (2023). Rank-N-Contrast: Learning
       Continuous Representations for Regression. Advances in Neural Information Processing
       Systems 36 (NeurIPS 2023). arXiv:2210.01189.

    Examples
    --------
    >>> loss_fn = RnCLoss(temperature=2.0)
    >>> features = torch.randn(8, 2, 16)  # 8 scans, 2 augmented views, 16 features
    >>> ages = torch.rand(8) * 60 + 20
    >>> loss = loss_fn(features, ages)
    """

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Return the mean Rank-N-Contrast loss.

        Parameters
        ----------
        features : Tensor, shape (N, 2, D)
            Embeddings of two augmented views of N samples (floating point).
        labels : Tensor, shape (N,) or (N, 1)
            The continuous label (age) of each sample.

        Returns
        -------
        Tensor, shape ()
            The loss, a scalar in the dtype of ``features``.
        """
        _check_inputs(features, labels)
        z, y = _stack_views(features, labels)  # (n, D), (n,)
        n = z.shape[0]
        distances, label_diffs = _pairwise(z, y)  # (n, n), (n, n)
        logits = _drop_diagonal(-distances / self.temperature)  # (n, n - 1)
        label_diffs = _drop_diagonal(label_diffs)  # (n, n - 1)

        # Sort each anchor's candidates by decreasing label distance.
        order = torch.argsort(label_diffs, dim=1, descending=True)  # (n, n - 1)
        sorted_diffs = label_diffs.gather(1, order)  # (n, n - 1), descending per row
        log_cumsum = torch.logcumsumexp(logits.gather(1, order), dim=1)  # (n, n - 1)

        # count[i, j] = #{k != i : d_ik >= d_ij}; ascending -d makes this a right-sided search,
        # which lands after the last member of the tie group of d_ij.
        ascending = (-sorted_diffs).contiguous()  # (n, n - 1)
        count = torch.searchsorted(ascending, (-label_diffs).contiguous(), right=True)  # (n, n - 1)
        log_denominator = log_cumsum.gather(1, count - 1)  # (n, n - 1)
        loss = (log_denominator - logits).sum() / (n * (n - 1))
        return loss


def rnc_loss_reference(features: Tensor, labels: Tensor, temperature: float = 2.0) -> Tensor:
    """Evaluate the Rank-N-Contrast loss directly, in float64, one column at a time.

    This follows the loop of the authors' implementation (one positive column per step, a mask
    of negatives per row) with ``logsumexp`` in place of ``log(sum(exp))``. It costs
    :math:`O(n^3)` and exists to check :class:`RnCLoss`. It is differentiable, but unlike
    :class:`RnCLoss` its gradient is NaN where two distinct embeddings coincide.

    Parameters
    ----------
    features : Tensor, shape (N, 2, D)
        Embeddings of two augmented views of N samples.
    labels : Tensor, shape (N,) or (N, 1)
        The continuous label of each sample.
    temperature : float, default=2.0
        The temperature, a finite number > 0.

    Returns
    -------
    Tensor, shape ()
        The loss in float64.

    References
    ----------
    .. [1] Zha, K., Cao, P., Son, J., Yang, Y., Katabi, D. (2023). Rank-N-Contrast: Learning
       Continuous Representations for Regression. NeurIPS 2023. arXiv:2210.01189.
    """
    _check_inputs(features, labels)
    temperature = _check_temperature(temperature)
    z, y = _stack_views(features.to(torch.float64), labels.to(torch.float64))  # (n, D), (n,)
    n = z.shape[0]
    diffs = z[:, None, :] - z[None, :, :]  # (n, 1, D) - (1, n, D) -> (n, n, D)
    # Mask the diagonal before the square root: its gradient is undefined at zero.
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)  # (n, n)
    squared = diffs.pow(2).sum(dim=-1)[off_diagonal].view(n, n - 1)  # (n, n - 1)
    logits = -squared.sqrt() / temperature  # (n, n - 1)
    label_diffs = (y[:, None] - y[None, :]).abs()[off_diagonal].view(n, n - 1)  # (n, n - 1)

    total = torch.zeros((), dtype=torch.float64)
    for k in range(n - 1):
        positive_diffs = label_diffs[:, k : k + 1]  # (n, 1)
        negatives = label_diffs >= positive_diffs  # (n, n - 1), includes column k and ties
        masked = logits.masked_fill(~negatives, -math.inf)  # (n, n - 1)
        log_probs = logits[:, k] - torch.logsumexp(masked, dim=1)  # (n,)
        total = total - log_probs.sum()
    return total / (n * (n - 1))
