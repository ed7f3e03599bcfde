r"""Saliency for brain-age regression: integrated gradients, Grad-RAM, group maps, ground truth.

Integrated gradients (Sundararajan et al. 2017) is the study's signed attribution. From a
reference volume :math:`x'` (a typical training scan of the mean age), the attribution of voxel
:math:`v` is
:math:`(x_v - x'_v) \int_0^1 \partial f(x' + \alpha (x - x')) / \partial x_v \, d\alpha`, and the
attributions add up to :math:`f(x) - f(x')` (completeness). So a positive voxel is one whose
difference from the reference scan pushes the predicted age above the reference's prediction,
a negative one pulls it below; a subject predicted older than the reference has mostly
positive attribution. The maps have the model's input grid, so they resolve whatever the input
resolves.

Grad-RAM is Grad-CAM (Selvaraju et al.) with the predicted age as the score: the weight of
each channel of a chosen layer is the spatial mean of the gradient of the predicted age with
respect to that channel's feature map, and the map is the weighted sum of the feature maps,
upsampled (trilinear) to the input grid. Its sign has no reference point: the feature maps are
ReLU outputs, so the map is positive wherever the positively weighted channels are active,
whatever the predicted age (measured on the quick models: 92-99 % of voxels positive for L1 at
every age). Its resolution is that of the layer (:func:`layer_shape`). The rectified, per-subject
min-max normalised form equals :class:`monai.visualize.GradCAM` on a one-output head (with a
``[0, 1]`` normaliser instead of MONAI's default, which maps max to 0 and min to 1).

The rest of the module turns maps into results: NIfTI files in template space
(:func:`save_map`), group averages (:func:`group_average`), a table per atlas region
(:func:`region_summary`) and, on the simulated cohort, how much attribution falls where an
effect was simulated against tissue-matched control voxels (:func:`enrichment_auc`), per
subject (:func:`subject_enrichment`) and between models or groups of subjects
(:func:`compare_enrichment`).

References
----------
.. [1] Sundararajan M., Taly A., Yan Q. (2017). Axiomatic attribution for deep networks. ICML,
   3319-3328. arXiv:1703.01365.
.. [2] Selvaraju R. R. et al. (2017). Grad-CAM: visual explanations from deep networks via
   gradient-based localization. ICCV, 618-626. arXiv:1610.02391.
.. [3] Adebayo J. et al. (2018). Sanity checks for saliency maps. NeurIPS, 9505-9515.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import Tensor, nn

from brainage._utils import check_choice, check_int

logger = logging.getLogger(__name__)

__all__ = [
    "GROUP_NORMALISATIONS",
    "MAP_MEASURES",
    "age_window_mean",
    "attribution_spread",
    "compare_enrichment",
    "enrichment_auc",
    "grad_ram",
    "gradram_sign_table",
    "gradram_truth_table",
    "group_average",
    "holm",
    "integrated_gradients",
    "layer_shape",
    "map_measures",
    "median_interval",
    "offset_category",
    "paired_differences",
    "reference_prediction_table",
    "region_summary",
    "save_attribution_maps",
    "save_map",
    "save_subject_maps",
    "subject_enrichment",
    "truth_test_table",
    "typical_scan",
]

#: Per-subject normalisations accepted by :func:`group_average`.
GROUP_NORMALISATIONS = ("none", "maxabs")

MapLike = Tensor | np.ndarray | nib.spatialimages.SpatialImage | str | PathLike


# --- Grad-RAM -------------------------------------------------------------------------------------


def _find_layer(model: nn.Module, layer: str) -> nn.Module:
    """Return the submodule named ``layer``, or raise suggesting the closest names."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
    modules = {name: module for name, module in model.named_modules() if name}
    if layer in modules:
        return modules[layer]
    close = difflib.get_close_matches(layer, list(modules), n=3, cutoff=0.5)
    hint = (
        f"closest names: {', '.join(map(repr, close))}"
        if close
        else f"top-level names: {', '.join(repr(n) for n in modules if '.' not in n)}"
    )
    raise ValueError(
        f"layer {layer!r} is not a module of {type(model).__name__} (see model.named_modules()); "
        f"{hint}"
    )


