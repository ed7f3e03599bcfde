"""The real-data path end to end: the ``ixi`` profile on the ten raw IXI scans of ../shared.

The point is that every notebook and the book build on real raw heads (registration, QC, a
cohort without patients, no ground truth); with ten subjects and a tiny schedule the numbers
mean nothing. The profile is the repository's ``ixi`` profile with the tiny profile's training
schedule, on the default preprocessing grid so that the registrations are shared with
test_preprocess through one cache.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from brainage.imaging.preprocess import PreprocessParams
from brainage.imaging.registration import registration_passes
from brainage.study.book import build
from tests.conftest import IXI10, REPO_ROOT, copy_project_into

from .test_book import NOTEBOOKS

#: Keys taken from the tiny profile: its model and schedule (seconds on CPU).
TINY_KEYS = ("model_depth", "model_widths", "conv1_stride", "epochs", "l1_epochs", "head_epochs",
             "batch_size", "n_boot", "device")


def _smoke_profile(repo_root: Path, root: Path) -> Path:
    ixi = yaml.safe_load((repo_root / "notebooks" / "params" / "ixi.yaml").read_text())
    tiny = yaml.safe_load((repo_root / "notebooks" / "params" / "tiny.yaml").read_text())
    default = PreprocessParams()  # the grid test_preprocess registers the ten scans onto
    params = ixi | {key: tiny[key] for key in TINY_KEYS} | {
        "profile": "ixi10", "run_dir": "runs/ixi10", "grid_mm": default.grid_mm,
        "crop_to_brain": default.crop_to_brain,
        # two validation subjects and a barely trained model: the predictions need not rise
        # with age, which the 'linear' correction requires; 'beheshti' fits any slope
        "bias_method": "beheshti"}
    path = root / "ixi10.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def build_ixi10(folder: Path, ixi10_cache: Path):
    """A copy of the project built on the ten IXI scans, with the session's ixi10 cache:
    :func:`ixi10_build`, computed in the background process of tests/conftest.py."""
    root = copy_project_into(REPO_ROOT, folder)
    (root / "data").mkdir()
    (root / "data" / "ixi").symlink_to(IXI10, target_is_directory=True)  # the manifest's root
    (root / ".cache" / "brainage").mkdir(parents=True)
    (root / ".cache" / "brainage" / "preprocessed").symlink_to(ixi10_cache, target_is_directory=True)
    report = build(_smoke_profile(REPO_ROOT, root), root=root)
    return root, report


@pytest.fixture(scope="module")
def ixi10_build(ixi10, ixi10_cache, background):
    return background.result("ixi10_build", ixi10_cache)


def _outputs(notebook: Path, marker: str) -> list[dict]:
    """Outputs of the code cells whose source contains ``marker``."""
    nb = nbformat.read(notebook, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" and marker in c.source
            for o in c.get("outputs", [])]


@pytest.mark.slow
def test_ixi_profile_builds_every_notebook_and_the_book(ixi10_build):
    root, report = ixi10_build
    assert list(report.notebooks) == NOTEBOOKS
    html = root / "book" / "_build" / "html"
    for stem in NOTEBOOKS:
        assert (html / "results" / f"{stem}.html").exists()
    run = root / "runs" / "ixi10"
    assert json.loads((run / "dataset.json").read_text())["space"] == "native"
    cohort = pd.read_csv(run / "cohort.csv")
    assert len(cohort) == 10 and set(cohort["group"]) == {"HC"} and set(cohort["site"]) == {"HH"}
    assert sorted(cohort["split"].value_counts().to_dict().items()) == [
        ("test", 2), ("train", 6), ("val", 2)]
    problems = pd.read_csv(run / "audit" / "problems.csv")
    assert not (problems["severity"] == "error").any(), problems


@pytest.mark.slow
def test_audit_shows_registration_qc_of_every_scan(ixi10_build):
    root, _ = ixi10_build
    run = root / "runs" / "ixi10"
    alignment = pd.read_csv(run / "audit" / "alignment.csv")
    assert len(alignment) == 10 and alignment["registration_misfit_mm"].map(registration_passes).all()
    outputs = _outputs(root / "book" / "results" / "01_data_audit.ipynb", "registration_qc(")
    texts = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert texts == ["The 10 scans with the highest misfit of 10 (registered here)."]
    # the panel figure is glued for its numbered caption: myst-nb's record of the PNG
    record = "application/papermill.record/image/png"
    images = [o["data"][record] for o in outputs if record in o.get("data", {})]
    assert len(images) == 1 and len(base64.b64decode(images[0])) > 50_000  # ten panels
    page = (root / "book" / "_build" / "html" / "results" / "01_data_audit.html").read_text()
    assert "Registration QC, scan by scan" in page


@pytest.mark.slow
def test_book_says_what_a_healthy_only_cohort_allows(ixi10_build):
    root, _ = ixi10_build
    html = root / "book" / "_build" / "html"
    intro = " ".join(re.sub(r"<[^>]+>", "", (html / "intro.html").read_text()).split())
    assert "This dataset has no AD or PD patients, so the clinical part of the question was not " \
           "addressed" in intro
    assert not re.search(r"\bnan\b", intro, re.IGNORECASE)
    assert "This build used the dataset ixi: 10 healthy controls, 0 AD and 0 PD patients" in intro
    assert "from 1 site. Controls were split by subject into 6 training, 2 validation and 2 test" \
        in intro
    interpretability = (html / "results" / "04_interpretability.html").read_text()
    assert "No regions: the dataset is not simulated and the manifest names no atlas" in interpretability
    assert "Not a simulated cohort" in interpretability


@pytest.mark.slow
def test_fine_tuning_on_real_scans_starts_from_the_pretrained_encoders(ixi10_build, repo_root,
                                                                        tmp_path):
    """init_from on the ten real scans, tiny schedule: each head's encoder starts from the
    pretrained folder's (here the smoke build's own models) and moves only a little."""
    from brainage.inference.model_folder import pretrained_checkpoints
    from brainage.models.network import ModelConfig
    from brainage.models.train import TrainConfig, load_model
    from brainage.study.runs import RunFolder
    from brainage.study.training import train_study_models

    root, _ = ixi10_build
    run = RunFolder(root / "runs" / "ixi10")
    tiny = yaml.safe_load((repo_root / "notebooks" / "params" / "tiny.yaml").read_text())
    model_cfg = ModelConfig(depth=tiny["model_depth"], widths=tuple(tiny["model_widths"]),
                            conv1_stride=tiny["conv1_stride"])
    default = PreprocessParams()
    start = pretrained_checkpoints(run.models, grid_mm=default.grid_mm,
                                   crop_to_brain=default.crop_to_brain)
    common = dict(batch_size=tiny["batch_size"], lr=1e-4, progress=False, device="cpu",
                  probe_every=0)
    train_ds, val_ds = run.dataset("train"), run.dataset("val")

    def encoders(init):
        out = train_study_models(train_ds, val_ds, model_cfg,
                                 models_dir=tmp_path / ("tuned" if init else "scratch"),
                                 init_from=init,
                                 rnc_cfg=TrainConfig(epochs=1, head_epochs=2, **common),
                                 l1_cfg=TrainConfig(epochs=1, **common))
        return {h: load_model(p).encoder.state_dict() for h, p in out.checkpoints[0].items()}

    def distance(state, before):
        return sum(float((state[k] - v).norm()) for k, v in before.items() if v.ndim == 5)

    tuned, scratch = encoders(start), encoders(None)
    for head, checkpoint in start.items():
        before = load_model(checkpoint).encoder.state_dict()
        assert distance(tuned[head], before) < 0.1 * distance(scratch[head], before), head
