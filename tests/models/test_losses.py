"""Tests of brainage.models.losses: RnCLoss against the direct definition of Zha et al. (2023)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainage.models.losses import RnCLoss, _tie_groups, rnc_loss_reference


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def literal_rnc(features: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """The equation of Zha et al. written out term by term with math.exp/math.log (tiny N)."""
    z = np.concatenate([features[:, 0], features[:, 1]], axis=0)  # (N, 2, D) -> (2N, D)
    y = np.concatenate([labels, labels])  # (2N,)
    n = len(z)
    s = [[-math.dist(z[i], z[j]) / temperature for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if j == i:
                continue
            d_ij = abs(y[i] - y[j])
            den = sum(math.exp(s[i][k]) for k in range(n) if k != i and abs(y[i] - y[k]) >= d_ij)
            total += -math.log(math.exp(s[i][j]) / den)
    return total / (n * (n - 1))


def make_inputs(rng: np.random.Generator, n: int, d: int, tied: bool) -> tuple[torch.Tensor, ...]:
    features = torch.from_numpy(rng.normal(size=(n, 2, d)))
    if tied:  # few distinct integer ages: many ties in label distance
        labels = torch.from_numpy(rng.integers(20, 24, size=n).astype(np.float64))
    else:
        labels = torch.from_numpy(rng.uniform(20, 80, size=n))
    return features, labels


# --- agreement with the direct definition ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [2, 3, 8, 17])
@pytest.mark.parametrize("d", [1, 5])
@pytest.mark.parametrize("tied", [False, True])
def test_matches_reference(seed: int, n: int, d: int, tied: bool) -> None:
    features, labels = make_inputs(np.random.default_rng(seed), n, d, tied)
    loss = RnCLoss(temperature=2.0)(features, labels)
    expected = rnc_loss_reference(features, labels, temperature=2.0)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - expected.item()) <= 1e-6 * abs(expected.item())
    assert abs(loss.item() - expected.item()) <= 1e-12  # float64 rounding in practice


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_reference_matches_literal_equation(rng: np.random.Generator, tied: bool,
                                            temperature: float) -> None:
    features, labels = make_inputs(rng, 5, 3, tied)
    expected = literal_rnc(features.numpy(), labels.numpy(), temperature)
    assert rnc_loss_reference(features, labels, temperature).item() == pytest.approx(expected,
                                                                                      rel=1e-12)
    assert RnCLoss(temperature)(features, labels).item() == pytest.approx(expected, rel=1e-12)


def test_all_labels_equal(rng: np.random.Generator) -> None:
    # Every k != i is a negative for every pair: a plain softmax over each row.
    features = torch.from_numpy(rng.normal(size=(6, 2, 4)))
    labels = torch.full((6,), 50.0, dtype=torch.float64)
    loss = RnCLoss(1.0)(features, labels)
    assert loss.item() == pytest.approx(rnc_loss_reference(features, labels, 1.0).item(), rel=1e-12)
    literal = literal_rnc(features.numpy(), labels.numpy(), 1.0)
    assert loss.item() == pytest.approx(literal, rel=1e-12)


def test_labels_column_vector_equals_flat(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 8, 5, tied=True)
    loss_fn = RnCLoss()
    assert loss_fn(features, labels[:, None]).item() == loss_fn(features, labels).item()
    assert rnc_loss_reference(features, labels[:, None]).item() == pytest.approx(
        loss_fn(features, labels).item(), rel=1e-12
    )


def test_integer_labels(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 8, 5, tied=True)
    loss_int = RnCLoss()(features, labels.to(torch.int64))
    assert loss_int.item() == pytest.approx(RnCLoss()(features, labels).item(), rel=1e-12)


def realistic_features(rng: np.random.Generator, kind: str, n: int = 32,
                       d: int = 256) -> torch.Tensor:
    """Two views per scan near a per-scan centre, in the shapes an encoder produces (float64)."""
    centres = rng.normal(size=(n, 1, d))
    views = centres + 0.3 * rng.normal(size=(n, 2, d))  # (N, 1, D) + (N, 2, D) -> (N, 2, D)
    if kind == "l2-normalised":
        views = views / np.linalg.norm(views, axis=-1, keepdims=True)
    elif kind == "scale 10":
        views = 10 * views
    elif kind == "scale 100, offset 300":
        views = 100 * views + 300
    elif kind == "relu, scale 50":
        views = np.maximum(50 * views + 25, 0)
    return torch.from_numpy(views)


@pytest.mark.parametrize("kind", ["l2-normalised", "scale 10", "scale 100, offset 300",
                                  "relu, scale 50"])
@pytest.mark.parametrize("temperature", [2.0, 0.1])
def test_float32_matches_float64_reference_on_realistic_features(
        rng: np.random.Generator, kind: str, temperature: float) -> None:
    # The matrix-product distances in float32: the bound of the module docstring, 1e-5 relative.
    features = realistic_features(rng, kind)
    labels = torch.from_numpy(rng.integers(20, 91, size=len(features)).astype(np.float64))
    x64 = features.clone().requires_grad_(True)
    expected = rnc_loss_reference(x64, labels, temperature)
    x32 = features.float().requires_grad_(True)
    loss32 = RnCLoss(temperature)(x32, labels.float())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(expected.item(), rel=1e-5)
    expected.backward()
    loss32.backward()
    relative = (x32.grad.double() - x64.grad).norm() / x64.grad.norm()
    # float32 itself limits the gradient where logits reach ~1e4 (scale 100, tau 0.1): 4e-4,
    # as for the former cdist evaluation (7e-4); 1e-7 to 3e-5 at tau 2.
    assert relative.item() < 1e-3


def test_float32_close_to_float64(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 17, 5, tied=False)
    loss32 = RnCLoss()(features.float(), labels.float())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(rnc_loss_reference(features, labels).item(), rel=1e-5)


# --- hand-checked values ----------------------------------------------------------------------


def test_single_sample_is_zero() -> None:
    # N = 1, n = 2: the only pair (0, 1) has d = 0 and its denominator is {1}: -log(1) = 0.
    features = torch.tensor([[[0.0, 1.0], [3.0, -2.0]]], dtype=torch.float64)
    assert RnCLoss()(features, torch.tensor([40.0], dtype=torch.float64)).item() == 0.0


def test_hand_checked_two_samples() -> None:
    # z = [A1, B1, A2, B2] = [0, 3, 1, 3] (D = 1), y = [0, 1, 0, 1], temperature 1.
    # Anchor A1: s = (B1 -3, A2 -1, B2 -3); d = (1, 0, 1).
    #   j = B1, B2: denominator {B1, B2} -> log 2 each; j = A2: all -> log(1 + 2 e^-2).
    # Anchor B1: s = (A1 -3, A2 -2, B2 0); d = (1, 1, 0).
    #   j = A1: {A1, A2} -> log(1 + e); j = A2: log(1 + e^-1); j = B2: all -> log(1 + e^-3 + e^-2).
    # Anchor A2: s = (A1 -1, B1 -2, B2 -2); d = (0, 1, 1).
    #   j = A1: all -> log(1 + 2 e^-1); j = B1, B2: log 2 each.
    # Anchor B2: s = (A1 -3, B1 0, A2 -2); d = (1, 0, 1): same terms as anchor B1.
    e = math.e
    total = (4 * math.log(2) + math.log(1 + 2 * e**-2) + 2 * math.log(1 + e)
             + 2 * math.log(1 + e**-1) + 2 * math.log(1 + e**-3 + e**-2) + math.log(1 + 2 * e**-1))
    features = torch.tensor([[[0.0], [1.0]], [[3.0], [3.0]]], dtype=torch.float64)  # (2, 2, 1)
    labels = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert RnCLoss(temperature=1.0)(features, labels).item() == pytest.approx(total / 12, rel=1e-14)


# --- invariances --------------------------------------------------------------------------------


def test_permutation_invariance(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 9, 4, tied=True)
    perm = torch.from_numpy(rng.permutation(9))
    loss_fn = RnCLoss()
    base = loss_fn(features, labels).item()
    assert loss_fn(features[perm], labels[perm]).item() == pytest.approx(base, rel=1e-12)
    swapped = features.flip(1)  # swap the two views of every sample
    assert loss_fn(swapped, labels).item() == pytest.approx(base, rel=1e-12)


def test_scale_and_translation_invariance(rng: np.random.Generator) -> None:
    # s_ij depends on ||z_i - z_j|| / tau only, d_ij only on label differences.
    features, labels = make_inputs(rng, 7, 3, tied=False)
    base = RnCLoss(2.0)(features, labels).item()
    moved = RnCLoss(6.0)(3.0 * features + 1.5, labels + 10.0).item()
    assert moved == pytest.approx(base, rel=1e-12)


def test_label_order_matters(rng: np.random.Generator) -> None:
    # Embeddings sorted like their labels score lower than the same embeddings with labels reversed.
    ages = torch.linspace(20, 80, 10, dtype=torch.float64)
    features = torch.stack([ages[:, None], ages[:, None] + 0.1], dim=1)  # (10, 2, 1)
    loss_fn = RnCLoss(1.0)
    assert loss_fn(features, ages) < loss_fn(features, ages.flip(0))


# --- numerical stability and gradients ---------------------------------------------------------


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_large_distances_small_temperature(rng: np.random.Generator, scale: float) -> None:
    features, labels = make_inputs(rng, 8, 5, tied=True)
    features = (features * scale).requires_grad_(True)
    loss = RnCLoss(temperature=0.05)(features, labels)
    expected = rnc_loss_reference(features.detach(), labels, temperature=0.05)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    loss.backward()
    assert torch.isfinite(features.grad).all()


def test_large_distances_float32(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 8, 5, tied=False)
    features = (features.float() * 1e3).requires_grad_(True)
    loss = RnCLoss(temperature=0.05)(features, labels.float())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()


def test_gradcheck(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 5, 3, tied=True)
    features.requires_grad_(True)
    loss_fn = RnCLoss(temperature=0.7)
    assert torch.autograd.gradcheck(lambda f: loss_fn(f, labels), (features,))


def test_gradient_matches_reference(rng: np.random.Generator) -> None:
    features, labels = make_inputs(rng, 6, 4, tied=True)
    a = features.clone().requires_grad_(True)
    b = features.clone().requires_grad_(True)
    RnCLoss()(a, labels).backward()
    rnc_loss_reference(b, labels).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n", "d", "scale"), [(4, 3, 1.0), (32, 512, 30.0)])
def test_identical_views_give_finite_gradient(rng: np.random.Generator, dtype: torch.dtype,
                                             n: int, d: int, scale: float) -> None:
    # Coinciding embeddings (zero distance off the diagonal) must not produce NaN gradients; the
    # matrix product leaves rounding noise there, which the clamp before the square root absorbs.
    view = torch.from_numpy(scale * rng.normal(size=(n, 1, d)))
    features = torch.cat([view, view], dim=1).to(dtype).requires_grad_(True)  # (N, 2, D)
    labels = torch.arange(n, dtype=torch.float64)
    loss = RnCLoss()(features, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    expected = rnc_loss_reference(features.detach(), labels)  # finite value, NaN gradient
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    assert loss.item() == pytest.approx(expected.item(), rel=tolerance)
    # The two views of a scan receive the same gradient (the loss is symmetric in them).
    torch.testing.assert_close(features.grad[:, 0], features.grad[:, 1])


def test_all_features_equal_give_zero_gradient() -> None:
    # Every distance is 0, the diagonal included: the loss is the mean log of the number of
    # negatives, and no pair (nor the dropped diagonal) contributes a gradient or a NaN.
    features = torch.ones(5, 2, 4, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([20.0, 30.0, 30.0, 45.0, 70.0], dtype=torch.float64)
    loss = RnCLoss()(features, labels)
    loss.backward()
    assert loss.item() == pytest.approx(rnc_loss_reference(features.detach(), labels).item(),
                                        rel=1e-12)
    assert torch.equal(features.grad, torch.zeros_like(features))


@pytest.mark.parametrize("temperature", [0.05, 2.0])
def test_gradient_matches_reference_large_scale(rng: np.random.Generator,
                                                temperature: float) -> None:
    # The hand-written backward (a reversed log-cumsum-exp) stays exact where exp underflows.
    features, labels = make_inputs(rng, 8, 5, tied=True)
    features = 100 * features
    a = features.clone().requires_grad_(True)
    b = features.clone().requires_grad_(True)
    RnCLoss(temperature)(a, labels).backward()
    rnc_loss_reference(b, labels, temperature).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_autocast_and_half_precision(rng: np.random.Generator) -> None:
    # Autocast would run the distance product in bf16: the loss turns it off inside, and
    # evaluates bf16 features in float32.
    features, labels = make_inputs(rng, 16, 32, tied=False)
    features = features.float()
    plain = RnCLoss()(features, labels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = RnCLoss()(features, labels)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == plain.item()
    half = features.bfloat16()
    loss_bf16 = RnCLoss()(half, labels)
    assert loss_bf16.dtype == torch.bfloat16
    expected = rnc_loss_reference(half.float(), labels).item()
    assert loss_bf16.item() == pytest.approx(expected, rel=1e-2)  # bf16 rounding of the result


@pytest.mark.parametrize(
    ("row", "group_end", "group_size"),
    [
        ([5.0, 3.0, 3.0, 1.0], [0, 2, 2, 3], [1.0, 0.0, 2.0, 1.0]),
        ([2.0, 2.0, 2.0], [2, 2, 2], [0.0, 0.0, 3.0]),
        ([4.0, 3.0, 2.0], [0, 1, 2], [1.0, 1.0, 1.0]),
        ([7.0], [0], [1.0]),
    ],
)
def test_tie_groups_hand_checked(row: list, group_end: list, group_size: list) -> None:
    end, size = _tie_groups(torch.tensor([row, row], dtype=torch.float64))  # two equal rows
    assert end.tolist() == [group_end, group_end]
    assert size.tolist() == [group_size, group_size]


def test_gradgradcheck(rng: np.random.Generator) -> None:
    # Second derivatives go through the hand-written backward (which recomputes with a graph).
    features, labels = make_inputs(rng, 4, 3, tied=True)
    features.requires_grad_(True)
    loss_fn = RnCLoss(temperature=0.7)
    assert torch.autograd.gradgradcheck(lambda f: loss_fn(f, labels), (features,))
