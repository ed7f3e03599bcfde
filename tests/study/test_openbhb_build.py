"""The ``openbhb`` profile end to end on a synthetic OpenBHB tree made of simulated brains.

The real dataset is 5,300 arrays of 182 x 218 x 182; here 36 simulated healthy brains at 4 mm
are written in its layout (``participants.tsv`` with the official split, ``{train,val}/
derivatives/sub-*/ses-1/*_preproc-quasiraw_T1w.npy``, ``resource/`` template carrying the grid):
two sites for training and the internal test, the third as the external test. Notebooks 01-03
run with the tiny schedule; the benchmark table must come out complete.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainage.data.simulate import ensure_cohort
from brainage.study.book import build
from tests.conftest import REPO_ROOT, copy_project_into

#: The tiny profile's model and schedule, and its age-bias correction: a barely trained model's
#: predictions need not rise with age, which the 'linear' correction requires.
TINY_KEYS = ("model_depth", "model_widths", "conv1_stride", "epochs", "l1_epochs", "head_epochs",
             "batch_size", "n_boot", "device", "grid_mm", "bias_method")


def _openbhb_tree(simulated: pd.DataFrame, source, root) -> None:
    """Write the simulated BIDS cohort ``source`` as an OpenBHB tree in ``root``."""
    rng = np.random.default_rng(1)
    rows = []
    for i, row in enumerate(simulated.itertuples()):
        number = 1000 + i
        if row.site == "siteC":
            split = "external_test"
        else:
            split = "internal_test" if rng.random() < 0.25 else "train"
        folder = "train" if split == "train" else "val"
        img = nib.load(source / row.participant_id / "anat" / f"{row.participant_id}_T1w.nii.gz")
        target = (root / folder / "derivatives" / f"sub-{number}" / "ses-1" /
                  f"sub-{number}_preproc-quasiraw_T1w.npy")
        target.parent.mkdir(parents=True)
        np.save(target, np.asarray(img.dataobj, dtype=np.float32)[None])  # (1, X, Y, Z)
        rows.append({"participant_id": number, "split": split, "age": row.age, "sex": row.sex,
                     "site": int(row.site[-1], 36), "siteXacq": int(row.site[-1], 36),
                     "study": "SIM"})
    (root / "resource").mkdir()
    nib.save(img, root / "resource" / "quasiraw_space-MNI152_desc-brain_T1w.nii.gz")  # the grid
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)


def build_openbhb(folder: Path):
    """The synthetic OpenBHB tree and notebooks 01-03 on it: :func:`openbhb_build`, computed
    in the background process of tests/conftest.py."""
    root = copy_project_into(REPO_ROOT, folder / "openbhb_project")
    source = folder / "simulated"
    ensure_cohort(source, n_healthy=36, seed=3, resolution_mm=4.0)
    simulated = pd.read_csv(source / "participants.tsv", sep="\t")
    _openbhb_tree(simulated, source, root / "data" / "openbhb")
    profile = yaml.safe_load((REPO_ROOT / "notebooks" / "params" / "openbhb.yaml").read_text())
    tiny = yaml.safe_load((REPO_ROOT / "notebooks" / "params" / "tiny.yaml").read_text())
    params = profile | {k: tiny[k] for k in TINY_KEYS} | {"run_dir": "runs/openbhb_tiny"}
    path = root / "openbhb_tiny.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    build(path, root=root, book=False, only=["01_data_audit", "02_training", "03_evaluation"])
    return root / "runs" / "openbhb_tiny", simulated


@pytest.fixture(scope="module")
def openbhb_build(background):
    return background.result("openbhb_build")


@pytest.mark.slow
def test_official_split_is_kept(openbhb_build):
    run, simulated = openbhb_build
    cohort = pd.read_csv(run / "cohort.csv")
    assert len(cohort) == len(simulated)
    official = dict(zip(cohort["participant_id"], cohort["official_split"]))
    for row in cohort.itertuples():
        expected = {"train": ("train", "val"), "internal_test": ("test",),
                    "external_test": ("external_test",)}[official[row.participant_id]]
        assert row.split in expected, row
    assert set(cohort.loc[cohort["split"] == "external_test", "site"].astype(str)) == {"12"}
    assert "12" not in set(cohort.loc[cohort["split"].isin(["train", "val"]), "site"].astype(str))


@pytest.mark.slow
def test_benchmark_metrics_are_reported(openbhb_build):
    run, _ = openbhb_build
    benchmark = pd.read_csv(run / "benchmark.csv")
    assert sorted(benchmark["model"].unique()) == ["l1", "rnc"]
    for _, rows in benchmark.groupby("model"):
        assert list(rows["metric"]) == ["mae_internal", "mae_external", "site_bacc",
                                        "challenge_score"]
        values = rows.set_index("metric")["value"]
        assert np.isfinite(values).all() and 0 <= values["site_bacc"] <= 1
        assert values["challenge_score"] == pytest.approx(
            values["mae_external"] * values["site_bacc"] + values["mae_internal"] / 64)
    predictions = pd.read_csv(run / "predictions.csv")
    external = predictions[predictions["split"] == "external_test"]
    assert len(external) == 2 * (pd.read_csv(run / "cohort.csv")["split"] == "external_test").sum()
    assert external["corrected_predicted"].notna().all()
