"""Tests of brainage.models.saliency: integrated gradients on models whose answer is known,
Grad-RAM against MONAI, maps on disk, region table, ground truth."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import ResNet
from monai.transforms import ScaleIntensity
from monai.visualize import GradCAM
from monai.visualize.class_activation_maps import ModelWithHooks
from sklearn.metrics import roc_auc_score
from torch import nn

from brainage.models.saliency import (
    compare_enrichment,
    enrichment_auc,
    grad_ram,
    gradram_sign_table,
    group_average,
    integrated_gradients,
    layer_shape,
    offset_category,
    region_summary,
    save_attribution_maps,
    save_map,
    subject_enrichment,
)

SHAPE = (16, 18, 14)  # unequal sides: axis mix-ups fail


@pytest.fixture
def model() -> nn.Module:
    """A tiny MONAI 3D ResNet with one output and non-trivial batch-norm running statistics."""
    torch.manual_seed(0)
    net = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(4, 8, 16, 32),
                 spatial_dims=3, n_input_channels=1, num_classes=1, conv1_t_stride=2)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(4, 1, *SHAPE))
    return net


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 1, *SHAPE, generator=torch.Generator().manual_seed(1))


def _without_inplace(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose activations are not in place (MONAI's hooks need it)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return net


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """MONAI's normaliser with (min, max) -> (0, 1) instead of its default (1, 0)."""
    return torch.stack([ScaleIntensity(minv=0.0, maxv=1.0)(m) for m in maps])


# --- Grad-RAM -------------------------------------------------------------------------------------


# "layer1.0.bn1" is followed by MONAI ResNet's in-place ReLU: MONAI needs inplace=False there.
# ("layer4" is 1x1x1 at this input size: its upsampled map is constant, see the next test.)
@pytest.mark.parametrize("layer", ["layer3", "layer2", "layer1.0.bn1"])
def test_rectified_equals_monai_gradcam(model: nn.Module, x: torch.Tensor, layer: str) -> None:
    ours = grad_ram(model, x, layer, signed=False)
    reference = GradCAM(_without_inplace(model), target_layers=layer, postprocessing=_unit_range)
    expected = reference(x, class_idx=0)
    assert ours.shape == (2, 1, *SHAPE)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # A subject whose gradients push every voxel down has an all-zero rectified map (common in
    # regression, hence the signed default); the others span [0, 1].
    flat = ours.reshape(2, -1)  # (B, 1, D, H, W) -> (B, D*H*W)
    spans = flat.amax(1) > 0
    assert spans.any() and (flat.amin(1) == 0).all() and (flat[spans].amax(1) == 1).all()
    # MONAI's default normaliser maps (min, max) to (1, 0): the same map, inverted.
    inverted = GradCAM(_without_inplace(model), target_layers=layer)(x, class_idx=0)
    torch.testing.assert_close(ours[spans], 1 - inverted[spans], atol=1e-5, rtol=0)


def test_rectified_constant_map_is_zero_as_in_monai(model: nn.Module, x: torch.Tensor) -> None:
    # layer4's feature map is 1x1x1 here: a constant map, which MONAI's rescale sets to 0.
    ours = grad_ram(model, x, "layer4", signed=False)
    expected = GradCAM(_without_inplace(model), target_layers="layer4",
                       postprocessing=_unit_range)(x, class_idx=0)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert not ours.any()
    assert grad_ram(model, x, "layer4").abs().amin() > 0  # the signed map is not degenerate


