"""Benchmark the trust of each prediction: what intervals and OOD scores add to the time.

Run from the repository root::

    python benchmarks/bench_uncertainty.py                    # synthetic, quick-profile sizes
    python benchmarks/bench_uncertainty.py --run runs/quick   # also notebook 03 of that build

Two tables:

* **notebook 03** (``--run``, after a build): the notebook's wall time (``provenance.json``),
  the time its trust step took (``trust.json``: calibrating the intervals on the validation
  split, cross-fitting, writing ``conformal.json``, scoring every held-out scan), and the
  feature capture inside the predicting pass, timed here on the run's held-out scans (a forward
  pass with and without the hooks, interleaved, the fastest of 5). Without ``--run``, the same
  steps on synthetic data of the quick profile's sizes (180 training, 60 validation, 200
  held-out scans).
* **brainage predict**, per scan: the full ``predict_scans`` time of one MNI-space scan (cold
  cache: preprocessing included; warm cache: inference only), and what trust adds to it: the
  feature capture during the forward passes, the OOD score and intervals of both heads, and the
  domain check.

The overhead is the trust time divided by the time without it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_predict import make_mni_scan, make_model_folder


def best_s(fn, repeats: int = 5) -> float:
    """Fastest of ``repeats`` wall times of ``fn`` after a warm-up: on cores shared with other
    work, the minimum is the cost of the code (a median also holds the neighbours' load)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _forward_costs(models: dict, dataset) -> tuple[float, float]:
    """Seconds of predicting ``dataset`` with every model, without and with the feature hooks
    (interleaved, the fastest of five each)."""
    from brainage.models.features import capture_features
    from brainage.models.train import predict

    def plain() -> None:
        for model in models.values():
            predict(model, dataset, device="cpu")

    def hooked() -> None:
        for model in models.values():
            with capture_features(model):
                predict(model, dataset, device="cpu")

    plain_s, hooked_s = [], []
    plain()
    hooked()
    for _ in range(5):
        plain_s.append(best_s(plain, repeats=1))
        hooked_s.append(best_s(hooked, repeats=1))
    return min(plain_s), min(hooked_s)


def _synthetic_calibration(rng: np.random.Generator, n_val: int, n_rows: int):
    """Predictions of a quick-sized run (val + held-out rows, two heads) and corrections."""
    import pandas as pd

    from brainage.analysis import evaluation

    frames = []
    for head in ("rnc", "l1"):
        age = rng.uniform(20, 90, n_rows)
        predicted = 0.8 * age + 11 + rng.normal(0, 6, n_rows)
        frames.append(pd.DataFrame({
            "participant_id": [f"s{i}" for i in range(n_rows)],
            "split": ["val"] * n_val + ["test"] * (n_rows - n_val), "group": "HC", "age": age,
            "sex": "F", "site": "A", "model": head, "predicted": predicted,
            "gap": predicted - age}))
    return evaluation.correct_predictions(pd.concat(frames, ignore_index=True))


def notebook_03(run_dir: Path | None) -> None:
    """The trust step of notebook 03: from a build's records, else on synthetic data."""
    import torch

    from brainage.analysis.uncertainty import FeatureOOD
    from brainage.inference import model_folder
    from brainage.models.datasets import VolumeDataset
    from brainage.models.network import MODEL_PRESETS, build_model
    from brainage.models.train import load_model
    from brainage.study import trust as study_trust

    rng = np.random.default_rng(0)
    print("\nnotebook 03")
    if run_dir is not None:
        from brainage.study.runs import HELD_OUT, RunFolder

        run = RunFolder(run_dir)
        provenance = json.loads((run.path / "provenance.json").read_text())
        total = float(provenance["notebooks"]["03_evaluation"]["seconds"])
        recorded = float(json.loads((run.path / study_trust.TRUST_FILE).read_text())["seconds"])
        models = {h: load_model(run.models / h / model_folder.CHECKPOINT_FILE)
                  for h in ("rnc", "l1")}
        dataset = run.dataset(run.rows(HELD_OUT))
        plain, hooked = _forward_costs(models, dataset)
        capture = max(hooked - plain, 0.0)
        print(f"  run {run.path}: notebook 03 took {total:.1f} s; {len(dataset)} held-out scans, "
              f"{len(models)} heads")
        rows = [("calibration and OOD scoring (trust.json)", recorded),
                ("feature capture in the predicting pass", capture)]
        base = total - recorded - capture
        _notebook_02(run, float(provenance["notebooks"]["02_training"]["seconds"]))
    else:
        shape = (41, 49, 43)  # the quick profile's 4 mm grid cropped to the brain
        model = build_model(MODEL_PRESETS["quick"]).eval()
        volumes = rng.normal(1.0, 0.3, size=(200, *shape)).astype(np.float32)
        dataset = VolumeDataset(volumes, np.zeros(200), [str(i) for i in range(200)])
        torch.set_num_threads(torch.get_num_threads())
        plain, hooked = _forward_costs({"rnc": model, "l1": model}, dataset)
        predictions, corrections = _synthetic_calibration(rng, 60, 200)
        dim = 2 * sum(MODEL_PRESETS["quick"].widths)
        features = rng.normal(size=(180 + 60, dim))
        held = {h: rng.normal(size=(200, dim)) for h in ("rnc", "l1")}

        def step() -> None:  # notebook 03's step (study.trust.trust_step) and 02's OOD fits
            settings = study_trust.IntervalSettings(level=0.9, n_bins=3)
            oods = {h: FeatureOOD.fit(features[:180], features[180:]) for h in ("rnc", "l1")}
            study_trust.trust_step(predictions, corrections, oods, held, age_range=(20.0, 90.0),
                                   settings=settings)

        recorded = best_s(step)
        capture = max(hooked - plain, 0.0)
        print(f"  synthetic: 200 held-out scans at {shape}, quick-profile ResNet-10, 2 heads; "
              f"the notebook's other work is taken as the forward passes alone ({plain:.1f} s), "
              f"a lower bound")
        rows = [("calibration and OOD scoring", recorded),
                ("feature capture in the predicting pass", capture)]
        base = plain
    for name, seconds in rows:
        print(f"  {name:<44}{seconds:>8.3f} s {100 * seconds / base:>7.2f} %")
    added = sum(s for _, s in rows)
    print(f"  {'trust, all':<44}{added:>8.3f} s {100 * added / base:>7.2f} %   "
          f"(of {base:.1f} s without it)")


def _notebook_02(run, total: float) -> None:
    """The OOD reference that notebook 02 fits (into a copy of the models folder)."""
    import shutil

    from brainage.study import trust as study_trust

    with tempfile.TemporaryDirectory(prefix="bench_uncertainty_") as tmp:
        models = Path(shutil.copytree(run.models, Path(tmp) / "models"))
        start = time.perf_counter()
        study_trust.fit_ood_references(run, models, rate=0.05, device="cpu")
        seconds = time.perf_counter() - start
    print(f"  (notebook 02: fitting the OOD references, training and validation scans through "
          f"both heads, took {seconds:.1f} s here, {100 * seconds / total:.1f} % of the "
          f"{total:.0f} s the notebook took in the build)")


def _add_trust_files(models: Path, rng: np.random.Generator) -> None:
    """Bias correction, conformal calibration and an OOD reference of quick-profile sizes."""
    from brainage.analysis.metrics import AgeBiasCorrection
    from brainage.analysis.uncertainty import ConformalInterval, FeatureOOD
    from brainage.inference import model_folder
    from brainage.models.features import feature_size
    from brainage.models.train import load_model

    correction = AgeBiasCorrection("linear", {"slope": 0.8, "intercept": 11.0}, 60, (20.0, 90.0))
    for head in ("rnc", "l1"):
        head_dir = models / head
        (head_dir / model_folder.BIAS_CORRECTION_FILE).write_text(json.dumps(correction.to_dict()))
        dim = feature_size(load_model(head_dir / model_folder.CHECKPOINT_FILE))
        age = ConformalInterval.fit(rng.normal(0, 6, 60), level=0.9,
                                    bin_values=rng.uniform(20, 90, 60), n_bins=3)
        gap = ConformalInterval.fit(rng.normal(0, 7, 60), level=0.9,
                                    bin_values=rng.uniform(20, 90, 60), n_bins=3)
        sha = model_folder.checkpoint_digest(head_dir)
        calibration = model_folder.HeadCalibration(age, gap, correction.to_dict(), 5, sha)
        model_folder.save_calibration(head_dir, calibration)
        ood = FeatureOOD.fit(rng.normal(size=(180, dim)), rng.normal(size=(60, dim)))
        model_folder.save_ood(head_dir, ood, sha)


def predict_per_scan() -> None:
    """What trust adds to ``brainage predict``'s time per scan."""
    import warnings

    import torch

    from brainage.imaging.preprocess import PreprocessCache
    from brainage.inference import model_folder, trust
    from brainage.inference import predict as bp
    from brainage.models.features import capture_features

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="bench_uncertainty_") as tmp:
        tmp_path = Path(tmp)
        models = make_model_folder(tmp_path, grid_mm=4.0, crop=True)
        _add_trust_files(models, rng)
        folder = model_folder.load_model_folder(models)
        scan = make_mni_scan(tmp_path / "mni.nii.gz")
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bp.predict_scans([scan], folder, cache=PreprocessCache(tmp_path / "cold"))
            cold = time.perf_counter() - start
            warm = best_s(lambda: bp.predict_scans([scan], folder,
                                                   cache=PreprocessCache(tmp_path / "cold")))
        x = torch.zeros((1, 1, *folder.grid_shape))
        plain = sum(best_s(lambda m=m: bp._forward(m, x)) for m in folder.models.values())

        def hooked() -> None:
            for model in folder.models.values():
                with capture_features(model):
                    bp._forward(model, x)

        capture = max(best_s(hooked) - plain, 0.0)
        one = {}
        for head, model in folder.models.items():
            with capture_features(model) as captured:
                bp._forward(model, x)
            one[head] = captured.array()

        def columns() -> None:
            for head in folder.models:
                trust.trust_columns(folder.trust[head], predicted=np.array([50.0]),
                                    age=np.array([60.0]), corrected_gap=np.array([-3.0]),
                                    features=one[head])

        scoring = best_s(columns)
        check = trust.DomainCheck({"domain": {"simulated": True, "dataset": "x"}})

        def domain() -> None:
            check.warned = False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check.check({str(scan): "MNI152NLin2009cSym"})

        domain_s = best_s(domain)
    added = capture + scoring + domain_s
    print("\nbrainage predict, one MNI-space scan, both heads (quick-profile model)")
    print(f"  per scan, cold cache (preprocessing included) {cold:>8.3f} s; warm cache "
          f"{warm:.3f} s")
    for name, seconds in (("feature capture in the forward passes", capture),
                          ("OOD scores and intervals", scoring), ("domain check", domain_s)):
        print(f"  {name:<44}{seconds:>8.4f} s {100 * seconds / (cold - added):>7.2f} % cold "
              f"{100 * seconds / (warm - added):>7.2f} % warm")
    print(f"  {'trust, all':<44}{added:>8.4f} s {100 * added / (cold - added):>7.2f} % cold "
          f"{100 * added / (warm - added):>7.2f} % warm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a built run folder (runs/<profile>) for notebook 03's numbers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}")
    notebook_03(args.run)
    predict_per_scan()


if __name__ == "__main__":
    main()
