"""Tests of brainage.study.trust on a tiny trained model: the training domain in the card, the
OOD reference (flags noise, inverted contrast and a wrong orientation; in-distribution scans at
about the chosen rate), conformal intervals on a run (coverage, no test-set leakage), the trust
columns of both tables, and validation of the stored files."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainage._utils import TRUST_VALUES
from brainage.analysis import evaluation
from brainage.cli import main
from brainage.imaging.preprocess import normalise_intensity, preprocess_file, resample_to_grid
from brainage.imaging.registration import template_grid, template_images
from brainage.inference import model_folder, trust
from brainage.inference import predict as bp
from brainage.models.features import capture_features, feature_size
from brainage.models.network import ModelConfig
from brainage.models.train import TrainConfig, encode, load_model, predict, train_l1, train_rnc
from brainage.study import runs
from brainage.study import trust as study_trust
from brainage.study.runs import RunFolder

MNI = "MNI152NLin2009cSym"
GRID_MM = 8.0  # the model's grid, cropped to the brain: (21, 25, 22); the scans lie on it too
SPLITS = {"train": 40, "val": 80, "test": 160}
LEVEL, RATE = 0.8, 0.1

pytestmark = pytest.mark.slow  # a model trained on 40 scans (about a minute on 2 cores)


def _brain(base: np.ndarray, brain: np.ndarray, age: float, rng: np.random.Generator
           ) -> np.ndarray:
    """The template with an age-dependent grey/white contrast (falling with age), a random
    intensity scale, a smooth bias field and 2 % noise."""
    inside = base[brain].mean()
    contrast = 1.3 - 0.01 * (age - 20)  # 1.3 at 20, 0.6 at 90
    data = np.where(brain, inside + (base - inside) * contrast, 0.0)
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in base.shape), indexing="ij")
    bias = np.exp(sum(rng.normal(0, 0.05) * axis for axis in axes))
    scale = rng.uniform(200, 800)
    return (data * bias * scale + rng.normal(0, 0.02 * scale, data.shape)).astype(np.float32)


def _save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = template_grid(GRID_MM, crop_to_brain=True)[1]
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


@pytest.fixture(scope="module")
def template_8mm() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's template on the model grid, and its brain."""
    template, _ = template_images()
    base = resample_to_grid(template, template_grid(GRID_MM, crop_to_brain=True))
    return base, base > 0.05 * base.max()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, template_8mm) -> RunFolder:
    """A run folder as notebooks 01-03 leave it: 280 scans (40 train, 80 val, 160 test), both
    heads trained briefly, the model card with its domain, OOD references, calibration."""
    import torch

    torch.manual_seed(0)
    base, brain = template_8mm
    root = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    affine = template_grid(GRID_MM, crop_to_brain=True)[1]
    # preprocess_file of a scan on the model grid, with the template mask computed once
    positive = _save(root / "positive.nii.gz", np.linspace(1, 2, base.size).reshape(base.shape))
    mask = preprocess_file(positive, space=MNI, grid_mm=GRID_MM,
                           crop_to_brain=True).get_fdata() > 0
    rows = []
    for split, n in SPLITS.items():
        for i, age in enumerate(rng.uniform(20, 90, n)):
            pid = f"sub-{split}{i:03d}"
            pre = root / "pre" / f"{pid}.nii.gz"
            pre.parent.mkdir(exist_ok=True)
            volume = normalise_intensity(_brain(base, brain, age, rng), mask)
            nib.save(nib.Nifti1Image(volume, affine), pre)
            rows.append({"participant_id": pid, "age": age, "sex": "F", "group": "HC",
                         "site": "A" if i % 2 else "B", "split": split,
                         "preprocessed": str(pre)})
    run = RunFolder(root / "run")
    run.path.mkdir()
    pd.DataFrame(rows).to_csv(run.cohort_csv, index=False)
    run.dataset_json.write_text(json.dumps({"name": "template-test", "root": str(root),
                                            "space": MNI, "skull_stripped": False,
                                            "simulated": True, "atlas": None}))
    train, val = run.dataset("train"), run.dataset("val")
    common = dict(batch_size=10, augment=None, progress=False, device="cpu", probe_every=0)
    cfg = ModelConfig(depth=10, widths=(4, 8, 16, 32))
    train_rnc(train, val, cfg, TrainConfig(epochs=3, head_epochs=30, **common), run.models / "rnc")
    train_l1(train, val, cfg, TrainConfig(epochs=12, lr=3e-3, **common), run.models / "l1")
    model_folder.write_model_card(run.models, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                                "skull_stripped": False, "crop_to_brain": True},
                        saliency_layer="encoder.layer2", profile="test",
                        domain=study_trust.training_domain(run))
    study_trust.fit_ood_references(run, run.models, rate=RATE, device="cpu")
    return run