def test_signed_equals_weighted_features_from_monai_hooks(model: nn.Module,
                                                          x: torch.Tensor) -> None:
    hooked = ModelWithHooks(_without_inplace(model), "layer3", register_forward=True,
                            register_backward=True)
    _, (features,), (gradients,) = hooked(x, class_idx=0)
    weights = gradients.mean(dim=(2, 3, 4), keepdim=True)  # (B, K, 1, 1, 1)
    coarse = (weights * features).sum(1, keepdim=True)  # (B, 1, d, h, w), no ReLU
    expected = torch.nn.functional.interpolate(coarse, size=SHAPE, mode="trilinear")
    ours = grad_ram(model, x, "layer3")
    torch.testing.assert_close(ours, expected.detach(), atol=1e-6, rtol=1e-5)
    assert (ours < 0).any() and (ours > 0).any()  # the sign is kept


def test_signed_map_flips_with_regressor_sign(model: nn.Module, x: torch.Tensor) -> None:
    before = grad_ram(model, x, "layer4")
    with torch.no_grad():
        model.fc.weight.neg_()
        model.fc.bias.neg_()
    after = grad_ram(model, x, "layer4")
    assert before.abs().max() > 0
    torch.testing.assert_close(after, -before, atol=1e-7, rtol=1e-6)


