"""Tests of brainage.models.network: MONAI 3D ResNet encoder, regressor, model, in-place ReLU handling."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ResNet
from torch import nn

from brainage.models.network import (
    MODEL_PRESETS,
    BrainAgeModel,
    ModelConfig,
    Regressor,
    build_encoder,
    build_model,
    disable_inplace_relu,
)

TINY = ModelConfig(depth=10, widths=(4, 8, 16, 32))
SHAPE = (1, 12, 14, 10)  # (C, D, H, W), unequal sides


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _inputs(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("cfg", "feature_dim"),
    [
        (TINY, 32),
        (ModelConfig(depth=18, widths=(4, 8, 16, 24)), 24),
        (ModelConfig(depth=10, widths=(4, 8, 16, 32), conv1_stride=1, no_max_pool=True), 32),
        (ModelConfig(depth=50, widths=(2, 4, 4, 8), conv1_kernel=3), 32),  # bottleneck: 4 * 8
        (ModelConfig(depth=10, widths=(4, 8, 16, 32), shortcut_type="A"), 32),
    ],
)
def test_encoder_returns_pooled_features(cfg: ModelConfig, feature_dim: int) -> None:
    assert cfg.feature_dim == feature_dim
    encoder = build_encoder(cfg)
    features = encoder(_inputs(3))
    assert features.shape == (3, feature_dim)
    assert (features >= 0).all()  # pooled ReLU outputs, no normalisation or projection


def test_presets() -> None:
    assert MODEL_PRESETS["paper"].depth == 18
    assert MODEL_PRESETS["paper"].widths == (64, 128, 256, 512)
    assert MODEL_PRESETS["quick"].conv1_stride == 2
    assert ModelConfig.from_dict(MODEL_PRESETS["quick"].to_dict()) == MODEL_PRESETS["quick"]


def test_model_forward_returns_years_and_starts_at_the_mean() -> None:
    torch.manual_seed(0)
    model = build_model(TINY, age_mean=47.5, age_scale=12.0).eval()
    ages = model(_inputs(4))
    assert ages.shape == (4,)
    assert ages.dtype == torch.float32
    torch.testing.assert_close(ages, torch.full((4,), 47.5))  # zero-initialised head
    with torch.no_grad():
        model.head.linear.bias.fill_(1.0)  # one normalised unit = age_scale years
    torch.testing.assert_close(model(_inputs(2)), torch.full((2,), 59.5))
    torch.testing.assert_close(model.normalise_age(torch.tensor([59.5, 35.5])),
                               torch.tensor([1.0, -1.0]))


def test_regressor_standardises_features() -> None:
    head = Regressor(3)
    features = torch.tensor([[1.0, 10.0, 0.0], [3.0, 30.0, 0.0]])  # (N, D); last column constant
    head.set_standardisation(features)
    torch.testing.assert_close(head.feature_mean, torch.tensor([2.0, 20.0, 0.0]))
    torch.testing.assert_close(head.feature_std, torch.tensor([1.0, 10.0, 1e-6]))
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(head(features), torch.tensor([-2.0, 2.0]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Regressor(3)(torch.zeros(2, 4)), r"shape \(B, 3\), got \(2, 4\)"),
        (lambda: Regressor(0), "in_features must be an integer >= 1, got 0"),
        (lambda: build_model(TINY)(torch.zeros(1, 12, 14, 10)), r"\(B, C, D, H, W\), got \(1, 12"),
        (lambda: BrainAgeModel(nn.Identity(), Regressor(2), age_scale=0.0), "age_scale .* got 0.0"),
        (lambda: build_encoder({"depth": 10}), "cfg must be a ModelConfig, got dict"),
    ],
)
def test_model_bad_inputs(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 11}, r"depth must be one of 10, 18, 34, 50, 101, 152, 200, got 11"),
        ({"depth": 180}, "did you mean 18"),
        ({"widths": (8, 16, 32)}, r"widths must be 4 positive integers .* got \(8, 16, 32\)"),
        ({"widths": (8, 16, 0, 32)}, "widths must be 4 positive integers"),
        ({"conv1_kernel": 4}, "conv1_kernel must be odd, got 4"),
        ({"conv1_stride": 0}, "conv1_stride must be an integer >= 1, got 0"),
        ({"shortcut_type": "C"}, "shortcut_type must be one of 'A', 'B', got 'C'"),
    ],
)
def test_model_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_model_config_from_dict_names_unknown_key() -> None:
    with pytest.raises(ValueError, match="'widht' \\(did you mean 'widths'\\?\\)"):
        ModelConfig.from_dict({"depth": 10, "widht": (4, 8, 16, 32)})
    assert ModelConfig.from_dict({"widths": [4, 8, 16, 32]}).widths == (4, 8, 16, 32)


def _monai_resnet() -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [4, 8, 16, 32], spatial_dims=3, n_input_channels=1,
                  conv1_t_stride=2, feed_forward=False)


@pytest.mark.parametrize("layer", ["bn1", "layer1.0.bn1", "layer4"])
def test_full_backward_hooks_work_without_inplace_relu(layer: str) -> None:
    """MONAI's blocks use ReLU(inplace=True); a Grad-CAM hook on a layer before one fails."""
    encoder = build_encoder(TINY)
    assert not any(getattr(m, "inplace", False) for m in encoder.modules())
    grads = []
    encoder.get_submodule(layer).register_full_backward_hook(lambda m, gi, go: grads.append(go[0]))
    encoder(_inputs(2)).sum().backward()
    assert len(grads) == 1 and torch.isfinite(grads[0]).all()


def test_disable_inplace_relu_fixes_a_monai_resnet() -> None:
    raw = _monai_resnet()
    raw.get_submodule("bn1").register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(RuntimeError, match="modified inplace"):
        raw(_inputs(2)).sum().backward()

    fixed = _monai_resnet()
    assert disable_inplace_relu(fixed) == 5  # stem + one shared ReLU per block (4 blocks)
    assert disable_inplace_relu(fixed) == 0
    fixed.get_submodule("bn1").register_full_backward_hook(lambda m, gi, go: None)
    fixed(_inputs(2)).sum().backward()