def _evaluate(run: RunFolder, *, tamper=None, level: float = LEVEL):
    """Notebook 03's first cell: predictions with features, bias correction, trust columns."""
    models = {h: run.models / h / "best.pt" for h in ("rnc", "l1")}
    features: dict[str, np.ndarray] = {}
    raw = runs.predict_run(run, models, device="cpu", features=features)
    if tamper is not None:
        raw, features = tamper(raw, features)
    predictions, corrections = evaluation.correct_predictions(raw)
    for name, correction in corrections.items():
        (run.models / name / model_folder.BIAS_CORRECTION_FILE).write_text(
            json.dumps(correction.to_dict()))
    settings = study_trust.IntervalSettings(level=level, n_bins=2)
    table, trusts = study_trust.calibrate_run(run, predictions, corrections, features,
                                        settings=settings)
    return table, trusts, corrections


@pytest.fixture(scope="module")
def evaluated(study: RunFolder):
    return _evaluate(study)


def _predict_cli(tmp_path: Path, run: RunFolder, *scans: Path, ages=()) -> pd.DataFrame:
    out = tmp_path / "out.csv"
    argv = ["-q", "predict", *map(str, scans), "--model", str(run.models), "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--all-heads"]
    if ages:
        argv += ["--age", *map(str, ages)]
    assert main(argv) == 0
    return pd.read_csv(out)


# --- the model card -----------------------------------------------------------------------------


def test_card_records_the_training_domain(study: RunFolder) -> None:
    card = json.loads((study.models / model_folder.MODEL_CARD_FILE).read_text())
    train = study.rows("train")
    assert card["domain"] == {
        "dataset": "template-test", "simulated": True, "space": MNI, "skull_stripped": False,
        "n_train": 40, "n_val": 80, "age_range": [train["age"].min(), train["age"].max()],
        "sites": ["A", "B"], "ood_scope": study_trust.OOD_SCOPE}
    text = trust.domain_summary(card)
    assert "trained on 'template-test' (simulated), 40 scans aged" in text
    assert "no guard against another scanner" in text and "brainage calibrate" in text
    assert f"{MNI} scans on a 8.0 mm grid" in text


def test_card_with_a_bad_domain_is_refused(study: RunFolder, tmp_path: Path) -> None:
    shutil.copytree(study.models, tmp_path / "models")
    with pytest.raises(ValueError, match="domain.n_train must be an integer"):
        model_folder.write_model_card(tmp_path / "models", preprocess={"space": MNI, "grid_mm": GRID_MM},
                            saliency_layer=None, profile="x",
                            domain={"dataset": "d", "simulated": True, "n_train": "many",
                                    "age_range": [20, 80]})


# --- one forward pass for the age and the features ------------------------------------------------


def test_captured_features_hold_the_encoders_and_leave_the_age_unchanged(study) -> None:
    model = load_model(study.models / "l1" / "best.pt")
    data = study.dataset(study.rows("test").head(40))
    alone = predict(model, data, device="cpu")
    with capture_features(model) as captured:
        with_hook = predict(model, data, device="cpu")
    np.testing.assert_array_equal(alone, with_hook)
    features = captured.array()
    assert features.shape == (len(data), feature_size(model)) == (len(data), 2 * (4 + 8 + 16 + 32))
    # per stage: channel means, then standard deviations; the last stage's means are the
    # pooled features the head reads
    np.testing.assert_allclose(features[:, 56:88], encode(model, data, device="cpu"), rtol=1e-5,
                               atol=1e-6)
    assert (features[:, 88:] >= 0).all()
    with pytest.raises(TypeError, match="must have an encoder module"):
        with capture_features(object()):
            pass


