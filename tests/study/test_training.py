"""Tests of brainage.study.training (seeds, init_from) and predict.pretrained_checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainage.imaging.registration import template_grid
from brainage.inference import model_folder
from brainage.models.datasets import VolumeDataset
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, load_model
from brainage.study import training

GRID_MM = 8.0
TINY = ModelConfig(depth=10, widths=(4, 8, 16, 32))
COMMON = dict(batch_size=2, augment=None, progress=False, device="cpu", probe_every=0)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def scans() -> tuple[VolumeDataset, VolumeDataset]:
    rng = np.random.default_rng(0)
    shape, _ = template_grid(GRID_MM, crop_to_brain=True)
    images = rng.gamma(2.0, 0.5, size=(8, *shape)).astype(np.float32)  # (N, D, H, W)
    ages = np.linspace(20.0, 80.0, 8)
    ids = [f"t{i}" for i in range(8)]
    return VolumeDataset(images[:6], ages[:6], ids[:6]), VolumeDataset(images[6:], ages[6:], ids[6:])


def _configs(seed: int = 0) -> dict[str, TrainConfig]:
    return {"rnc_cfg": TrainConfig(epochs=1, head_epochs=2, seed=seed, **COMMON),
            "l1_cfg": TrainConfig(epochs=1, seed=seed, **COMMON)}


@pytest.fixture(scope="module")
def pretrained(scans, tmp_path_factory) -> Path:
    """A model folder (model.json and both heads) on the 8 mm cropped grid."""
    root = tmp_path_factory.mktemp("pre") / "models"
    training.train_study_models(*scans, TINY, models_dir=root, **_configs(seed=7))
    model_folder.write_model_card(root, preprocess={"space": "MNI152NLin2009cSym", "grid_mm": GRID_MM,
                                          "skull_stripped": True, "crop_to_brain": True},
                        saliency_layer="encoder.layer2", profile="test")
    return root


def test_seeds_are_trained_into_their_own_folders(scans, tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = training.train_study_models(*scans, TINY, models_dir=models, n_seeds=2,
                                         **_configs(seed=4))
    assert result.seeds == (4, 5)
    assert result.rnc.best_checkpoint == models / "rnc" / "best.pt"
    assert result.checkpoints[5]["l1"] == models / "seeds" / "seed-5" / "l1" / "best.pt"
    record = json.loads((models / training.SEEDS_FILE).read_text())
    assert record["seeds"] == [4, 5] and record["init_from"] is None
    assert record["checkpoints"]["5"] == {"rnc": "seeds/seed-5/rnc/best.pt",
                                          "l1": "seeds/seed-5/l1/best.pt"}
    # each seed's model is its own draw: another seed, other weights
    a = load_model(result.checkpoints[4]["l1"]).state_dict()
    b = load_model(result.checkpoints[5]["l1"]).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    # the models folder's heads are the first seed's only (model card, brainage predict)
    assert [p.name for p in model_folder.head_dirs(models)] == ["rnc", "l1"]


def test_a_seed_repeats_its_training_exactly(scans, tmp_path: Path) -> None:
    one = training.train_study_models(*scans, TINY, models_dir=tmp_path / "a", n_seeds=2,
                                      **_configs())
    two = training.train_study_models(*scans, TINY, models_dir=tmp_path / "b", **_configs(seed=1))
    a = load_model(one.checkpoints[1]["rnc"]).state_dict()
    b = load_model(two.checkpoints[1]["rnc"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_fine_tunes_each_head_from_its_pretrained_encoder(scans, pretrained,
                                                                    tmp_path: Path) -> None:
    start = model_folder.pretrained_checkpoints(pretrained, grid_mm=GRID_MM, crop_to_brain=True)
    assert start == {"rnc": pretrained / "rnc" / "best.pt", "l1": pretrained / "l1" / "best.pt"}
    cfg = {"rnc_cfg": TrainConfig(epochs=0, head_epochs=2, **COMMON),
           "l1_cfg": TrainConfig(epochs=1, **COMMON)}
    result = training.train_study_models(*scans, TINY, models_dir=tmp_path / "m",
                                         init_from=start, **cfg)
    before = load_model(start["rnc"]).encoder.state_dict()
    after = load_model(result.rnc.best_checkpoint).encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # 0 encoder epochs
    record = json.loads((tmp_path / "m" / training.SEEDS_FILE).read_text())
    assert record["init_from"] == {h: str(p) for h, p in start.items()}


def test_init_from_errors(scans, pretrained, tmp_path: Path) -> None:
    with pytest.raises(model_folder.ModelFolderError, match="no model.json"):
        model_folder.pretrained_checkpoints(tmp_path, grid_mm=GRID_MM, crop_to_brain=True)
    with pytest.raises(model_folder.ModelFolderError, match=r"trained on a 8.0 mm grid.*onto 4.0 mm"):
        model_folder.pretrained_checkpoints(pretrained, grid_mm=4.0, crop_to_brain=True)
    changed = tmp_path / "changed"
    shutil.copytree(pretrained, changed)
    (changed / "l1" / "best.pt").write_bytes((changed / "l1" / "best.pt").read_bytes() + b"x")
    with pytest.raises(model_folder.ModelFolderError, match=r"l1/best.pt is not the one .*SHA-256"):
        model_folder.pretrained_checkpoints(changed, grid_mm=GRID_MM, crop_to_brain=True)
    with pytest.raises(ValueError, match=r"no checkpoint for head\(s\) \['l1'\]"):
        training.train_study_models(*scans, TINY, models_dir=tmp_path / "x",
                                    init_from={"rnc": pretrained / "rnc" / "best.pt"},
                                    **_configs())
    with pytest.raises(ValueError, match="inside this run's models folder"):
        training.train_study_models(
            *scans, TINY, models_dir=pretrained,
            init_from=model_folder.pretrained_checkpoints(pretrained, grid_mm=GRID_MM, crop_to_brain=True),
            **_configs())
    with pytest.raises(ValueError, match="n_seeds"):
        training.train_study_models(*scans, TINY, models_dir=tmp_path / "y", n_seeds=0,
                                    **_configs())


def test_seed_summary() -> None:
    repeats = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "model": ["rnc", "l1"] * 3,
                            "n": 10, "mae": [4.0, 5.0, 5.0, 5.5, 6.0, 5.0]})
    out = training.seed_summary(repeats)
    assert out["n_seeds"] == 3
    assert out["models"]["rnc"] == pytest.approx({"mean": 5.0, "sd": 1.0, "min": 4.0, "max": 6.0})
    diff = out["difference"]  # per seed: -1.0, -0.5, +1.0
    assert diff["mean"] == pytest.approx(-1 / 6) and diff["min"] == -1.0 and diff["max"] == 1.0
    assert diff["sd"] == pytest.approx(np.std([-1.0, -0.5, 1.0], ddof=1))
    single = training.seed_summary(repeats[repeats["seed"] == 0].assign(seed=None))
    assert single["n_seeds"] == 1 and single["models"]["l1"]["sd"] is None