class _FlatAge(nn.Module):
    """A model returning shape (B,) with a mix of train/eval submodules and a frozen part."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


def test_no_side_effects(model: nn.Module, x: torch.Tensor) -> None:
    wrapped = _FlatAge(model)
    wrapped.train()
    model.bn1.eval()  # mixed modes must come back as they were
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 3.0)
    hooks_before = sum(len(m._forward_hooks) for m in wrapped.modules())
    modes = {name: m.training for name, m in wrapped.named_modules()}
    flags = {name: p.requires_grad for name, p in wrapped.named_parameters()}
    with torch.no_grad():  # a caller's no_grad must not break the map
        maps = grad_ram(wrapped, x, "net.layer4")
    assert maps.shape == (2, 1, *SHAPE) and not maps.requires_grad
    assert {name: m.training for name, m in wrapped.named_modules()} == modes
    assert {name: p.requires_grad for name, p in wrapped.named_parameters()} == flags
    assert sum(len(m._forward_hooks) for m in wrapped.modules()) == hooks_before
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 3.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert all(m.inplace for m in model.modules() if hasattr(m, "inplace"))


def test_frozen_model_and_in_place_residual_layer(model: nn.Module, x: torch.Tensor) -> None:
    model.requires_grad_(False)  # a fully frozen model still has a graph through x
    # "layer2.0.bn2" is followed by an in-place ``out += residual``: MONAI's hooks fail here.
    maps = grad_ram(model, x, "layer2.0.bn2")
    assert maps.shape == (2, 1, *SHAPE) and torch.isfinite(maps).all() and maps.abs().max() > 0
    # subjects are independent (eval mode): the batch gives each subject's own map
    torch.testing.assert_close(grad_ram(model, x[1:], "layer2.0.bn2"), maps[1:],
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("layer5", r"layer 'layer5' is not a module of ResNet.*closest names: 'layer4'"),
        ("layer1.0.bn", r"closest names: 'layer1\.0\.bn2', 'layer1\.0\.bn1'"),
        ("fc", r"layer 'fc' outputs \(2, 1\); Grad-RAM needs a feature map"),
    ],
)
def test_bad_layer(model: nn.Module, x: torch.Tensor, layer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grad_ram(model, x, layer)


def test_bad_inputs(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, D, H, W\).*got shape "
                                         r"\(16, 18, 14\).*x\[None, None\]"):
        grad_ram(model, x[0, 0], "layer4")
    with pytest.raises(TypeError, match="x must be a torch.Tensor.*got ndarray"):
        grad_ram(model, x.numpy(), "layer4")
    with pytest.raises(TypeError, match="layer must be a module name.*got int"):
        grad_ram(model, x, 4)
    two_outputs = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(4, 8, 16, 32),
                         spatial_dims=3, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    with pytest.raises(ValueError, match=r"model\(x\) must return one predicted age.*got \(2, 2\)"):
        grad_ram(two_outputs, x, "layer4")
    assert two_outputs.training  # restored after the error


# --- maps on disk and group maps ------------------------------------------------------------------


def test_save_map_carries_reference_affine(tmp_path, rng: np.random.Generator) -> None:
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    reference = nib.Nifti1Image(np.zeros(SHAPE, np.float32), affine)
    ref_path = tmp_path / "ref.nii.gz"
    nib.save(reference, ref_path)
    values = rng.normal(size=(1, 1, *SHAPE)).astype(np.float32)
    for ref in (reference, ref_path, affine):
        out = save_map(torch.from_numpy(values), ref, tmp_path / "maps" / "sub-01.nii.gz")
        loaded = nib.load(out)
        np.testing.assert_allclose(loaded.affine, affine)
        np.testing.assert_array_equal(loaded.get_fdata(dtype=np.float32), values[0, 0])
    with pytest.raises(ValueError, match=r"map_array has shape \(7, 8, 9\) but "
                                         r"reference_img_or_affine's grid is \(16, 18, 14\)"):
        save_map(np.zeros((7, 8, 9)), reference, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match=r"reference_img_or_affine must be .*4x4 affine.*\(3, 3\)"):
        save_map(values, np.eye(3), tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match=r"path must end in \.nii or \.nii\.gz, got 'map\.npy'"):
        save_map(values, affine, tmp_path / "map.npy")
    with pytest.raises(ValueError,
                       match=r"map_array must hold one 3-D volume.*\(2, 1, 16, 18, 14\)"):
        save_map(np.zeros((2, 1, *SHAPE)), affine, tmp_path / "bad.nii.gz")


def test_group_average(tmp_path, rng: np.random.Generator) -> None:
    one = rng.normal(size=(7, 8, 9))
    paths = [save_map(one, np.eye(4), tmp_path / f"sub-{i}.nii.gz") for i in range(3)]
    np.testing.assert_allclose(group_average(paths), one, atol=1e-6)
    np.testing.assert_allclose(group_average([one, one]), one)
    np.testing.assert_allclose(group_average([one, 3 * one], normalise="maxabs"),
                               one / np.abs(one).max())
    # hand-checked: mean of 1 and 3 is 2; stacked (N, 1, D, H, W) input as from grad_ram
    stacked = torch.from_numpy(np.stack([np.ones((1, 7, 8, 9)), np.full((1, 7, 8, 9), 3.0)]))
    np.testing.assert_allclose(group_average(stacked), np.full((7, 8, 9), 2.0))


def test_group_average_bad_inputs(tmp_path, rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"paths_or_arrays\[1\] has shape \(9, 8, 7\), but "
                                         r"paths_or_arrays\[0\] has \(7, 8, 9\)"):
        group_average([np.zeros((7, 8, 9)), np.zeros((9, 8, 7))])
    with pytest.raises(ValueError, match=r"normalise must be one of .*got 'max_abs'.*'maxabs'"):
        group_average([np.zeros((7, 8, 9))], normalise="max_abs")
    with pytest.raises(ValueError, match="paths_or_arrays is empty"):
        group_average([])
    with pytest.raises(FileNotFoundError, match=r"no such file .*missing\.nii\.gz"):
        group_average([tmp_path / "missing.nii.gz"])


# --- region table ---------------------------------------------------------------------------------


@pytest.fixture
def labelled() -> tuple[np.ndarray, np.ndarray]:
    """A (7, 8, 9) map and labels whose region statistics are worked out by hand."""
    labels = np.zeros((7, 8, 9), np.int16)
    values = np.zeros((7, 8, 9))
    labels[0:2, 0:3, 0:4] = 1  # 24 voxels: 12 at +2, 12 at -1 -> mean 0.5, mean |.| 1.5
    values[0:2, 0:3, 0:2] = 2.0
    values[0:2, 0:3, 2:4] = -1.0
    labels[5:7, 6:8, 7:9] = 2  # 8 voxels at -4 -> mean -4, mean |.| 4
    values[5:7, 6:8, 7:9] = -4.0
    values[3, 4, 5] = 10.0  # background: total |map| = 24 * 1.5 + 8 * 4 + 10 = 78
    return values, labels


def test_region_summary_hand_checked(tmp_path, labelled) -> None:
    values, labels = labelled
    labels_path = tmp_path / "regions.nii.gz"
    nib.save(nib.Nifti1Image(labels.astype(np.float32), np.eye(4)), labels_path)
    names = {2: "ventricles", 1: "hippocampus", 3: "absent"}
    with pytest.warns(UserWarning, match=r"labels \[3\] named in names do not occur"):
        table = region_summary(torch.from_numpy(values)[None, None], labels_path, names)
    expected = pd.DataFrame({
        "label": [1, 2, 3], "region": ["hippocampus", "ventricles", "absent"],
        "n_voxels": [24, 8, 0], "mean_signed": [0.5, -4.0, np.nan],
        "mean_abs": [1.5, 4.0, np.nan], "share_abs": [36 / 78, 32 / 78, 0.0],
    })
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_region_summary_bad_inputs(labelled) -> None:
    values, labels = labelled
    with pytest.raises(ValueError, match=r"labels_img_or_array has shape \(9, 8, 7\) but map has "
                                         r"shape \(7, 8, 9\)"):
        region_summary(values, labels.transpose(2, 1, 0), {1: "a"})
    with pytest.raises(ValueError, match="labels_img_or_array must hold whole-number.*such as 1.5"):
        region_summary(values, labels + 0.5, {1: "a"})
    with pytest.raises(TypeError, match=r"names must be a non-empty dict of int label -> str, "
                                        r"got \{'1': 'a'\}"):
        region_summary(values, labels, {"1": "a"})
    with pytest.warns(UserWarning, match=r"labels \[2\] in labels_img_or_array have no entry"):
        table = region_summary(values, labels, {1: "a"})
    assert table["label"].tolist() == [1]


# --- ground truth ---------------------------------------------------------------------------------


@pytest.fixture
def masks() -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid brain in a (16, 18, 14) box and a compact truth region inside it."""
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    radius = np.array([7.0, 8.0, 6.0])[:, None, None, None]
    brain = (((grid - centre) / radius) ** 2).sum(0) <= 1
    truth = np.zeros(SHAPE, bool)
    truth[4:8, 5:10, 4:8] = True
    return truth & brain, brain