# --- out-of-distribution flags ----------------------------------------------------------------


def test_in_distribution_scans_are_flagged_at_about_the_rate(evaluated) -> None:
    table, trusts, _ = evaluated
    for head in ("rnc", "l1"):
        rows = table[table["model"] == head]
        val = rows.loc[rows["split"] == "val", "ood"].astype(bool)
        test = rows.loc[rows["split"] == "test", "ood"].astype(bool)
        # the threshold is the conformal quantile of the validation scores: at most RATE there
        assert val.mean() <= RATE
        assert 0.02 <= test.mean() <= 0.22, (head, test.mean())
        assert trusts[head].ood.rate == RATE


@pytest.fixture(scope="module")
def broken_scans(study: RunFolder, template_8mm, tmp_path_factory) -> dict[str, Path]:
    """A good held-out scan and three a model must not trust, as NIfTI files."""
    base, brain = template_8mm
    folder = tmp_path_factory.mktemp("broken")
    good = _brain(base, brain, 50.0, np.random.default_rng(123))
    inverted = np.where(brain, good.max() - good, 0.0)  # CSF bright, white matter dark
    noise = np.random.default_rng(5).gamma(2.0, good[brain].mean() / 2, good.shape)
    return {"good": _save(folder / "good.nii.gz", good),
            "noise": _save(folder / "noise.nii.gz", noise),
            "inverted": _save(folder / "inverted.nii.gz", inverted),
            "upside_down": _save(folder / "upside_down.nii.gz", good[:, :, ::-1])}


def test_noise_inverted_contrast_and_wrong_orientation_are_flagged(
        study, evaluated, broken_scans, tmp_path) -> None:
    table = _predict_cli(tmp_path, study, *broken_scans.values())
    assert table["error"].isna().all(), table["error"].tolist()
    for head in ("rnc", "l1"):
        rows = table[table["head"] == head].set_index("participant_id")
        assert not rows.loc["good", "ood"], rows["ood_score"].to_dict()
        for name in ("noise", "inverted", "upside_down"):
            assert rows.loc[name, "ood"], (head, name, rows["ood_score"].to_dict())
            assert rows.loc[name, "ood_score"] > 1.0


# --- intervals --------------------------------------------------------------------------------


def test_test_split_coverage_is_about_the_level(evaluated) -> None:
    table, trusts, _ = evaluated
    test = table[table["split"] == "test"]
    report = study_trust.coverage_report(test, level=LEVEL, age_bins=[20, 55, 91])
    # Given its 80 calibration scans, a split-conformal interval's coverage is itself random
    # (Beta, SD about 0.045 at 0.8), on top of the 160 test scans' binomial SD (0.032): 3 SDs
    # together are about 0.15. The exact coverage is tested on synthetic residuals
    # (tests/analysis/test_uncertainty.py).
    for kind in ("age", "gap"):
        coverage = report[kind].set_index("model")["coverage"]
        assert (coverage - LEVEL).abs().max() <= 0.15, (kind, coverage.to_dict())
    assert set(report["by_site"]["site"]) == {"A", "B"}
    for head in ("rnc", "l1"):
        assert trusts[head].calibration.age.n == SPLITS["val"]
        rows = test[test["model"] == head]
        assert (rows["age_lower"] <= rows["predicted"]).all()
        assert (rows["predicted"] <= rows["age_upper"]).all()
        np.testing.assert_allclose(rows["interval_level"], LEVEL)


def test_predictions_table_has_the_trust_columns(evaluated, study) -> None:
    table, _, _ = evaluated
    assert list(table.columns) == [*evaluation.EVALUATION_COLUMNS, *TRUST_VALUES]
    assert table[["age_lower", "corrected_gap_lower", "ood_score"]].notna().all().all()
    assert not table["outside_age_range"].astype(bool).any() or (
        table.loc[table["outside_age_range"].astype(bool), "split"] != "train").all()
    stored = json.loads((study.models / "rnc" / model_folder.CONFORMAL_FILE).read_text())
    assert stored["format"] == model_folder.CONFORMAL_FORMAT and stored["calibration_split"] == "val"
    assert stored["corrected_gap"]["scheme"] == "cross-fit"


