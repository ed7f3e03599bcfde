"""Benchmark ``brainage predict``: seconds per scan, split into preprocessing and inference.

Run from the repository root::

    python benchmarks/bench_predict.py                        # quick-profile model, 1 thread
    python benchmarks/bench_predict.py --threads 2            # both cores for torch
    python benchmarks/bench_predict.py --model runs/quick/models

Without ``--model`` a model folder of the quick profile's size is made in a temporary folder
(ResNet-10, widths 16-128, 4 mm grid cropped to the brain; both heads trained for one epoch on
three random volumes: the weights do not change the timings). Two scans are timed:

* **MNI**: nilearn's 2 mm template with noise, on the 2 mm template grid (as the simulated
  cohort of the quick profile): detected as ``MNI152NLin2009cSym``, only resampled.
* **native**: the first raw scan of ``../shared/data/ixi10`` (skipped when absent): N4 and
  registration to MNI152 (one ITK thread, the library's default).

Columns: ``preprocess`` (cold, through an empty cache: space detection, preprocessing, the
QC alignment score, cache write), ``align_incl`` (the alignment score alone, already included
in ``preprocess``), ``cached`` (the same scan again, a cache read), then per
head ``infer_<head>`` (one forward pass, median of 3 after a warm-up) and ``saliency_<head>``
(one signed Grad-RAM map). The last line is one full ``predict_scans`` call on both scans with
a warm cache: the fixed cost of a call (loading the model folder and the heads) on top.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _timing import median_s

IXI10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi10"
MNI = "MNI152NLin2009cSym"


def make_model_folder(root: Path, grid_mm: float, crop: bool) -> Path:
    """A quick-profile-sized model folder (both heads, one epoch on random volumes)."""
    from brainage.imaging.registration import template_grid
    from brainage.inference.model_folder import write_model_card
    from brainage.models.datasets import VolumeDataset
    from brainage.models.network import MODEL_PRESETS
    from brainage.models.train import TrainConfig, train_l1, train_rnc

    shape, _ = template_grid(grid_mm, crop_to_brain=crop)
    rng = np.random.default_rng(0)
    images = rng.gamma(2.0, 0.5, size=(3, *shape)).astype(np.float32)  # (N, D, H, W)
    train = VolumeDataset(images[:2], [30.0, 60.0], ["a", "b"])
    val = VolumeDataset(images[2:], [45.0], ["c"])
    common = dict(batch_size=2, augment=None, progress=False, device="cpu", probe_every=0)
    models = root / "models"
    cfg = MODEL_PRESETS["quick"]
    train_rnc(train, val, cfg, TrainConfig(epochs=1, head_epochs=1, **common), models / "rnc")
    train_l1(train, val, cfg, TrainConfig(epochs=1, **common), models / "l1")
    write_model_card(models, preprocess={"space": MNI, "grid_mm": grid_mm,
                                         "skull_stripped": True, "crop_to_brain": crop},
                     saliency_layer="encoder.layer2", profile="bench")
    return models


def make_mni_scan(path: Path) -> Path:
    """nilearn's 2 mm template with 1 % noise, on its own grid: an MNI-space scan."""
    from brainage.imaging.registration import template_images

    template, _ = template_images()
    data = template.get_fdata() * 500.0
    data += np.random.default_rng(1).normal(0.0, 5.0, data.shape)
    nib.save(nib.Nifti1Image(data.astype(np.float32), template.affine), path)
    return path


def bench_scan(label: str, path: Path, folder, cache) -> dict[str, float | str]:
    """Preprocessing (cold, cached), alignment, inference and saliency of one scan."""
    import torch

    from brainage.imaging.preprocess import preprocess_cohort
    from brainage.imaging.registration import alignment_score
    from brainage.inference import predict as bp
    from brainage.models.saliency import grad_ram

    row: dict[str, float | str] = {"scan": label}
    start = time.perf_counter()
    space = bp.scan_space(path)
    params = folder.params_for(space, skull_stripped=False)
    item = preprocess_cohort([path], params, cache)[0]
    if not item.ok:
        raise RuntimeError(item.error)
    row["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    alignment_score(item.image)
    row["align_incl"] = time.perf_counter() - start
    start = time.perf_counter()
    preprocess_cohort([path], params, cache)[0].image.get_fdata()
    row["cached"] = time.perf_counter() - start
    row["space"] = space
    volume = np.asarray(item.image.dataobj, dtype=np.float32)[None]  # (1, D, H, W)
    x = torch.from_numpy(volume)[None]  # (1, D, H, W) -> (1, 1, D, H, W)
    for head, model in folder.models.items():
        row[f"infer_{head}"] = median_s(lambda m=model: bp._forward(m, x))
        row[f"saliency_{head}"] = median_s(
            lambda m=model: grad_ram(m, x, folder.saliency_layer, signed=True), repeats=1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="an existing model folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--no-native", action="store_true", help="skip the native IXI scan")
    args = parser.parse_args()

    import torch

    from brainage.imaging.preprocess import PreprocessCache
    from brainage.inference.model_folder import load_model_folder
    from brainage.inference.predict import predict_scans

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        models = args.model or make_model_folder(tmp_path, grid_mm=4.0, crop=True)
        folder = load_model_folder(models)
        print(f"model folder {models}: heads {list(folder.models)}, grid {folder.grid_shape} at "
              f"{folder.preprocess.grid_mm:g} mm ({time.perf_counter() - start:.1f} s to make "
              f"and load); torch threads {torch.get_num_threads()}")
        cache = PreprocessCache(tmp_path / "cache")
        scans = [("MNI (2 mm template grid)", make_mni_scan(tmp_path / "mni.nii.gz"))]
        native = sorted(IXI10.glob("sub-*/anat/*_T1w.nii.gz"))
        if native and not args.no_native:
            scans.append((f"native ({native[0].name})", native[0]))
        elif not args.no_native:
            print(f"no native scan: {IXI10} is absent")
        rows = [bench_scan(label, path, folder, cache) for label, path in scans]
        columns = [c for c in rows[0] if c not in ("scan", "space")]
        print(f"\n{'scan':<34}" + "".join(f"{c:>14}" for c in columns) + "   (seconds)")
        for row in rows:
            print(f"{row['scan']:<34}" + "".join(f"{row[c]:>14.3f}" for c in columns))
        start = time.perf_counter()
        predict_scans([p for _, p in scans], models, cache=cache)
        print(f"\npredict_scans on {len(scans)} cached scan(s), both heads, model folder loaded: "
              f"{time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