def test_enrichment_concentrated_map(masks, rng: np.random.Generator) -> None:
    truth, brain = masks
    values = truth * 1.0 + rng.normal(0, 0.1, SHAPE)
    result = enrichment_auc(values, truth, brain)
    assert result["auc"] == pytest.approx(roc_auc_score(truth[brain], np.abs(values[brain])),
                                          abs=1e-12)
    signed = enrichment_auc(-values, truth, brain, signed=True)
    assert signed["auc"] == pytest.approx(roc_auc_score(truth[brain], -values[brain]), abs=1e-12)
    assert result["auc"] > 0.99 and signed["auc"] < 0.01
    assert result["n_truth"] == int(truth.sum()) and result["n_control"] == int((brain & ~truth).sum())


def test_enrichment_random_map(masks, rng: np.random.Generator) -> None:
    truth, brain = masks
    assert enrichment_auc(rng.normal(size=SHAPE), truth, brain)["auc"] == pytest.approx(
        0.5, abs=0.07)


def test_tissue_matched_enrichment_discounts_a_map_that_follows_grey_matter(
        masks, rng: np.random.Generator) -> None:
    # issue 15, item 2: the truth lies in grey matter; a map bright in all grey matter is not
    # specific to the truth, and only the tissue-matched comparison says so
    truth, brain = masks
    grey = np.zeros(SHAPE, bool)
    grey[2:10, :, :] = True
    truth = truth & grey
    tissue = np.where(grey, 1, 2)
    values = grey * 1.0 + rng.normal(0, 0.05, SHAPE)
    control = brain & ~truth
    grey_share = (control & grey).sum() / control.sum()  # controls that tie with the truth
    assert enrichment_auc(values, truth, brain)["auc"] == pytest.approx(1 - grey_share / 2,
                                                                        abs=0.05)
    matched = enrichment_auc(values, truth, brain, tissue=tissue)
    assert matched["auc"] == pytest.approx(0.5, abs=0.1)
    assert set(matched["by_tissue"]) == {1}  # no truth in white matter: that class is skipped
    assert matched["n_control"] == int((grey & brain & ~truth).sum())
    specific = values + truth * 1.0
    assert enrichment_auc(specific, truth, brain, tissue=tissue)["auc"] > 0.99