def test_tampering_with_test_rows_changes_no_calibration(study, evaluated) -> None:
    """Nothing of the test split reaches the bias correction, the intervals or the OOD
    threshold: rewriting the test predictions, ages and features changes none of them."""
    _, trusts, corrections = evaluated
    stored = {h: (study.models / h / model_folder.CONFORMAL_FILE).read_text() for h in trusts}

    def tamper(raw, features):
        raw = raw.copy()
        test = raw["split"] == "test"
        raw.loc[test, "predicted"] = 150.0
        raw.loc[test, "age"] = 5.0
        for head in features:
            rows = (raw["model"] == head).to_numpy()
            features[head][test.to_numpy()[rows]] = 1e6
        return raw, features

    table, again, corrections_again = _evaluate(study, tamper=tamper)
    for head in trusts:
        assert corrections_again[head] == corrections[head]
        assert (study.models / head / model_folder.CONFORMAL_FILE).read_text() == stored[head]
        assert again[head].ood.threshold == trusts[head].ood.threshold
    val = table[table["split"] == "val"]
    assert not val["ood"].astype(bool).all()
    assert table.loc[table["split"] == "test", "ood"].astype(bool).all()  # 1e6: flagged
    # the OOD reference reads only training and validation scans
    for path in study.rows("test")["preprocessed"]:
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), path)
    refit = study_trust.fit_ood_references(study, study.models, rate=RATE, device="cpu")
    for head in trusts:
        assert refit[head].threshold == trusts[head].ood.threshold
    _evaluate(study)  # restores the calibration of the untampered run for the other tests


# --- brainage predict -------------------------------------------------------------------------


def test_predict_csv_has_intervals_and_marks_ages_outside_training(study, evaluated,
                                                                 broken_scans, tmp_path,
                                                                 capsys) -> None:
    young = shutil.copy(broken_scans["good"], tmp_path / "young.nii.gz")
    table = _predict_cli(tmp_path, study, broken_scans["good"], young, ages=(50, 5))
    assert list(table.columns) == list(bp.OUTPUT_COLUMNS)
    assert table[["brain_age_lower", "brain_age_upper", "brain_age_gap_corrected_lower",
                  "brain_age_gap_corrected_upper", "ood_score"]].notna().all().all()
    assert (table["brain_age_lower"] <= table["brain_age"]).all()
    assert (table["brain_age"] <= table["brain_age_upper"]).all()
    assert (table["brain_age_gap_corrected_lower"] <= table["brain_age_gap_corrected"]).all()
    assert table["interval_level"].eq(LEVEL).all()
    assert table["outside_age_range"].tolist() == [False, True] * 2
    # a model trained on the simulated cohort, scans outside it: the warning in every row
    assert table["domain"].eq("sim2real").all()
    out = capsys.readouterr().out
    assert "trained on 'template-test' (simulated), 40 scans aged" in out
    assert "1 of 2 scan(s) outside the training ages (outside_age_range)" in out
    assert "domain: 2 of 2 sim2real" in out.splitlines()[-1]


def test_simulated_training_warns_once_on_real_scans(study, evaluated, broken_scans,
                                                     tmp_path) -> None:
    folder = model_folder.load_model_folder(study.models)
    good = broken_scans["good"]
    with pytest.warns(trust.DomainWarning, match="trained on simulated data") as record:
        bp.predict_scans([good, good, good], folder, cache=tmp_path / "cache")
    assert len([w for w in record if issubclass(w.category, trust.DomainWarning)]) == 1
    assert bp.predict_scans([good], folder, cache=tmp_path / "cache")["domain"].eq(
        "sim2real").all()
    simulated = tmp_path / "sim"
    shutil.copy(good, _save(simulated / "sub-1" / "anat" / "sub-1_T1w.nii.gz", np.zeros(1)))
    (simulated / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "GeneratedBy": [{"Name": "brainage.data.simulate"}]}))
    assert trust.is_simulated_scan(simulated / "sub-1" / "anat" / "sub-1_T1w.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", trust.DomainWarning)
        table = bp.predict_scans([simulated / "sub-1" / "anat" / "sub-1_T1w.nii.gz"], folder,
                                 cache=tmp_path / "cache")
    assert set(table["domain"]) <= {"ok", "ood"}  # in the training domain: no sim2real


