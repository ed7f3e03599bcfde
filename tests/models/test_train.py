"""Tests of brainage.models.train: data, configs, checkpoints, exact resume, frozen encoder, DDP."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from brainage.models import train as train_module
from brainage.models.augment import AugmentConfig
from brainage.models.datasets import VolumeDataset
from brainage.models.network import ModelConfig, build_encoder
from brainage.models.train import (
    LOG_COLUMNS,
    TrainConfig,
    encode,
    gather_views,
    load_model,
    predict,
    resolve_device,
    train_l1,
    train_rnc,
)

TINY = ModelConfig(depth=10, widths=(4, 8, 16, 32))
SHAPE = (12, 14, 10)  # (D, H, W), unequal sides
FAST = dict(batch_size=4, eval_batch_size=8, progress=False, augment=AugmentConfig())


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cohort(rng: np.random.Generator, n: int, signal: float = 1.0) -> VolumeDataset:
    """Noise volumes whose mean intensity inside a central block is proportional to age."""
    ages = rng.uniform(20, 80, n)
    images = rng.normal(0.0, 0.2, size=(n, *SHAPE)).astype(np.float32)  # (N, D, H, W)
    images[:, 3:9, 4:10, 2:8] += (signal * ages / 50.0)[:, None, None, None].astype(np.float32)
    return VolumeDataset(images, ages, [f"sub-{i:03d}" for i in range(n)])


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[VolumeDataset, VolumeDataset]:
    return _cohort(rng, 16), _cohort(rng, 8)


# --- data ---------------------------------------------------------------------------------------


def test_volume_dataset_from_array(rng: np.random.Generator) -> None:
    images = rng.normal(size=(3, *SHAPE))
    ds = VolumeDataset(images, [30, 40.5, 50], ["a", "b", 7],
                       transform=lambda x: x * 2)
    item = ds[1]
    assert item["image"].shape == (1, *SHAPE)
    assert item["image"].dtype == torch.float32
    np.testing.assert_allclose(item["image"][0].numpy(), 2 * images[1], rtol=1e-6)
    assert item["age"] == 40.5 and item["participant_id"] == "b"
    assert ds[2]["participant_id"] == "7" and len(ds) == 3


def test_volume_dataset_from_paths(tmp_path: Path, rng: np.random.Generator) -> None:
    volume = rng.normal(size=SHAPE).astype(np.float32)
    np.save(tmp_path / "a.npy", volume)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "b.nii.gz")
    ds = VolumeDataset([tmp_path / "a.npy", str(tmp_path / "b.nii.gz")], [20, 30], ["a", "b"])
    for index in range(2):
        np.testing.assert_allclose(ds[index]["image"][0].numpy(), volume, rtol=1e-6)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((np.zeros((2, *SHAPE)), [1.0], ["a", "b"]), ValueError,
         "same length, got 2, 1 and 2"),
        ((np.zeros((2, *SHAPE)), [1.0, np.nan], ["a", "b"]), ValueError,
         r"ages must be finite; not finite for participant\(s\) \['b'\]"),
        ((np.zeros((2, 12, 14)), [1.0, 2.0], ["a", "b"]), ValueError,
         r"images array must have shape \(N, D, H, W\) or \(N, C, D, H, W\), got \(2, 12, 14\)"),
        ((["missing.npy"], [1.0], ["a"]), FileNotFoundError, r"images\[0\]: no such file"),
        (("scan.npy", [1.0], ["a"]), TypeError, "images must be an array or a sequence"),
    ],
)
def test_volume_dataset_errors(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        VolumeDataset(*args)


def test_volume_dataset_bad_file_suffix(tmp_path: Path) -> None:
    path = tmp_path / "scan.mgz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"images\[0\]: .*scan.mgz is neither .npy nor .nii"):
        VolumeDataset([path], [1.0], ["a"])[0]


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": -1}, "TrainConfig.epochs must be an integer >= 0, got -1"),
        ({"batch_size": 0}, "TrainConfig.batch_size must be an integer >= 1, got 0"),
        ({"optimizer": "adam"}, r"optimizer must be one of 'sgd', 'adamw', got 'adam' "
                                r"\(did you mean 'adamw'\?\)"),
        ({"schedule": "cosin"}, "did you mean 'cosine'"),
        ({"lr": 0.0}, "TrainConfig.lr must be a finite number > 0, got 0.0"),
        ({"temperature": float("nan")}, "TrainConfig.temperature must be a finite number > 0"),
        ({"weight_decay": -1e-4}, "TrainConfig.weight_decay must be a finite number >= 0"),
        ({"augment": {"flip_prob": 2.0}}, r"AugmentConfig.flip_prob must be a probability"),
    ],
)
def test_train_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_dict_round_trip() -> None:
    cfg = TrainConfig(epochs=3, augment=AugmentConfig(rotate_deg=5.0))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({"augment": None}).augment is None
    with pytest.raises(ValueError, match=r"'head_epoch' \(did you mean 'head_epochs'\?\)"):
        TrainConfig.from_dict({"head_epoch": 5})


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', .* got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' was requested"):
            resolve_device("cuda")


def test_train_errors(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    with pytest.raises(ValueError, match=r"head_epochs must be >= 1 for train_rnc \(.*\), got 0"):
        train_rnc(train_ds, val_ds, TINY, TrainConfig(head_epochs=0, **FAST), tmp_path)
    with pytest.raises(ValueError, match="epochs must be >= 1 for train_l1, got 0"):
        train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=0, **FAST), tmp_path)
    with pytest.raises(ValueError, match="16 scans, 16 per process, fewer than one batch "
                                         r"\(batch_size=32\)"):
        train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, **{**FAST, "batch_size": 32}),
                 tmp_path)
    with pytest.raises(ValueError, match=r"shape \(2, D, H, W\) \(model_cfg.in_channels=2\), "
                                         r"got \(1, 12, 14, 10\)"):
        train_l1(train_ds, val_ds, ModelConfig(widths=(4, 8, 16, 32), in_channels=2),
                 TrainConfig(epochs=1, **FAST), tmp_path)
    with pytest.raises(TypeError, match="model_cfg must be a ModelConfig, got dict"):
        train_l1(train_ds, val_ds, TINY.to_dict(), TrainConfig(epochs=1, **FAST), tmp_path)


# --- training, checkpoints, resume --------------------------------------------------------------


def test_l1_checkpoints_round_trip(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    result = train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=2, **FAST), tmp_path)
    assert result.best_checkpoint == tmp_path / "best.pt"
    payload = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert payload["model_config"] == TINY.to_dict()
    assert payload["age_mean"] == pytest.approx(train_ds.ages.mean())
    assert payload["age_scale"] == pytest.approx(train_ds.ages.std())
    assert payload["epoch"] == result.best_epoch
    assert payload["best_val_mae"] == pytest.approx(result.best_val_mae)
    last = torch.load(result.last_checkpoints["l1"], map_location="cpu", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "history", "versions"} <= set(last)

    model = load_model(result.best_checkpoint)
    predictions = predict(model, val_ds, batch_size=3)
    assert predictions.shape == (len(val_ds),)
    mae = np.abs(predictions - val_ds.ages).mean()
    assert mae == pytest.approx(result.best_val_mae, rel=1e-5)
    features = encode(model, val_ds, batch_size=2)
    assert features.shape == (len(val_ds), TINY.feature_dim)
    with torch.no_grad():  # the head applied to the encoded features gives the prediction
        head = model.head(torch.as_tensor(features, dtype=torch.float32)).float()
        again = (head * model.age_scale.float() + model.age_mean.float()).numpy()
    np.testing.assert_allclose(again.reshape(-1), predictions, rtol=1e-4, atol=1e-3)

    log = pd.read_csv(tmp_path / "log.csv")
    assert tuple(log.columns) == LOG_COLUMNS
    assert log["epoch"].tolist() == [1, 2] and (log["stage"] == "l1").all()
    assert log["val_mae"].min() == pytest.approx(result.best_val_mae)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint .*nothing.pt does not exist"):
        load_model(tmp_path / "nothing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a brainage checkpoint"):
        load_model(tmp_path / "other.pt")


def test_rnc_freezes_the_encoder_in_stage_two(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    cfg = TrainConfig(epochs=1, head_epochs=3, **FAST)
    result = train_rnc(train_ds, val_ds, TINY, cfg, tmp_path)
    stage1 = torch.load(tmp_path / "rnc_encoder_last.pt", weights_only=True)["model"]
    final = torch.load(result.best_checkpoint, weights_only=True)["model"]
    encoder_keys = [k for k in stage1 if k.startswith("encoder.")]
    assert any("running_mean" in k for k in encoder_keys)  # batch-norm statistics included
    for key in encoder_keys:
        assert torch.equal(stage1[key], final[key]), key
    assert not torch.equal(stage1["head.linear.weight"], final["head.linear.weight"])
    assert result.history["stage"].tolist() == ["rnc_encoder"] + ["rnc_head"] * 3
    with pytest.raises(ValueError, match="holds an RNC encoder without a trained head"):
        load_model(tmp_path / "rnc_encoder_last.pt")


class _Interrupt(Exception):
    """Stands in for a crash or a killed job after a checkpoint was written."""


@pytest.mark.parametrize(
    ("train_fn", "stop_stage"),
    [(train_l1, "l1"), (train_rnc, "rnc_encoder"), (train_rnc, "rnc_head")],
)
def test_resume_is_exact(data, tmp_path: Path, monkeypatch, train_fn, stop_stage: str) -> None:
    """3 epochs straight == 2 epochs, a crash, then a resumed call (bit for bit on CPU)."""
    train_ds, val_ds = data
    cfg = TrainConfig(epochs=3, head_epochs=3, **FAST)
    straight = train_fn(train_ds, val_ds, TINY, cfg, tmp_path / "straight")

    save_epoch = train_module._save_epoch

    def crash_after_epoch_two(stage, run, model_cfg, tracker, epoch, improved):
        save_epoch(stage, run, model_cfg, tracker, epoch, improved)
        if stage.name == stop_stage and epoch == 2:
            raise _Interrupt

    monkeypatch.setattr(train_module, "_save_epoch", crash_after_epoch_two)
    with pytest.raises(_Interrupt):
        train_fn(train_ds, val_ds, TINY, cfg, tmp_path / "resumed")
    monkeypatch.setattr(train_module, "_save_epoch", save_epoch)
    resumed = train_fn(train_ds, val_ds, TINY, cfg, tmp_path / "resumed")

    a = torch.load(straight.best_checkpoint, weights_only=True)
    b = torch.load(resumed.best_checkpoint, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    columns = ["stage", "epoch", "train_loss", "val_mae", "lr"]
    pd.testing.assert_frame_equal(straight.history[columns], resumed.history[columns])
    assert resumed.best_val_mae == straight.best_val_mae


def test_resume_refuses_changed_settings(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, **FAST), tmp_path)
    with pytest.raises(ValueError, match=r"cannot resume from .*l1_last.pt: settings differ "
                                         r"\(train_cfg.lr: 0.001 -> 0.1\)"):
        train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, lr=0.1, **FAST), tmp_path)
    fresh = train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, lr=0.1, resume=False, **FAST),
                     tmp_path)
    assert len(fresh.history) == 1


@pytest.mark.parametrize(("train_fn", "epochs", "lr"), [(train_l1, 10, 1e-2), (train_rnc, 6, 3e-3)])
def test_models_learn_a_simple_age_signal(rng: np.random.Generator, tmp_path: Path,
                                          train_fn, epochs: int, lr: float) -> None:
    """Intensity proportional to age: both methods beat the mean predictor by far.

    (Validation MAE / mean-predictor MAE was 0.25-0.32 for L1 and 0.10-0.24 for RNC over
    data seeds 0-2.)
    """
    train_ds, val_ds = _cohort(rng, 32), _cohort(rng, 16)
    cfg = TrainConfig(epochs=epochs, head_epochs=30, optimizer="adamw", lr=lr, head_lr=3e-2,
                      **{**FAST, "augment": None})
    result = train_fn(train_ds, val_ds, TINY, cfg, tmp_path)
    mean_predictor = np.abs(val_ds.ages - train_ds.ages.mean()).mean()
    assert result.best_val_mae < 0.5 * mean_predictor


def test_gather_views_is_the_identity_in_one_process() -> None:
    features, labels = torch.randn(3, 2, 5), torch.arange(3.0)
    out_features, out_labels = gather_views(features, labels)
    assert out_features is features and out_labels is labels


# --- DDP (gloo, 2 CPU processes) ----------------------------------------------------------------


def _ddp_worker(rank: int, world: int, init_file: str, folder: str) -> None:
    """Compare the DDP RNC loss and gradients with one process on the global batch; train."""
    from torch.nn.parallel import DistributedDataParallel

    from brainage.models.losses import RnCLoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)
        encoder = build_encoder(TINY).eval()  # eval: batch norm independent of the split
        reference = copy.deepcopy(encoder)
        generator = torch.Generator().manual_seed(1)
        views = torch.randn(4, 2, 1, *SHAPE, generator=generator)  # (B, 2, C, D, H, W)
        ages = torch.rand(4, generator=generator) * 60 + 20
        loss_fn = RnCLoss(temperature=2.0)
        reference_loss = loss_fn(reference(views.flatten(0, 1)).view(4, 2, -1), ages)
        reference_loss.backward()

        local = slice(2 * rank, 2 * rank + 2)
        ddp = DistributedDataParallel(encoder)
        features = ddp(views[local].flatten(0, 1)).view(2, 2, -1)  # (2B, F) -> (B, 2, F)
        loss = loss_fn(*gather_views(features, ages[local]))
        loss.backward()
        grad_diff = max((p.grad - q.grad).abs().max().item()
                        for p, q in zip(encoder.parameters(), reference.parameters()))
        grad_norm = max(q.grad.abs().max().item() for q in reference.parameters())

        rng = np.random.default_rng(0)
        result = train_rnc(_cohort(rng, 16), _cohort(rng, 8), TINY,
                           TrainConfig(epochs=1, head_epochs=2, probe_every=0, **FAST),
                           Path(folder) / "run")
        torch.save({"loss": loss.item(), "reference_loss": reference_loss.item(),
                    "grad_diff": grad_diff, "grad_norm": grad_norm,
                    "best_val_mae": result.best_val_mae},
                   Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gloo_matches_one_process(tmp_path: Path) -> None:
    """Two gloo processes: the gathered RNC loss and the gradients equal the global-batch ones."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for res in results:
        assert res["loss"] == pytest.approx(res["reference_loss"], rel=1e-6)
        assert res["grad_norm"] > 0
        assert res["grad_diff"] <= 1e-5 * res["grad_norm"]
    assert results[0]["best_val_mae"] == results[1]["best_val_mae"]  # identical heads
    assert (tmp_path / "run" / "best.pt").exists()
    assert len(pd.read_csv(tmp_path / "run" / "log.csv")) == 3
    assert os.listdir(tmp_path / "run").count("rnc_head_last.pt") == 1