def test_subject_level_comparison(masks, rng: np.random.Generator) -> None:
    truth, brain = masks
    concentrated = np.stack([truth * 1.0 + rng.normal(0, 0.5, SHAPE) for _ in range(8)])
    noise = rng.normal(size=(8, *SHAPE))
    a, b = subject_enrichment(concentrated, truth, brain), subject_enrichment(noise, truth, brain)
    assert a.shape == (8,) and (a > b).all()
    assert a[0] == pytest.approx(enrichment_auc(concentrated[0], truth, brain)["auc"])
    paired = compare_enrichment(a, b, paired=True)
    assert paired["p"] == pytest.approx(1 / 256) and paired["median_a"] > paired["median_b"]
    groups = compare_enrichment(a, b[:5], paired=False)
    assert groups["test"] == "Mann-Whitney U" and groups["p"] < 0.01
    assert compare_enrichment(b, a, paired=True)["p"] > 0.9
    with pytest.raises(ValueError, match="one length"):
        compare_enrichment(a, b[:5], paired=True)
    with pytest.raises(ValueError, match=">= 2 finite values"):
        compare_enrichment(a[:1], b, paired=False)


def test_enrichment_bad_inputs(masks) -> None:
    truth, brain = masks
    values = np.ones(SHAPE)
    with pytest.raises(ValueError, match=r"truth_mask has shape \(14, 18, 16\) but map has shape "
                                         r"\(16, 18, 14\)"):
        enrichment_auc(values, truth.transpose(2, 1, 0), brain)
    with pytest.raises(ValueError, match=r"truth_mask must be binary.*threshold"):
        enrichment_auc(values, truth * 0.3, brain)
    with pytest.raises(ValueError, match=r"truth_mask must cover some but not all of brain_mask"):
        enrichment_auc(values, np.zeros(SHAPE, bool), brain)
    with pytest.raises(ValueError, match=r"map is zero everywhere inside brain_mask"):
        enrichment_auc(np.zeros(SHAPE), truth, brain)
    with pytest.raises(ValueError, match=r"tissue has shape"):
        enrichment_auc(values, truth, brain, tissue=np.ones((2, 2, 2), int))
    with pytest.raises(ValueError, match=r"no tissue class holds both"):
        enrichment_auc(values, truth, brain, tissue=np.where(truth, 1, 2))


# --- integrated gradients: the sign property on models whose answer is known -----------------------


class _RegionAge(nn.Module):
    """Predicted age = 50 + 20 * mean intensity inside ``region``; nothing else counts."""

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("region", torch.as_tensor(region, dtype=torch.float32))
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x[:, 0] * self.region).sum(dim=(1, 2, 3)) / self.region.sum()  # (B,)
        return 50.0 + self.gain * torch.tanh(inside)