def _check_image_batch(x: Any) -> Tensor:
    """Validate ``x`` as a float tensor of shape (B, C, D, H, W)."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"x must be a torch.Tensor of shape (B, C, D, H, W), got {type(x).__name__}"
        )
    if x.ndim != 5:
        raise ValueError(
            f"x must have shape (B, C, D, H, W) (5 dims), got shape {tuple(x.shape)} "
            f"({x.ndim} dims);"
            " add batch and channel axes to a single volume with x[None, None]"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    return x


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore every submodule's own train/eval flag afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _activations_and_gradients(
    model: nn.Module, x: Tensor, layer: str
) -> tuple[Tensor, Tensor]:
    """Feature maps of ``layer`` and the gradient of the predicted age with respect to them.

    Written here rather than with MONAI's ``ModelWithHooks`` because that wrapper leaves its
    hooks on the model, zeroes the parameters' ``.grad`` (side effects), flips ``inplace`` flags
    for good and expects (B, classes) logits. Here a forward hook keeps the layer's output and
    hands a clone downstream, so in-place operations after the layer (MONAI ResNet's in-place
    ReLU and ``out += residual``) cannot overwrite the kept tensor, and ``torch.autograd.grad``
    differentiates with respect to it only: no parameter gradient is accumulated.
    """
    module = _find_layer(model, layer)
    captured: list[Any] = []

    def keep_output(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        captured.append(output)
        return output.clone() if isinstance(output, Tensor) else output

    handle = module.register_forward_hook(keep_output)
    try:
        # enable_grad: the caller may be inside torch.no_grad(); a leaf input requiring grad
        # makes the graph exist even when every parameter is frozen (requires_grad=False).
        with torch.enable_grad(), _eval_mode(model):
            prediction = model(x.detach().requires_grad_(True))
            activations = _single_feature_map(captured, layer, x)
            score = _age_score(prediction, x.shape[0])
            (gradients,) = torch.autograd.grad(score.sum(), activations, allow_unused=True)
    finally:
        handle.remove()
    if gradients is None:
        raise ValueError(
            f"the predicted age does not depend on layer {layer!r}: choose another layer"
        )
    return activations.detach(), gradients.detach()


def _single_feature_map(captured: list[Any], layer: str, x: Tensor) -> Tensor:
    """Check that ``layer`` ran once and gave a differentiable (B, C, d, h, w) feature map."""
    if len(captured) != 1:
        raise ValueError(
            f"layer {layer!r} ran {len(captured)} times in one forward pass; Grad-RAM needs a "
            "layer that runs exactly once"
        )
    output = captured[0]
    if not isinstance(output, Tensor) or output.ndim != x.ndim or output.shape[0] != x.shape[0]:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"layer {layer!r} outputs {shape}; Grad-RAM needs a feature map of shape "
            f"(B={x.shape[0]}, C, d, h, w): choose a convolutional stage such as the encoder's last"
        )
    if not output.requires_grad:
        raise ValueError(f"the output of layer {layer!r} is not part of the autograd graph")
    return output


def _age_score(prediction: Any, batch: int) -> Tensor:
    """Return the predicted ages as (B,), accepting model outputs of shape (B,) or (B, 1)."""
    shape = tuple(prediction.shape) if isinstance(prediction, Tensor) else None
    if shape not in ((batch,), (batch, 1)):
        raise ValueError(
            f"model(x) must return one predicted age per subject, shape ({batch},) or ({batch}, 1);"
            f" got {shape if shape is not None else type(prediction).__name__}. Wrap a "
            "multi-output model so that it returns the age only"
        )
    return prediction.reshape(batch)  # (B, 1) or (B,) -> (B,)


def _minmax_per_subject(maps: Tensor) -> Tensor:
    """Scale each subject's map to [0, 1]; a constant map becomes 0 (as MONAI's rescale does)."""
    flat = maps.reshape(maps.shape[0], -1)  # (B, 1, D, H, W) -> (B, D*H*W)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0)
    return scaled.reshape(maps.shape)  # (B, D*H*W) -> (B, 1, D, H, W)


def grad_ram(model: nn.Module, x: Tensor, layer: str, signed: bool = True) -> Tensor:
    """Gradient-weighted regression activation map (Grad-CAM for a predicted age).

    Parameters
    ----------
    model : nn.Module
        Maps ``x`` to a predicted age of shape (B,) or (B, 1). It runs in eval mode (batch norm
        uses its running statistics, so subjects in a batch do not interact); every submodule's
        train/eval flag, the ``requires_grad`` flags and the parameters' ``.grad`` are left as
        they were.
    x : Tensor, shape (B, C, D, H, W)
        Input images, on the model's device.
    layer : str
        Name of the module (as in ``model.named_modules()``) whose output feature maps, shape
        (B, K, d, h, w), are weighted. It must run once per forward pass; the last convolutional
        stage (``"layer4"`` of a MONAI ResNet) is the usual choice, earlier ones are finer.
    signed : bool, default=True
        True: the signed map, in the predicted age's units per unit of feature. Its sign has
        no reference point (the features are ReLU outputs): it does not say whether a region
        raises or lowers the prediction; use :func:`integrated_gradients` for that. False: the
        rectified map (ReLU before upsampling), min-max normalised to [0, 1] per subject, which
        equals ``monai.visualize.GradCAM`` with a [0, 1] normaliser on a one-output head.

    Returns
    -------
    maps : Tensor, shape (B, 1, D, H, W)
        Detached, on ``x``'s device, upsampled with trilinear interpolation
        (``align_corners=False``, as MONAI's ``default_upsampler``).

    Raises
    ------
    ValueError
        Unknown ``layer`` (the message lists the closest names), ``x`` not 5-D, a model output
        other than (B,) or (B, 1), or a layer whose output is not a (B, K, d, h, w) feature map.
    TypeError
        ``model`` not an ``nn.Module`` or ``x`` not a floating-point tensor.

    References
    ----------
    .. [1] Selvaraju R. R. et al. (2017). Grad-CAM: visual explanations from deep networks via
       gradient-based localization. ICCV, 618-626. arXiv:1610.02391.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = _check_image_batch(x)
    activations, gradients = _activations_and_gradients(model, x, layer)
    b, k = gradients.shape[:2]
    weights = gradients.reshape(b, k, -1).mean(dim=2)  # (B, K, d, h, w) -> (B, K, d*h*w) -> (B, K)
    weights = weights.reshape(b, k, 1, 1, 1)  # (B, K) -> (B, K, 1, 1, 1)
    maps = (weights * activations).sum(dim=1, keepdim=True)  # (B, 1, d, h, w)
    if not signed:
        maps = F.relu(maps)
    maps = F.interpolate(maps, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
    if not signed:
        maps = _minmax_per_subject(maps)
    logger.debug("Grad-RAM on layer %r: features %s -> maps %s", layer, tuple(activations.shape),
                 tuple(maps.shape))
    return maps


def layer_shape(model: nn.Module, x: Tensor, layer: str) -> tuple[int, ...]:
    """Spatial shape (d, h, w) of ``layer``'s feature maps for input ``x`` (B, C, D, H, W).

    The resolution of a Grad-RAM map at that layer: each value covers about
    ``(D / d, H / h, W / w)`` input voxels.
    """
    x = _check_image_batch(x)
    module = _find_layer(model, layer)
    shapes: list[tuple[int, ...]] = []
    handle = module.register_forward_hook(
        lambda _m, _i, output: shapes.append(tuple(output.shape[2:])))
    try:
        with torch.no_grad(), _eval_mode(model):
            model(x[:1])
    finally:
        handle.remove()
    if len(shapes) != 1 or len(shapes[0]) != x.ndim - 2:
        raise ValueError(f"layer {layer!r} does not give one (B, C, d, h, w) feature map")
    return shapes[0]


def _check_baseline(baseline: Any, x: Tensor) -> Tensor:
    """The reference volume as a tensor broadcastable to ``x`` (B, C, D, H, W)."""
    if isinstance(baseline, np.ndarray):
        baseline = torch.from_numpy(np.ascontiguousarray(baseline))
    if not isinstance(baseline, Tensor):
        raise TypeError(f"baseline must be a Tensor or ndarray, got {type(baseline).__name__}")
    baseline = baseline.to(device=x.device, dtype=x.dtype)
    while baseline.ndim < x.ndim:
        baseline = baseline.unsqueeze(0)  # (D, H, W) or (C, D, H, W) -> (1, C, D, H, W)
    if baseline.ndim != x.ndim or baseline.shape[0] not in (1, x.shape[0]) \
            or baseline.shape[1:] != x.shape[1:]:
        raise ValueError(f"baseline must have shape {tuple(x.shape[2:])}, {tuple(x.shape[1:])} or "
                         f"{tuple(x.shape)} to match x, got {tuple(baseline.shape)}")
    return baseline


def integrated_gradients(model: nn.Module, x: Tensor, baseline: Tensor | np.ndarray, *,
                         n_steps: int = 16, return_delta: bool = False
                         ) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated gradients of the predicted age from a reference volume.

    Written here because Captum (whose ``IntegratedGradients`` this mirrors: Gauss-Legendre
    nodes, ``return_convergence_delta``) is not a dependency and MONAI has no integrated
    gradients; it needs only ``torch.autograd.grad`` with respect to the input.

    Parameters
    ----------
    model : nn.Module
        Maps ``x`` to a predicted age, shape (B,) or (B, 1). It runs in eval mode; flags,
        ``requires_grad`` and the parameters' ``.grad`` are left as they were.
    x : Tensor, shape (B, C, D, H, W)
        Input images.
    baseline : Tensor or ndarray, shape (D, H, W), (C, D, H, W) or (B, C, D, H, W)
        The reference volume(s), e.g. :func:`typical_scan` of the training scans.
    n_steps : int, default=16
        Gauss-Legendre nodes on the straight path from ``baseline`` to ``x`` (one forward and
        backward pass of the batch each).
    return_delta : bool, default=False
        Also return the completeness error ``sum(maps) - (f(x) - f(baseline))`` per subject
        (two more forward passes).

    Returns
    -------
    maps : Tensor, shape (B, 1, D, H, W)
        Attributions in years (channels summed), detached. ``maps[i].sum()`` equals
        ``f(x[i]) - f(baseline)`` up to the quadrature error: a positive voxel pushes the
        prediction above the baseline's.
    delta : Tensor, shape (B,)
        Only with ``return_delta``.

    References
    ----------
    .. [1] Sundararajan M., Taly A., Yan Q. (2017). Axiomatic attribution for deep networks.
       ICML, 3319-3328. arXiv:1703.01365.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = _check_image_batch(x).detach()
    check_int("n_steps", n_steps, low=1)
    baseline = _check_baseline(baseline, x).detach()
    nodes, weights = np.polynomial.legendre.leggauss(int(n_steps))  # on [-1, 1]
    alphas, weights = (nodes + 1) / 2, weights / 2  # on [0, 1], weights sum to 1
    difference = x - baseline  # (B, C, D, H, W)
    path_gradient = torch.zeros_like(x)
    with torch.enable_grad(), _eval_mode(model):
        for alpha, weight in zip(alphas, weights):
            point = (baseline + float(alpha) * difference).requires_grad_(True)
            score = _age_score(model(point), x.shape[0])
            (gradient,) = torch.autograd.grad(score.sum(), point)
            path_gradient += float(weight) * gradient
        maps = (difference * path_gradient).sum(dim=1, keepdim=True)  # (B, 1, D, H, W)
        if not return_delta:
            return maps.detach()
        with torch.no_grad():
            ends = _age_score(model(x), x.shape[0]) - _age_score(
                model(baseline.expand_as(x)), x.shape[0])  # (B,)
    delta = maps.reshape(x.shape[0], -1).sum(dim=1) - ends  # (B, 1, ...) -> (B,)
    return maps.detach(), delta.detach()


# --- volumes on disk ------------------------------------------------------------------------------


def _load_array(value: Any, name: str) -> np.ndarray:
    """Return ``value`` (tensor, array, nibabel image or NIfTI path) as a numpy array."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, nib.spatialimages.SpatialImage):
        return np.asanyarray(value.dataobj)
    if isinstance(value, str | PathLike):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such file {path}")
        return np.asanyarray(nib.load(path).dataobj)
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(
        f"{name} must be a Tensor, numpy array, nibabel image or NIfTI path, "
        f"got {type(value).__name__}"
    )


def _as_volume(value: Any, name: str) -> np.ndarray:
    """Return ``value`` as a 3-D array, dropping leading singleton axes such as (1, 1, D, H, W)."""
    array = _load_array(value, name)
    original = array.shape
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    while array.ndim > 3 and array.shape[-1] == 1:  # NIfTI (D, H, W, 1)
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(
            f"{name} must hold one 3-D volume, shape (D, H, W) or (1, 1, D, H, W), "
            f"got shape {original}"
        )
    return array


def _reference_affine(reference: Any) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """Return the affine of a reference image, NIfTI path or 4x4 array, and its grid shape."""
    if isinstance(reference, str | PathLike):
        path = Path(reference)
        if not path.is_file():
            raise FileNotFoundError(f"reference_img_or_affine: no such file {path}")
        reference = nib.load(path)
    if isinstance(reference, nib.spatialimages.SpatialImage):
        return np.asarray(reference.affine, dtype=np.float64), tuple(reference.shape[:3])
    affine = np.asarray(reference, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(
            "reference_img_or_affine must be a nibabel image, a NIfTI path or a finite 4x4 affine, "
            f"got an array of shape {affine.shape}"
        )
    return affine, None


def save_map(map_array: MapLike, reference_img_or_affine: Any, path: str | PathLike) -> Path:
    """Save one subject's map as a float32 NIfTI image on the reference grid (template space).

    Parameters
    ----------
    map_array : Tensor or ndarray, shape (D, H, W) or (1, 1, D, H, W)
        One subject's map, e.g. ``grad_ram(...)[i]``; leading singleton axes are dropped.
    reference_img_or_affine : nibabel image, path or ndarray, shape (4, 4)
        The grid the map lies on: the preprocessed (template-space) image or its affine. An image
        must have the map's shape.
    path : str or PathLike
        Output file, ending in ``.nii`` or ``.nii.gz``; parent folders are created.

    Returns
    -------
    path : Path
        The written file.
    """
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"path must end in .nii or .nii.gz, got {path.name!r}")
    data = _as_volume(map_array, "map_array").astype(np.float32)
    affine, grid = _reference_affine(reference_img_or_affine)
    if grid is not None and grid != data.shape:
        raise ValueError(
            f"map_array has shape {data.shape} but reference_img_or_affine's grid is {grid}: "
            "save the map on the grid the model saw"
        )
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)  # scanner-independent: qform and sform both "scanner/aligned"
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    logger.debug("saved map %s to %s", data.shape, path)
    return path


def _iter_maps(paths_or_arrays: Any) -> Iterator[tuple[str, Any]]:
    """Yield (label, item) for each map: items of a sequence, or subjects of a stacked array."""
    if isinstance(paths_or_arrays, Tensor | np.ndarray):
        for i in range(paths_or_arrays.shape[0]):  # (N, ...) -> one subject at a time
            yield f"paths_or_arrays[{i}]", paths_or_arrays[i]
    elif isinstance(paths_or_arrays, Sequence) and not isinstance(paths_or_arrays, str):
        for i, item in enumerate(paths_or_arrays):
            label = f"{item}" if isinstance(item, str | PathLike) else f"paths_or_arrays[{i}]"
            yield label, item
    else:
        raise TypeError(
            "paths_or_arrays must be a sequence of NIfTI paths, arrays or images, or one stacked "
            f"array (N, D, H, W), got {type(paths_or_arrays).__name__}"
        )


def group_average(
    paths_or_arrays: Sequence[MapLike] | Tensor | np.ndarray, normalise: str = "none"
) -> np.ndarray:
    """Voxel-wise mean of per-subject maps, optionally scaled per subject first.

    Parameters
    ----------
    paths_or_arrays : sequence of paths, images, arrays or tensors, or one stacked array
        Maps on the same grid, each (D, H, W) or with leading singleton axes; a stacked array or
        tensor of shape (N, D, H, W) or (N, 1, D, H, W) (e.g. the output of :func:`grad_ram`)
        is read subject by subject. Files are read one at a time (running mean).
    normalise : {"none", "maxabs"}, default="none"
        ``"none"`` averages the raw maps, so the result keeps the maps' units and subjects with
        strong gradients weigh more. ``"maxabs"`` divides each map by its maximum absolute value
        first (range [-1, 1], sign kept), so that every subject weighs the same; use it when the
        scale of the maps varies between subjects. A map that is zero everywhere stays zero.

    Returns
    -------
    mean : ndarray, shape (D, H, W)
        float64.
    """
    check_choice("normalise", normalise, GROUP_NORMALISATIONS)
    total: np.ndarray | None = None
    first = ""
    n = 0
    for label, item in _iter_maps(paths_or_arrays):
        volume = _as_volume(item, label).astype(np.float64)
        if total is None:
            total, first = np.zeros_like(volume), label
        elif volume.shape != total.shape:
            raise ValueError(f"{label} has shape {volume.shape}, but {first} has {total.shape}")
        if normalise == "maxabs":
            peak = np.max(np.abs(volume))
            if peak > 0:
                volume = volume / peak
            else:
                warnings.warn(f"{label} is zero everywhere; it adds zeros to the group average",
                              stacklevel=2)
        total += volume
        n += 1
    if total is None:
        raise ValueError("paths_or_arrays is empty: give at least one map")
    return total / n


# --- regions --------------------------------------------------------------------------------------


def _as_labels(labels_img_or_array: Any) -> np.ndarray:
    """Return an integer 3-D label volume, or raise if the values are not whole numbers."""
    labels = _as_volume(labels_img_or_array, "labels_img_or_array")
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            example = float(labels[rounded != labels].flat[0])
            raise ValueError("labels_img_or_array must hold whole-number region labels, got "
                             f"non-integer values such as {example}")
        labels = rounded
    return labels.astype(np.int64)


def region_summary(
    map: MapLike,
    labels_img_or_array: Any,
    names: Mapping[int, str],
) -> pd.DataFrame:
    """Mean attribution per atlas region.

    Parameters
    ----------
    map : Tensor, ndarray, nibabel image or path, shape (D, H, W)
        One map (a subject's or a group average); leading singleton axes are dropped.
    labels_img_or_array : nibabel image, path or ndarray, shape (D, H, W)
        Integer region labels on the map's grid; 0 is background unless ``names`` names it.
    names : dict of int to str
        Region label -> name. Only named labels get a row; nonzero labels in the volume without
        a name are left out with a warning, named labels absent from the volume get a row with
        0 voxels and NaN means (and a warning).

    Returns
    -------
    table : DataFrame
        One row per named region, in label order, columns ``label``, ``region``, ``n_voxels``,
        ``mean_signed`` (mean of the map), ``mean_abs`` (mean of its absolute value) and
        ``share_abs`` (the region's sum of absolute values over that of the whole volume).
    """
    values = _as_volume(map, "map").astype(np.float64)
    labels = _as_labels(labels_img_or_array)
    if labels.shape != values.shape:
        raise ValueError(
            f"labels_img_or_array has shape {labels.shape} but map has shape {values.shape}: "
            "resample the atlas to the map's grid (nearest neighbour) first"
        )
    if (not isinstance(names, Mapping) or not names
            or not all(isinstance(k, int | np.integer) and not isinstance(k, bool) for k in names)):
        raise TypeError(f"names must be a non-empty dict of int label -> str, got {names!r}")
    index = sorted(int(k) for k in names)
    present = set(np.unique(labels).tolist())
    missing, unnamed = sorted(set(index) - present), sorted(present - set(index) - {0})
    if missing:
        warnings.warn(f"labels {missing} named in names do not occur in labels_img_or_array",
                      stacklevel=2)
    if unnamed:
        warnings.warn(f"labels {unnamed} in labels_img_or_array have no entry in names; "
                      "they are left out of the table", stacklevel=2)
    # scipy.ndimage's labelled reductions: one pass per statistic over the whole volume.
    counts = ndimage.sum_labels(np.ones_like(values), labels, index)
    sums = ndimage.sum_labels(values, labels, index)
    sums_abs = ndimage.sum_labels(np.abs(values), labels, index)
    total_abs = float(np.abs(values).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        table = pd.DataFrame({
            "label": index,
            "region": [str(names[k]) for k in index],
            "n_voxels": np.asarray(counts, dtype=np.int64),
            "mean_signed": np.where(counts > 0, sums / counts, np.nan),
            "mean_abs": np.where(counts > 0, sums_abs / counts, np.nan),
            "share_abs": sums_abs / total_abs if total_abs > 0 else np.full(len(index), np.nan),
        })
    return table


# --- ground truth ---------------------------------------------------------------------------------


def _as_mask(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return a boolean 3-D mask of ``shape``, or raise for other shapes or non-binary values."""
    mask = _as_volume(value, name)
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape} but map has shape {shape}")
    if mask.dtype != bool:
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(
                f"{name} must be binary (bool or 0/1), got values such as {values[:5].tolist()}; "
                "threshold a continuous effect map first, e.g. np.abs(effect) > 0"
            )
    return mask.astype(bool)


def _enrichment_inputs(map: MapLike, truth_mask: Any, brain_mask: Any, tissue: Any
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the map and masks; return them with integer tissue strata (all 0 if none)."""
    values = _as_volume(map, "map").astype(np.float64)
    brain = _as_mask(brain_mask, "brain_mask", values.shape)
    truth = _as_mask(truth_mask, "truth_mask", values.shape) & brain
    n_brain, n_truth = int(brain.sum()), int(truth.sum())
    if n_truth == 0 or n_truth == n_brain:
        raise ValueError(
            f"truth_mask must cover some but not all of brain_mask's {n_brain} voxels, "
            f"it covers {n_truth}"
        )
    if not np.all(np.isfinite(values[brain])):
        raise ValueError("map has NaN or infinite values inside brain_mask")
    if not np.any(values[brain]):
        raise ValueError("map is zero everywhere inside brain_mask: nothing to compare")
    if tissue is None:
        strata = np.zeros(values.shape, dtype=np.int64)
    else:
        strata = _as_labels(tissue)
        if strata.shape != values.shape:
            raise ValueError(f"tissue has shape {strata.shape} but map has shape {values.shape}")
    return values, truth, brain, strata


def enrichment_auc(map: MapLike, truth_mask: Any, brain_mask: Any, *, tissue: Any = None,
                   signed: bool = False) -> dict[str, Any]:
    """How much more attribution the truth region gets than tissue-matched control voxels.

    The AUC is the probability that a random truth voxel has a larger attribution than a random
    control voxel of the same tissue class: control voxels are the brain voxels outside the
    truth, and only same-tissue pairs are compared (the stratified Mann-Whitney U over the
    tissue classes divided by the number of such pairs). Matching the tissue keeps a map that
    merely follows grey matter (where most simulated effects act, and where most image
    structure lies) from counting as enriched.

    Parameters
    ----------
    map : Tensor, ndarray, nibabel image or path, shape (D, H, W)
        One attribution map (a subject's, or a group average).
    truth_mask : bool ndarray, image or path, shape (D, H, W)
        Voxels where the simulator applied the effect tested (binary: threshold the
        simulator's ``<process>_effect.nii.gz`` first). Only its voxels in the brain count.
    brain_mask : bool ndarray, image or path, shape (D, H, W)
        The voxels compared.
    tissue : integer ndarray, image or path, shape (D, H, W), optional
        Tissue class of each voxel (e.g. 1 GM, 2 WM, 3 CSF). None: one class, the plain AUC of
        truth against all other brain voxels.
    signed : bool, default=False
        Rank the map's values (a region that raises the prediction) instead of their
        magnitude (a region the model uses either way).

    Returns
    -------
    dict
        ``auc`` (0.5: no enrichment; ties count one half), ``n_truth`` and ``n_control``
        (voxels in classes that have both), ``n_pairs``, ``by_tissue`` (class -> AUC, n_truth,
        n_control) and ``signed``.

    References
    ----------
    .. [1] Hanley J. A. & McNeil B. J. (1982). The meaning and use of the area under a receiver
       operating characteristic (ROC) curve. Radiology 143(1), 29-36.
    """
    values, truth, brain, strata = _enrichment_inputs(map, truth_mask, brain_mask, tissue)
    score = values if signed else np.abs(values)
    u_total, pairs, n1_total, n0_total, by_tissue = 0.0, 0, 0, 0, {}
    for stratum in np.unique(strata[brain]):
        inside = brain & (strata == stratum)
        n1, n0 = int((truth & inside).sum()), int((~truth & inside).sum())
        if n1 == 0 or n0 == 0:
            continue
        ranks = stats.rankdata(score[inside])  # average ranks: ties count one half
        u = float(ranks[truth[inside]].sum()) - n1 * (n1 + 1) / 2.0
        by_tissue[int(stratum)] = {"auc": u / (n1 * n0), "n_truth": n1, "n_control": n0}
        u_total, pairs, n1_total, n0_total = u_total + u, pairs + n1 * n0, n1_total + n1, \
            n0_total + n0
    if pairs == 0:
        raise ValueError("no tissue class holds both truth and control voxels: nothing to "
                         "compare (check tissue against truth_mask)")
    return {"auc": u_total / pairs, "n_truth": n1_total, "n_control": n0_total,
            "n_pairs": pairs, "by_tissue": by_tissue, "signed": bool(signed)}


def subject_enrichment(paths_or_arrays: Sequence[MapLike] | Tensor | np.ndarray,
                       truth_mask: Any, brain_mask: Any, *, tissue: Any = None,
                       signed: bool = False) -> np.ndarray:
    """:func:`enrichment_auc` of each subject's map: one AUC per subject, in order.

    Subjects, not voxels, are the units of the tests that use these values
    (:func:`compare_enrichment`): voxels of one map are spatially correlated, subjects are
    independent, so no spatial null model is needed.

    Returns
    -------
    ndarray, shape (N,)
    """
    return np.array([enrichment_auc(item, truth_mask, brain_mask, tissue=tissue,
                                    signed=signed)["auc"]
                     for _, item in _iter_maps(paths_or_arrays)])


def compare_enrichment(a: Sequence[float], b: Sequence[float], *, paired: bool,
                       alternative: str = "greater") -> dict[str, Any]:
    """Whether per-subject AUCs ``a`` exceed ``b``: Wilcoxon signed-rank or Mann-Whitney U.

    Parameters
    ----------
    a, b : sequence of float
        Per-subject AUCs (:func:`subject_enrichment`), NaN-free.
    paired : bool
        True: the same subjects under two models (``a[i]`` and ``b[i]``), Wilcoxon signed-rank
        test of the differences. False: two groups of subjects, Mann-Whitney U.
    alternative : {"greater", "two-sided", "less"}, default="greater"
        Direction of the alternative for ``a`` against ``b``.

    Returns
    -------
    dict
        ``test``, ``n_a``, ``n_b``, ``median_a``, ``median_b``, ``statistic``, ``p``.
    """
    check_choice("alternative", alternative, ("greater", "two-sided", "less"))
    a, b = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if a.size < 2 or b.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"a and b must hold >= 2 finite values each, got {a.size} and {b.size}")
    if paired:
        if a.size != b.size:
            raise ValueError(f"paired comparison needs a and b of one length, got {a.size} "
                             f"and {b.size}")
        result = stats.wilcoxon(a, b, alternative=alternative)
        test = "Wilcoxon signed-rank (paired subjects)"
    else:
        result = stats.mannwhitneyu(a, b, alternative=alternative)
        test = "Mann-Whitney U"
    return {"test": test, "n_a": int(a.size), "n_b": int(b.size),
            "median_a": float(np.median(a)), "median_b": float(np.median(b)),
            "statistic": float(result.statistic), "p": float(result.pvalue)}


def _batches(dataset: Any, batch_size: int) -> Iterator[tuple[list[dict[str, Any]], Tensor]]:
    """The dataset's items in order, ``batch_size`` at a time, with their stacked images."""
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([item["image"] for item in items])  # B x (1, D, H, W) -> (B, 1, D, H, W)
        yield items, x


def save_subject_maps(model: nn.Module, dataset: Any, layer: str, reference: Any,
                      out_dir: str | PathLike, *, signed: bool = True,
                      batch_size: int = 4) -> list[Path]:
    """Grad-RAM map of every scan of a dataset, written as NIfTI on the reference grid.

    Parameters
    ----------
    model : nn.Module
        Maps (B, 1, D, H, W) to predicted age (B,) or (B, 1).
    dataset : Dataset
        Items ``{"image": Tensor (1, D, H, W), "participant_id": str, ...}``.
    layer : str
        Module name whose feature maps are used (see :func:`grad_ram`).
    reference : nibabel image or path
        A preprocessed volume: the maps get its affine (template space).
    out_dir : str or PathLike
        Folder of ``<participant_id>.nii.gz``.
    signed : bool, default=True
        Signed map (default) or the rectified, min-max normalised one.
    batch_size : int, default=4
        Scans per backward pass.

    Returns
    -------
    list of Path
        One file per scan, in dataset order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for items, x in _batches(dataset, batch_size):
        maps = grad_ram(model, x, layer, signed=signed)  # (B, 1, D, H, W)
        for item, volume in zip(items, maps):
            target = out_dir / f"{item['participant_id']}.nii.gz"
            paths.append(save_map(volume[0], reference, target))
    return paths


def save_attribution_maps(model: nn.Module, dataset: Any, baseline: Tensor | np.ndarray,
                          reference: Any, out_dir: str | PathLike, *, n_steps: int = 16,
                          batch_size: int = 32, brain_mask: np.ndarray | None = None
                          ) -> pd.DataFrame:
    """Integrated-gradients map of every scan of a dataset, as NIfTI, with a check of each.

    Parameters
    ----------
    model : nn.Module
        Maps (B, 1, D, H, W) to predicted age (B,) or (B, 1).
    dataset : Dataset
        Items ``{"image": Tensor (1, D, H, W), "participant_id": str, ...}``.
    baseline : Tensor or ndarray, shape (D, H, W) or (1, D, H, W)
        The reference volume (see :func:`integrated_gradients`).
    reference : nibabel image or path
        A preprocessed volume: the maps get its affine (template space).
    out_dir : str or PathLike
        Folder of ``<participant_id>.nii.gz``.
    n_steps : int, default=16
        Quadrature nodes of the path integral.
    batch_size : int, default=32
        Scans per pass (larger batches are faster on CPU: on 2 cores, a ResNet-10 pass at the
        quick grid took about 0.05 s per scan at batch 16 and 0.025 s at 32).
    brain_mask : bool ndarray, shape (D, H, W), optional
        Voxels over which ``positive_fraction`` and ``positive_share`` are counted (default:
        voxels where the map is nonzero).

    Returns
    -------
    DataFrame
        One row per scan: ``participant_id``, ``path``, ``predicted``, ``baseline_predicted``,
        ``attribution_sum`` (equals ``predicted - baseline_predicted`` up to ``delta``),
        ``delta``, ``positive_fraction`` (share of voxels with positive attribution) and
        ``positive_share`` (positive attribution over total absolute attribution: above 0.5
        when the scan is predicted older than the reference). One voxel's sign mixes the
        signal with that voxel's noise, so ``positive_share`` is the steadier readout.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_int("batch_size", batch_size, low=1)
    rows = []
    for items, x in _batches(dataset, batch_size):
        maps = integrated_gradients(model, x, baseline, n_steps=n_steps)
        with torch.no_grad(), _eval_mode(model):
            predicted = _age_score(model(x), x.shape[0])
            base = float(_age_score(model(_check_baseline(baseline, x)[:1]), 1)[0])
        for item, volume, p in zip(items, maps, predicted):
            values = volume[0].numpy()
            inside = values != 0 if brain_mask is None else np.asarray(brain_mask, bool)
            magnitude = float(np.abs(values[inside]).sum())
            target = out_dir / f"{item['participant_id']}.nii.gz"
            total = float(values.astype(np.float64).sum())
            rows.append({"participant_id": item["participant_id"],
                         "path": str(save_map(values, reference, target)),
                         "predicted": float(p), "baseline_predicted": base,
                         "attribution_sum": total, "delta": total - (float(p) - base),
                         "positive_fraction": float((values[inside] > 0).mean()),
                         "positive_share": (float(np.clip(values[inside], 0, None).sum())
                                            / magnitude if magnitude > 0 else np.nan)})
    logger.info("integrated gradients of %d scans written to %s", len(rows), out_dir)
    return pd.DataFrame(rows)


def gradram_sign_table(model: nn.Module, dataset: Any, layer: str, brain_mask: Any, *,
                       batch_size: int = 16) -> pd.DataFrame:
    """How positive each scan's signed Grad-RAM map is inside the brain.

    The readout that shows Grad-RAM's sign has no reference point: had it meant "raises the
    predicted age", its positive share would follow the prediction, as integrated gradients'
    ``positive_share`` (:func:`save_attribution_maps`) does.

    Parameters
    ----------
    model : nn.Module
        Maps (B, 1, D, H, W) to predicted age (B,) or (B, 1).
    dataset : Dataset
        Items ``{"image": Tensor (1, D, H, W), "participant_id": str, ...}``.
    layer : str
        Module name whose feature maps are used (see :func:`grad_ram`).
    brain_mask : bool ndarray, shape (D, H, W)
        Voxels counted.
    batch_size : int, default=16
        Scans per backward pass.

    Returns
    -------
    DataFrame
        One row per scan, in dataset order: ``participant_id``, ``gradram_positive`` (share of
        brain voxels where the map is positive) and ``gradram_share`` (positive values over
        total absolute values in the brain; 0 for a map that is zero there).
    """
    check_int("batch_size", batch_size, low=1)
    rows = []
    for items, x in _batches(dataset, batch_size):
        maps = grad_ram(model, x, layer)[:, 0].numpy()  # (B, 1, D, H, W) -> (B, D, H, W)
        mask = _as_mask(brain_mask, "brain_mask", maps.shape[1:])
        for item, values in zip(items, maps):
            inside = values[mask]
            rows.append({"participant_id": item["participant_id"],
                         "gradram_positive": float((inside > 0).mean()),
                         "gradram_share": float(np.clip(inside, 0, None).sum()
                                                / max(np.abs(inside).sum(), 1e-12))})
    return pd.DataFrame(rows, columns=["participant_id", "gradram_positive", "gradram_share"])


def offset_category(offset: Any, years: float = 10.0) -> np.ndarray:
    """How each prediction compares with the reference's: more than ``years`` below or above it,
    or within.

    Parameters
    ----------
    offset : array-like of float, shape (N,)
        Predicted age minus the reference volume's predicted age (years).
    years : float, default=10.0
        Half-width of the middle category (years); an offset of exactly ``years`` is within.

    Returns
    -------
    ndarray of str, shape (N,)
        ``"> 10 y below reference"``, ``"> 10 y above reference"`` or ``"within 10 y"`` (with
        ``years`` in place of 10).

    Raises
    ------
    ValueError
        For a non-finite offset (it belongs to no category) or ``years`` not positive.
    """
    values = np.asarray(offset, dtype=float)
    if not np.isfinite(years) or years <= 0:
        raise ValueError(f"years must be a positive number, got {years!r}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"offset has {int(bad.sum())} non-finite value(s) (first at index "
                         f"{int(np.flatnonzero(bad)[0])}); a prediction is missing")
    return np.select([values < -years, values > years],
                     [f"> {years:g} y below reference", f"> {years:g} y above reference"],
                     f"within {years:g} y")


# --- the seed's Grad-RAM claim: truth test and "nuance" -----------------------------------------

#: Columns of :func:`gradram_truth_table` and :func:`map_measures`.
MAP_MEASURES = ("auc", "entropy", "n_regions", "half_mass_fraction")


def attribution_spread(map: MapLike, brain_mask: Any, *, threshold: float = 0.5
                       ) -> dict[str, float]:
    """How spread out one map's |attribution| is inside the brain: what "more nuanced" can mean.

    Parameters
    ----------
    map : Tensor, ndarray, nibabel image or path, shape (D, H, W)
        One attribution map; its magnitude is used.
    brain_mask : bool ndarray, image or path, shape (D, H, W)
        The voxels counted.
    threshold : float, default=0.5
        A region is a connected set (26-neighbourhood) of brain voxels whose |attribution| is at
        least ``threshold`` times the map's largest |attribution| in the brain.

    Returns
    -------
    dict
        ``entropy``: Shannon entropy of |attribution| normalised to a distribution over the
        brain voxels, divided by log(number of brain voxels) (1: uniform, 0: one voxel);
        ``n_regions``: the number of such regions (``scipy.ndimage.label``);
        ``half_mass_fraction``: the smallest share of brain voxels that holds half of the
        total |attribution| (0.5 for a uniform map, small for a focal one).

    Raises
    ------
    ValueError
        ``threshold`` outside (0, 1], shapes that differ, or a map that is zero in the brain.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    values = np.abs(_as_volume(map, "map").astype(np.float64))
    brain = _as_mask(brain_mask, "brain_mask", values.shape)
    inside = values[brain]
    total = float(inside.sum())
    if inside.size < 2 or total <= 0:
        raise ValueError("map is zero everywhere inside brain_mask: its spread is undefined")
    p = inside / total
    entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(inside.size))
    above = brain & (values >= threshold * inside.max())
    _, n_regions = ndimage.label(above, structure=ndimage.generate_binary_structure(3, 3))
    cumulative = np.cumsum(np.sort(p)[::-1])  # largest first
    n_half = int(np.searchsorted(cumulative, 0.5 - 1e-12) + 1)
    return {"entropy": entropy, "n_regions": float(n_regions),
            "half_mass_fraction": n_half / inside.size}


def map_measures(maps: Sequence[MapLike] | np.ndarray, truth_mask: Any, brain_mask: Any, *,
                 tissue: Any = None, threshold: float = 0.5) -> pd.DataFrame:
    """:func:`enrichment_auc` (of |map|) and :func:`attribution_spread` of each map, in order.

    Returns
    -------
    DataFrame
        One row per map: ``auc``, ``entropy``, ``n_regions``, ``half_mass_fraction``. A map
        that is 0 everywhere in the brain gets AUC 0.5, no region and NaN spread.
    """
    rows = []
    for _, item in _iter_maps(maps):
        volume = _as_volume(item, "map")
        if not np.any(volume[_as_mask(brain_mask, "brain_mask", volume.shape)]):
            # a rectified Grad-RAM map can be 0 everywhere (every weighted sum negative): it
            # prefers no voxel (AUC 0.5, all ties) and has no spread
            rows.append({"auc": 0.5, "entropy": np.nan, "n_regions": 0.0,
                         "half_mass_fraction": np.nan})
            continue
        auc = enrichment_auc(volume, truth_mask, brain_mask, tissue=tissue)["auc"]
        rows.append({"auc": auc, **attribution_spread(volume, brain_mask, threshold=threshold)})
    return pd.DataFrame(rows, columns=list(MAP_MEASURES))


def gradram_truth_table(model: nn.Module, dataset: Any, layer: str, truth_mask: Any,
                        brain_mask: Any, *, tissue: Any = None, threshold: float = 0.5,
                        batch_size: int = 16) -> pd.DataFrame:
    """The unsigned Grad-RAM map of every scan through the truth test and the spread measures.

    The reference study's maps are Grad-RAM's rectified form (:func:`grad_ram` with
    ``signed=False``: the form :class:`monai.visualize.GradCAM` gives); each is compared with
    the simulated truth by :func:`enrichment_auc` and summarised by :func:`attribution_spread`,
    in memory (no file is written).

    Parameters
    ----------
    model : nn.Module
        Maps (B, 1, D, H, W) to predicted age (B,) or (B, 1).
    dataset : Dataset
        Items ``{"image": Tensor (1, D, H, W), "participant_id": str, ...}``.
    layer : str
        Module name whose feature maps are used (see :func:`grad_ram`).
    truth_mask, brain_mask, tissue
        As in :func:`enrichment_auc`.
    threshold : float, default=0.5
        As in :func:`attribution_spread`.
    batch_size : int, default=16
        Scans per backward pass.

    Returns
    -------
    DataFrame
        One row per scan, in dataset order: ``participant_id`` and :data:`MAP_MEASURES`.
    """
    check_int("batch_size", batch_size, low=1)
    ids, tables = [], []
    for items, x in _batches(dataset, batch_size):
        maps = grad_ram(model, x, layer, signed=False)[:, 0].numpy()  # (B, 1, ...) -> (B, ...)
        tables.append(map_measures(maps, truth_mask, brain_mask, tissue=tissue,
                                   threshold=threshold))
        ids += [item["participant_id"] for item in items]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=list(MAP_MEASURES))
    return table.assign(participant_id=ids)[["participant_id", *MAP_MEASURES]]


def median_interval(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                    confidence: float = 0.95) -> dict[str, float]:
    """Median of per-subject values with a percentile bootstrap interval over subjects.

    ``scipy.stats.bootstrap`` (percentile method: BCa's jackknife is unstable for a median of
    tied values). Pass paired differences (``a - b`` of the same subjects) for a paired
    comparison.

    Returns
    -------
    dict
        ``median``, ``ci_low``, ``ci_high``, ``n``.
    """
    check_int("n_boot", n_boot, low=100)
    data = np.asarray(values, dtype=float).reshape(-1)
    if data.size < 2 or not np.isfinite(data).all():
        raise ValueError(f"values must hold >= 2 finite numbers, got {data.size} "
                         f"({int((~np.isfinite(data)).sum())} not finite)")
    if np.ptp(data) == 0:  # every resample gives the same median
        low = high = float(data[0])
    else:
        result = stats.bootstrap((data,), np.median, n_resamples=n_boot, method="percentile",
                                 confidence_level=confidence, random_state=seed)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"median": float(np.median(data)), "ci_low": low, "ci_high": high, "n": int(data.size)}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (``statsmodels``' ``multipletests``), in order.

    NaN p-values are left NaN and do not count in the family.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float).reshape(-1)
    adjusted = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok].min()} to {p[ok].max()}")
    if ok.any():
        adjusted[ok] = multipletests(p[ok], method="holm")[1]
    return adjusted


def reference_prediction_table(models: Mapping[str, nn.Module],
                               candidates: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Each model's predicted age of each candidate reference volume (D, H, W).

    Returns
    -------
    DataFrame
        One row per candidate: ``reference`` and one column per model name (years).
    """
    rows = []
    for name, volume in candidates.items():
        x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
        row: dict[str, Any] = {"reference": name}
        for model_name, model in models.items():
            with torch.no_grad(), _eval_mode(model):
                row[model_name] = float(_age_score(model(x), 1)[0])  # (1, 1, D, H, W) -> (1,)
        rows.append(row)
    return pd.DataFrame(rows)


def age_window_mean(volumes: np.ndarray, ages: Sequence[float], *, centre: float | None = None,
                    half_width: float = 5.0) -> np.ndarray:
    """Mean of the scans whose ages lie within ``half_width`` years of ``centre``.

    A candidate integrated-gradients reference: the mean of scans of all ages mixes young and
    old anatomy (blurred ventricles and sulci read as old); scans of one age mix less.

    Parameters
    ----------
    volumes : ndarray, shape (N, D, H, W)
    ages : sequence of float, shape (N,)
    centre : float, optional
        Default: the mean of ``ages``.
    half_width : float, default=5.0
        Years either side of ``centre``.
    """
    volumes = np.asarray(volumes)
    ages = np.asarray(ages, dtype=float).reshape(-1)
    if volumes.ndim != 4 or volumes.shape[0] != ages.size:
        raise ValueError(f"volumes must have shape (N, D, H, W) with N = len(ages) = {ages.size}, "
                         f"got {volumes.shape}")
    if not half_width > 0:
        raise ValueError(f"half_width must be > 0 years, got {half_width!r}")
    centre = float(ages.mean()) if centre is None else float(centre)
    chosen = np.abs(ages - centre) <= half_width
    if not chosen.any():
        raise ValueError(f"no scan's age lies within {half_width:g} years of {centre:.1f}")
    return volumes[chosen].mean(axis=0)


def typical_scan(volumes: np.ndarray, ages: Sequence[float], *, half_width: float = 5.0
                 ) -> int:
    """Index of the integrated-gradients reference: the most typical scan of the mean age.

    Among the scans whose ages lie within ``half_width`` years of the mean age, the one
    nearest (sum of squared differences) to their voxelwise median. A mean of scans is no good
    reference for a brain-age model: averaging blurs ventricles and sulci, which reads as
    atrophy (on the quick build the mean training scan is predicted at 85-89 years against a
    training mean of 60), so every map would mostly explain "younger than 85". A real scan of
    typical anatomy is predicted near its age, and its choice does not look at any model.

    Parameters
    ----------
    volumes : ndarray, shape (N, D, H, W)
        The training scans.
    ages : sequence of float, shape (N,)
    half_width : float, default=5.0
        Years either side of the mean age.

    Returns
    -------
    int
        Index into ``volumes``.
    """
    volumes = np.asarray(volumes)
    ages = np.asarray(ages, dtype=float).reshape(-1)
    if volumes.ndim != 4 or volumes.shape[0] != ages.size or not np.isfinite(ages).all():
        raise ValueError(f"volumes must have shape (N, D, H, W) with N = len(ages) = {ages.size} "
                         f"finite ages, got {volumes.shape}")
    if not half_width > 0:
        raise ValueError(f"half_width must be > 0 years, got {half_width!r}")
    near = np.flatnonzero(np.abs(ages - ages.mean()) <= half_width)
    if near.size == 0:
        raise ValueError(f"no scan's age lies within {half_width:g} years of the mean age "
                         f"{ages.mean():.1f}")
    median = np.median(volumes[near], axis=0)  # (D, H, W)
    distance = ((volumes[near] - median) ** 2).reshape(near.size, -1).sum(axis=1)  # (n,)
    return int(near[int(np.argmin(distance))])


def truth_test_table(auc: Mapping[str, Sequence[float]], *, null: str | None = "permuted",
                     n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each model's per-subject AUCs against no preference (0.5) and against the null network.

    Parameters
    ----------
    auc : mapping of str to sequence of float
        Per-subject AUCs by model name (:func:`subject_enrichment`, or ``auc`` of
        :func:`gradram_truth_table`); the null network's, if any, under ``null``, on the same
        subjects in the same order.
    null : str or None, default="permuted"
        The key of the permuted-age network (absent: no comparison with it).
    n_boot, seed
        Of :func:`median_interval`.

    Returns
    -------
    DataFrame
        One row per model (the null's too): ``model``, ``n``, ``median``, ``ci_low``,
        ``ci_high`` (bootstrap over subjects), ``p_half`` (one-sided Wilcoxon signed-rank of
        AUC - 0.5 > 0), and for the models other than the null, ``diff_null`` (median of the
        paired differences from the null network), ``diff_low``, ``diff_high``, ``p_null``
        (one-sided Wilcoxon signed-rank, AUC above the null's) and ``p_null_holm`` (Holm over
        the models compared).
    """
    rows = []
    for name, values in auc.items():
        values = np.asarray(values, dtype=float)
        row: dict[str, Any] = {"model": name, **median_interval(values, n_boot=n_boot,
                                                                  seed=seed)}
        row["p_half"] = float(stats.wilcoxon(values - 0.5, alternative="greater").pvalue)
        if null is not None and null in auc and name != null:
            other = np.asarray(auc[null], dtype=float)
            if other.shape != values.shape:
                raise ValueError(f"{name!r} and {null!r} must have AUCs of the same subjects; "
                                 f"got {values.size} and {other.size}")
            diff = median_interval(values - other, n_boot=n_boot, seed=seed)
            row.update({"diff_null": diff["median"], "diff_low": diff["ci_low"],
                        "diff_high": diff["ci_high"],
                        "p_null": compare_enrichment(values, other, paired=True)["p"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    if "p_null" in table.columns:
        table["p_null_holm"] = holm(table["p_null"].to_numpy(dtype=float))
    return table


def paired_differences(a: pd.DataFrame, b: pd.DataFrame, columns: Sequence[str], *,
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per-measure median of ``a`` minus ``b`` over the same subjects, with bootstrap intervals.

    Parameters
    ----------
    a, b : DataFrame
        One row per subject, the same subjects in the same order (e.g. RNC's and L1's
        :func:`gradram_truth_table`).
    columns : sequence of str
        The measures compared.

    Returns
    -------
    DataFrame
        One row per measure: ``measure``, ``median_a``, ``median_b``, ``diff`` (median of the
        paired differences), ``ci_low``, ``ci_high``, ``n`` (pairs where both are finite).
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must hold the same subjects, got {len(a)} and {len(b)} rows")
    if "participant_id" in a.columns and "participant_id" in b.columns and \
            a["participant_id"].tolist() != b["participant_id"].tolist():
        raise ValueError("a and b list different subjects (participant_id) or another order")
    missing = [c for c in columns if c not in a.columns or c not in b.columns]
    if missing:
        raise ValueError(f"column(s) {missing} absent from a or b")
    rows = []
    for column in columns:
        x, y = a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)
        both = np.isfinite(x) & np.isfinite(y)  # a NaN measure (a zero map) drops its pair
        x, y = x[both], y[both]
        diff = median_interval(x - y, n_boot=n_boot, seed=seed)
        rows.append({"measure": column, "median_a": float(np.median(x)),
                     "median_b": float(np.median(y)), "diff": diff["median"],
                     "ci_low": diff["ci_low"], "ci_high": diff["ci_high"], "n": diff["n"]})
    return pd.DataFrame(rows)