def test_model_folder_without_trust_files_has_empty_columns(study, evaluated, broken_scans,
                                                           tmp_path) -> None:
    root = shutil.copytree(study.models, tmp_path / "models")
    for head in ("rnc", "l1"):
        (root / head / model_folder.OOD_FILE).unlink()
        (root / head / model_folder.CONFORMAL_FILE).unlink()
    table = bp.predict_scans([broken_scans["good"]], root, cache=tmp_path / "cache")
    assert table[["interval_level", "age_lower", "ood_score"]].isna().all().all()
    assert table["ood"].isna().all()


# --- validation of the stored files -------------------------------------------------------------


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _edit_npz(path: Path, change) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize(("breaks", "culprit", "message"), [
    (lambda r: (r / "rnc" / "ood.npz").write_bytes(b"not an npz"), "rnc/ood.npz",
     "cannot be read as an npz"),
    (lambda r: _edit_npz(r / "rnc" / "ood.npz", lambda a: a.update(format=np.asarray("x/1"))),
     "rnc/ood.npz", "array 'format' must be 'brainage-ood/1'"),
    (lambda r: _edit_npz(r / "rnc" / "ood.npz", lambda a: a.update(reference=a["reference"][:, :5],
                                                            mean=a["mean"][:5],
                                                            scale=a["scale"][:5])),
     "rnc/ood.npz", "has 5 features per scan but the head's encoder gives 120"),
    (lambda r: _edit_npz(r / "rnc" / "ood.npz", lambda a: a.update(threshold=np.asarray(np.nan))),
     "rnc/ood.npz", "threshold must be a finite number"),
    (lambda r: _edit_npz(r / "rnc" / "ood.npz", lambda a: a.update(checkpoint_sha256=np.asarray("0"))),
     "rnc/ood.npz", "array 'checkpoint_sha256' 0... is not the SHA-256"),
    (lambda r: (r / "rnc" / "conformal.json").write_text("{"), "rnc/conformal.json",
     "cannot be read as JSON"),
    (lambda r: _edit_json(r / "model.json", lambda d: d["domain"].update(n_train="many")),
     "model.json", "domain.n_train must be an integer"),
    (lambda r: _edit_json(r / "rnc" / "conformal.json", lambda d: d.update(format="x")),
     "rnc/conformal.json", "field 'format' must be 'brainage-conformal/1'"),
    (lambda r: _edit_json(r / "rnc" / "conformal.json", lambda d: d["age"].pop("residuals")),
     "rnc/conformal.json", r"field 'age' lacks the field\(s\) \['residuals'\]"),
    (lambda r: _edit_json(r / "rnc" / "conformal.json", lambda d: d["corrected_gap"].update(level=0.5)),
     "rnc/conformal.json", r"'age.level' \(0.8\) and 'corrected_gap.level' \(0.5\) differ"),
    (lambda r: _edit_json(r / "rnc" / "conformal.json", lambda d: d.update(checkpoint_sha256="f" * 64)),
     "rnc/conformal.json", "field 'checkpoint_sha256' ffffffffffff... is not the SHA-256"),
    (lambda r: _edit_json(r / "rnc" / "bias_correction.json",
                          lambda d: d["coefficients"].update(intercept=99.0)),
     "rnc/conformal.json", "field 'bias_correction' .* is not the head's bias_correction.json"),
])
def test_bad_trust_file_names_the_file(study, evaluated, tmp_path, breaks, culprit: str,
                                       message: str) -> None:
    root = shutil.copytree(study.models, tmp_path / "models")
    breaks(root)
    with pytest.raises(model_folder.ModelFolderError, match=message) as info:
        model_folder.load_model_folder(root)
    assert str(root / culprit) in str(info.value)