def test_integrated_gradients_of_a_linear_model_is_weight_times_difference(rng) -> None:
    weights = torch.as_tensor(rng.normal(size=(1, *SHAPE)), dtype=torch.float32)

    class Linear(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 40.0 + (x * weights).sum(dim=(1, 2, 3, 4))  # (B,)

    x = torch.randn(3, 1, *SHAPE)
    baseline = torch.randn(SHAPE)
    maps, delta = integrated_gradients(Linear(), x, baseline, n_steps=2, return_delta=True)
    torch.testing.assert_close(maps, weights * (x - baseline), rtol=1e-5, atol=1e-5)
    assert delta.abs().max() < 1e-3


def test_integrated_gradients_sign_means_older_or_younger_than_the_reference() -> None:
    # issue 15, item 1: a positive voxel must mean "pushes the predicted age above the
    # reference's prediction"; here the answer is known: only the region counts, and a
    # brighter region means older
    region = np.zeros(SHAPE, bool)
    region[4:9, 6:12, 3:8] = True
    model = _RegionAge(region)
    baseline = torch.full((1, *SHAPE), 0.5)
    older = baseline.clone()
    older[0, torch.as_tensor(region)] = 0.9
    younger = baseline.clone()
    younger[0, torch.as_tensor(region)] = 0.1
    x = torch.stack([older, younger])  # (2, 1, D, H, W)
    maps, delta = integrated_gradients(model, x, baseline, n_steps=32, return_delta=True)
    with torch.no_grad():
        gap = model(x) - model(baseline[None])  # older: +, younger: -
    assert gap[0] > 0 > gap[1]
    inside = torch.as_tensor(region)
    assert (maps[0, 0][inside] > 0).all() and (maps[1, 0][inside] < 0).all()
    assert (maps[:, 0][:, ~inside] == 0).all()  # voxels the model ignores get nothing
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3, 4)), gap, rtol=1e-4, atol=1e-4)
    assert delta.abs().max() < 1e-4
    assert model.gain.grad is None  # no parameter gradient accumulated


def test_integrated_gradients_completeness_on_a_smooth_network(x: torch.Tensor) -> None:
    # attributions add up to f(x) - f(baseline); a smooth network makes the quadrature exact
    # to a few digits with 16 nodes (a ReLU network's integrand is piecewise constant)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Softplus(), nn.Conv3d(4, 1, 3),
                        nn.Softplus(), nn.Flatten(), nn.LazyLinear(1))
    net(x)  # materialise the lazy layer
    baseline = x.mean(dim=0)  # (1, D, H, W): the batch's mean scan
    maps, delta = integrated_gradients(net, 3 * x, baseline, n_steps=16, return_delta=True)
    with torch.no_grad():
        gap = net(3 * x).reshape(-1) - net(baseline[None]).reshape(-1)
    assert maps.shape == (2, 1, *SHAPE)
    assert (delta.abs() <= 1e-3 * gap.abs().max()).all()


def test_integrated_gradients_leaves_the_model_as_it_was(model: nn.Module, x: torch.Tensor) -> None:
    state = copy.deepcopy(model.state_dict())
    integrated_gradients(model, x, x[0], n_steps=1)
    assert model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])  # batch-norm statistics untouched


def test_integrated_gradients_bad_inputs(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"baseline must have shape \(16, 18, 14\)"):
        integrated_gradients(model, x, torch.zeros(4, 4, 4))
    with pytest.raises(TypeError, match="baseline must be a Tensor or ndarray"):
        integrated_gradients(model, x, [0.0])
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        integrated_gradients(model, x, x[0], n_steps=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, D, H, W\)"):
        integrated_gradients(model, x[0], x[0])