def test_permuted_age_model_sees_the_scans_without_their_ages(data, tmp_path: Path,
                                                            monkeypatch) -> None:
    # issue 15, item 2: the null model of the saliency enrichment trains on permuted ages
    train_ds, val_ds = data
    seen: list[dict] = []
    monkeypatch.setattr(train_module, "train_l1",
                        lambda train, val, *args: seen.append({"train": train, "val": val}))
    cfg = TrainConfig(epochs=1, head_epochs=0, **FAST)
    for _ in range(2):
        train_module.train_permuted_age_model(train_ds, val_ds, TINY, cfg, tmp_path)
    for name, original_ds in (("train", train_ds), ("val", val_ds)):
        permuted = seen[0][name]
        assert sorted(permuted.ages) == sorted(original_ds.ages)  # a permutation
        assert not np.array_equal(permuted.ages, original_ds.ages)
        assert permuted.ids == original_ds.ids
        np.testing.assert_array_equal(permuted[3]["image"], original_ds[3]["image"])
    np.testing.assert_array_equal(seen[1]["train"].ages, seen[0]["train"].ages)  # seeded


# --- init_from: fine-tuning a pretrained encoder -------------------------------------------------


def _encoder_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    model = load_model(checkpoint)
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


def test_init_from_starts_from_the_pretrained_encoder(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    pretrained = train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=2, seed=3, **FAST),
                          tmp_path / "pre").best_checkpoint
    # zero encoder epochs: the RNC encoder is exactly the pretrained one, only the head learns
    tuned = train_rnc(train_ds, val_ds, TINY,
                      TrainConfig(epochs=0, head_epochs=2, init_from=str(pretrained), **FAST),
                      tmp_path / "rnc")
    before, after = _encoder_state(pretrained), _encoder_state(tuned.best_checkpoint)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # the same run from scratch has another encoder
    scratch = train_rnc(train_ds, val_ds, TINY, TrainConfig(epochs=0, head_epochs=2, **FAST),
                        tmp_path / "scratch")
    assert any(not torch.equal(before[k], v)
               for k, v in _encoder_state(scratch.best_checkpoint).items()
               if v.is_floating_point())
    # L1 fine-tunes the whole network from the pretrained encoder: one epoch moves it a little
    l1 = train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, seed=5, init_from=pretrained,
                                                       lr=1e-5, **FAST), tmp_path / "l1")
    moved = _encoder_state(l1.best_checkpoint)
    weight = next(k for k in before if k.endswith("weight") and before[k].ndim == 5)
    change = (moved[weight] - before[weight]).abs().max() / before[weight].abs().max()
    assert 0 < change < 0.05


def test_init_from_errors(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    with pytest.raises(TypeError, match="init_from must be a checkpoint path"):
        TrainConfig(init_from=3)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, init_from=str(tmp_path / "missing.pt"),
                                                     **FAST), tmp_path / "a")
    pretrained = train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, **FAST),
                          tmp_path / "pre").best_checkpoint
    other = ModelConfig(depth=10, widths=(4, 8, 16, 16))
    with pytest.raises(ValueError, match=r"another architecture \(widths"):
        train_l1(train_ds, val_ds, other, TrainConfig(epochs=1, init_from=str(pretrained), **FAST),
                 tmp_path / "b")


def test_init_from_is_a_resume_setting(data, tmp_path: Path) -> None:
    train_ds, val_ds = data
    pretrained = train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, **FAST),
                          tmp_path / "pre").best_checkpoint
    train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=1, **FAST), tmp_path / "run")
    with pytest.raises(ValueError, match="train_cfg.init_from"):
        train_l1(train_ds, val_ds, TINY, TrainConfig(epochs=2, init_from=str(pretrained), **FAST),
                 tmp_path / "run")