def test_too_small_validation_split_writes_no_trust_file(study, evaluated, tmp_path) -> None:
    """No interval and no OOD reference rather than wrong ones; stale files are removed."""
    run = RunFolder(tmp_path / "run")
    shutil.copytree(study.path, run.path)
    with pytest.warns(UserWarning, match=r"an OOD flag rate of 0.01 needs at least 99 val "
                                         r"scans, the run has 80"):
        assert study_trust.fit_ood_references(run, run.models, rate=0.01, device="cpu") == {}
    assert not (run.models / "rnc" / model_folder.OOD_FILE).exists()
    with pytest.warns(UserWarning, match="head 'rnc' gets no interval: interval_level 0.99 "
                                         "needs at least 99 val scans, the run has 80"):
        table, trusts, _ = _evaluate(run, level=0.99)
    assert not (run.models / "rnc" / model_folder.CONFORMAL_FILE).exists()
    assert table[["age_lower", "ood_score"]].isna().all().all()
    assert trusts["rnc"].calibration is None and trusts["rnc"].ood is None


# --- the trust step without files (issue 27, item 7) -----------------------------------------


def _synthetic_predictions(rng, n_val=60, n_test=40):
    """Two heads' corrected predictions of a validation and a test split (slope 0.7)."""
    splits = ["val"] * n_val + ["test"] * n_test
    ages = rng.uniform(20, 90, len(splits))
    rows = []
    for head, noise in (("rnc", 3.0), ("l1", 6.0)):
        predicted = 0.7 * ages + 16.5 + rng.normal(0, noise, len(ages))
        rows.append(pd.DataFrame({
            "participant_id": [f"sub-{i}" for i in range(len(ages))], "split": splits,
            "group": "HC", "age": ages, "sex": "F", "site": "a", "model": head,
            "predicted": predicted, "gap": predicted - ages}))
    return evaluation.correct_predictions(pd.concat(rows, ignore_index=True))


def test_trust_step_calibrates_on_validation_rows_only(rng) -> None:
    """The step notebook 03 runs (and bench_uncertainty times) is one package function: its
    intervals ignore the test rows, a head without OOD reference gets no OOD score, ages
    outside the training range are flagged."""
    from brainage.analysis.uncertainty import FeatureOOD

    predictions, corrections = _synthetic_predictions(rng)
    features = {h: rng.normal(size=(100, 6)) for h in ("rnc", "l1")}
    references = {"rnc": FeatureOOD.fit(rng.normal(size=(120, 6)), rng.normal(size=(40, 6)))}
    settings = study_trust.IntervalSettings(level=0.8, n_bins=2)
    table, trusts = study_trust.trust_step(predictions, corrections, references, features,
                                           age_range=(30.0, 80.0), settings=settings)
    assert list(table.columns) == [*evaluation.EVALUATION_COLUMNS, *TRUST_VALUES]
    assert set(trusts) == {"rnc", "l1"} and trusts["l1"].ood is None
    assert trusts["rnc"].calibration.age.n == 60
    assert table.loc[table["model"] == "rnc", "ood_score"].notna().all()
    assert table.loc[table["model"] == "l1", "ood_score"].isna().all()
    outside = (table["age"] < 30) | (table["age"] > 80)
    np.testing.assert_array_equal(table["outside_age_range"].astype(bool), outside)
    np.testing.assert_allclose(table["interval_level"], 0.8)
    # moving every test prediction changes no interval width
    moved = predictions.copy()
    moved.loc[moved["split"] == "test", "predicted"] += 30.0
    _, again = study_trust.trust_step(moved, corrections, references, features,
                                      age_range=(30.0, 80.0), settings=settings)
    for head in ("rnc", "l1"):
        np.testing.assert_allclose(again[head].calibration.age.half_widths(),
                                   trusts[head].calibration.age.half_widths())
    with pytest.raises(ValueError, match="features of head 'rnc' hold 3 rows for 100"):
        study_trust.trust_step(predictions, corrections, references,
                               {"rnc": np.zeros((3, 6))}, age_range=(30.0, 80.0))