def test_save_attribution_maps_checks_every_map(tmp_path) -> None:
    region = np.zeros(SHAPE, bool)
    region[4:9, 6:12, 3:8] = True
    model = _RegionAge(region)
    levels = (0.1, 0.3, 0.7, 0.9)
    images = [torch.full((1, *SHAPE), level) for level in levels]
    dataset = [{"image": image, "participant_id": f"sub-{i}"} for i, image in enumerate(images)]
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    table = save_attribution_maps(model, dataset, np.full(SHAPE, 0.5), affine, tmp_path,
                                  n_steps=16, batch_size=3, brain_mask=region)
    assert table["participant_id"].tolist() == ["sub-0", "sub-1", "sub-2", "sub-3"]
    np.testing.assert_allclose(table["attribution_sum"],
                               table["predicted"] - table["baseline_predicted"], atol=1e-3)
    assert table["positive_fraction"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert table["positive_share"].tolist() == [0.0, 0.0, 1.0, 1.0]
    np.testing.assert_allclose(table["delta"], 0.0, atol=1e-3)
    saved = nib.load(table["path"].iloc[3])
    np.testing.assert_allclose(saved.affine, affine)
    assert float(np.asarray(saved.dataobj).sum()) == pytest.approx(table["attribution_sum"].iloc[3],
                                                                   rel=1e-4)


def test_layer_shape_is_the_grad_ram_resolution(model: nn.Module, x: torch.Tensor) -> None:
    # stride-2 stem and max pool: 16 x 18 x 14 -> 4 x 5 x 4 at layer1, halved again at layer2
    assert layer_shape(model, x, "layer1") == (4, 5, 4)
    assert layer_shape(model, x, "layer2") == (2, 3, 2)


def test_gradram_sign_table_batches_like_one_scan_at_a_time(model: nn.Module) -> None:
    # issue 27, item 7: notebook 04's Grad-RAM sign readout over the test set, now in the package
    shape = (7, 8, 9)  # unequal sides
    images = torch.randn(5, 1, *shape, generator=torch.Generator().manual_seed(3))
    dataset = [{"image": image, "participant_id": f"sub-{i}"} for i, image in enumerate(images)]
    brain = np.zeros(shape, bool)
    brain[1:6, 2:7, 1:8] = True
    table = gradram_sign_table(model, dataset, "layer1", brain, batch_size=2)
    assert table["participant_id"].tolist() == [f"sub-{i}" for i in range(5)]
    for i, image in enumerate(images):
        alone = grad_ram(model, image[None], "layer1")[0, 0].numpy()[brain]  # (n_brain,)
        assert table["gradram_positive"].iloc[i] == pytest.approx((alone > 0).mean(), abs=1e-6)
        share = alone.clip(0, None).sum() / np.abs(alone).sum()
        assert table["gradram_share"].iloc[i] == pytest.approx(share, rel=1e-4)
    assert table["gradram_positive"].between(0, 1).all() and table["gradram_share"].between(0, 1).all()


def test_gradram_sign_table_refuses_a_mask_of_another_shape(model: nn.Module) -> None:
    dataset = [{"image": torch.zeros(1, 7, 8, 9), "participant_id": "sub-0"}]
    with pytest.raises(ValueError, match=r"brain_mask has shape \(9, 8, 7\) but map has shape "
                                         r"\(7, 8, 9\)"):
        gradram_sign_table(model, dataset, "layer1", np.ones((9, 8, 7), bool))
    with pytest.raises(ValueError, match="batch_size"):
        gradram_sign_table(model, dataset, "layer1", np.ones((7, 8, 9), bool), batch_size=0)


def test_offset_category_splits_at_the_threshold() -> None:
    offsets = pd.Series([-10.5, -10.0, 0.0, 10.0, 10.01, 35.0])
    assert offset_category(offsets).tolist() == [
        "> 10 y below reference", "within 10 y", "within 10 y", "within 10 y",
        "> 10 y above reference", "> 10 y above reference"]
    assert offset_category([-6.0, 6.0], years=5).tolist() == ["> 5 y below reference",
                                                               "> 5 y above reference"]


def test_offset_category_refuses_a_missing_prediction() -> None:
    with pytest.raises(ValueError, match=r"offset has 1 non-finite value\(s\) \(first at index 2\)"):
        offset_category([1.0, -20.0, float("nan")])
    with pytest.raises(ValueError, match="years must be a positive number, got 0"):
        offset_category([1.0], years=0)
