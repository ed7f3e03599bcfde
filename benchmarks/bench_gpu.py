"""GPU benchmark of the paper profile: training throughput, FLOP share, memory, RNC loss, one epoch.

Run from the repository root on a machine with a CUDA device::

    python benchmarks/bench_gpu.py                        # a few minutes on an H200
    python benchmarks/bench_gpu.py --markdown gpu.md      # also write the table to a file
    python benchmarks/bench_gpu.py --cpu-smoke            # no GPU: same code paths, tiny, on CPU

Everything follows ``notebooks/params/paper.yaml``: MONAI's ResNet-18 (widths 64-512, stem
stride 2) on the MNI 2 mm grid cropped to the brain (``template_grid``: 81 x 98 x 86), batch 32
scans, SGD with the profile's learning rate and weight decay, temperature 2. Sections of the
table:

training
    One optimisation step of the RNC encoder (32 scans, two views each: 64 volumes through the
    network, then :class:`brainage.models.losses.RnCLoss`) and of the L1 baseline (32 volumes), with
    bf16 autocast + channels-last-3d (what ``brainage.models.train`` does on CUDA) and in float32
    (cuDNN may use TF32 for float32 convolutions; the table says whether it is allowed).
    "vol/s" counts volumes through the encoder per second (median of ``--repeats`` steps after
    one warm-up). FLOPs per step come from ``torch.utils.flop_counter.FlopCounterMode``
    (forward and backward); the achieved rate is shown as a share of the device's bf16 dense
    peak, from the small table ``PEAK_BF16_DENSE_TFLOPS`` (else "unknown"). Peak memory is
    ``torch.cuda.max_memory_allocated`` over those steps (weights, gradients, momentum and
    activations).
loss
    RnCLoss forward and forward + backward in float32 at N = 256 and 1024 scans (D = 512),
    and its relative difference from a float64 evaluation on the same device (the direct
    reference up to N = 256, RnCLoss in float64 beyond).
epoch
    A small simulated cohort (``brainage.data.simulate``, healthy controls at the profile's 2 mm,
    reused from ``--work-dir`` when it holds one with the same settings) is preprocessed onto
    the paper grid and split as the profile does; then one epoch of each stage
    (``train_rnc``: encoder epoch including the ridge probe, head epoch; ``train_l1``) with the
    profile's settings, data loading in the main process (``--workers``, default 0 as in the
    profile). The last rows scale the measured epochs linearly to the profile's training set.

``--cpu-smoke`` runs the same functions on the CPU with a tiny ResNet-10, a grid of 8 mm, batch
2, N = 8 and 16 and six simulated subjects: a test of the script (``tests/test_bench_gpu.py``),
not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import median_s
from torch.utils.flop_counter import FlopCounterMode

from brainage.data.simulate import SPACE, ensure_cohort
from brainage.data.splits import make_splits
from brainage.imaging.preprocess import PreprocessCache, PreprocessParams, preprocess_cohort
from brainage.imaging.registration import template_grid
from brainage.models.augment import AugmentConfig, RandomViews
from brainage.models.datasets import VolumeDataset
from brainage.models.losses import RnCLoss, rnc_loss_reference
from brainage.models.network import MODEL_PRESETS, ModelConfig, build_model
from brainage.models.train import TrainConfig, train_l1, train_rnc
from brainage.study.profiles import load_profile

PARAMS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "params"

#: bf16 dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets, matched
#: against ``torch.cuda.get_device_name()`` in this order; other devices are "unknown".
PEAK_BF16_DENSE_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H200", 989.0),
    (r"H100.*PCIe", 756.0),
    (r"H100.*(SXM|HBM3)", 989.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
)

Row = tuple[str, str, str, str]


@dataclass(frozen=True)
class Setup:
    """What one run measures: the paper profile on CUDA, or the tiny CPU smoke version."""

    device: torch.device
    model: ModelConfig
    grid_mm: float  # simulation and preprocessing grid
    grid: tuple[int, int, int]  # its shape, template_grid(grid_mm, crop_to_brain=...)
    step_grid: tuple[int, int, int]  # input of the timed training steps (``grid`` but in smoke)
    batch: int  # scans per step
    loss_sizes: tuple[int, ...]
    subjects: int  # simulated healthy controls
    repeats: int
    jobs: int  # worker processes of simulation and preprocessing


def peak_bf16_tflops(name: str) -> float | None:
    """The bf16 dense peak of a device named ``name``, or None when it is not in the table."""
    for pattern, tflops in PEAK_BF16_DENSE_TFLOPS:
        if re.search(pattern, name):
            return tflops
    return None


def make_setup(profile: dict[str, Any], args: argparse.Namespace) -> Setup:
    grid_mm = 8.0 if args.cpu_smoke else float(profile["grid_mm"])
    grid = template_grid(grid_mm, crop_to_brain=bool(profile["crop_to_brain"]))[0]
    if args.cpu_smoke:
        # bf16 convolutions are slow on CPU: the timed steps use an even smaller input.
        return Setup(torch.device("cpu"), MODEL_PRESETS["tiny"], grid_mm, grid, (12, 14, 10),
                     batch=2, loss_sizes=(8, 16), subjects=6, repeats=1, jobs=1)
    model = ModelConfig(depth=int(profile["model_depth"]), widths=tuple(profile["model_widths"]),
                        conv1_stride=int(profile["conv1_stride"]))
    return Setup(torch.device("cuda"), model, grid_mm, grid, grid,
                 batch=int(profile["batch_size"]),
                 loss_sizes=(256, 1024), subjects=args.subjects, repeats=args.repeats,
                 jobs=args.jobs or min(16, os.cpu_count() or 1))


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(setup: Setup, profile: dict[str, Any], kind: str,
               amp: bool) -> tuple[Callable[[], None], int]:
    """One optimisation step of the RNC encoder or the L1 model on random input, as in training.

    Returns the step and the number of volumes it pushes through the encoder.
    """
    device = setup.device
    torch.manual_seed(0)
    model = build_model(setup.model, age_mean=55.0, age_scale=20.0).to(device).train()
    volumes = 2 * setup.batch if kind == "RNC" else setup.batch
    x = torch.randn(volumes, setup.model.in_channels, *setup.step_grid, device=device)
    if device.type == "cuda":  # brainage.models.train: channels-last-3d on CUDA
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    ages = torch.linspace(20.0, 90.0, setup.batch, device=device)  # (B,)
    network = model.encoder if kind == "RNC" else model
    optimizer = torch.optim.SGD(network.parameters(), lr=float(profile["lr"]), momentum=0.9,
                                weight_decay=float(profile["weight_decay"]))
    loss_fn = RnCLoss(float(profile["temperature"]))

    def step() -> None:
        with _autocast(device, amp):
            out = network(x)  # RNC: (2B, F) features; L1: (B,) ages
        if kind == "RNC":
            loss = loss_fn(out.float().view(setup.batch, 2, -1), ages)  # (2B, F) -> (B, 2, F)
        else:
            loss = (out.float() - ages).abs().mean() / 20.0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, volumes


def training_rows(setup: Setup, profile: dict[str, Any], peak: float | None) -> list[Row]:
    rows: list[Row] = []
    device = setup.device
    for kind in ("RNC", "L1"):
        for amp in (True, False):
            precision = "bf16 autocast" if amp else "float32"
            step, volumes = train_step(setup, profile, kind, amp)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            seconds = median_s(step, setup.repeats)
            memory = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                      if device.type == "cuda" else "n/a (CPU)")
            with FlopCounterMode(display=False) as counter:
                step()
            _sync(device)
            flops = counter.get_total_flops()
            setting = f"{kind}, {precision}, batch {setup.batch} ({volumes} volumes)"
            rate = flops / seconds / 1e12
            share = f"{rate / peak:.1%} of {peak:.0f} bf16 dense" if peak else "peak unknown"
            rows += [
                ("training", "throughput", setting, f"{volumes / seconds:.1f} vol/s"),
                ("training", "step time", setting, f"{1e3 * seconds:.1f} ms"),
                ("training", "FLOPs per step", setting, f"{flops / 1e9:.4g} GFLOP"),
                ("training", "FLOP rate", setting, f"{rate:.3g} TFLOP/s ({share})"),
                ("training", "peak memory", setting, memory),
            ]
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def loss_rows(setup: Setup, temperature: float) -> list[Row]:
    rows: list[Row] = []
    device, dim = setup.device, setup.model.feature_dim
    loss_fn = RnCLoss(temperature)
    for n in setup.loss_sizes:
        gen = torch.Generator().manual_seed(n)
        features = torch.randn(n, 2, dim, generator=gen).to(device)  # (N, 2, D)
        labels = torch.randint(20, 91, (n,), generator=gen).float().to(device)  # (N,)

        fwd, fb = _loss_times(loss_fn, features, labels, setup.repeats)
        if n <= 256:
            reference, what = rnc_loss_reference(features.double(), labels.double(),
                                                 temperature), "direct float64 reference"
        else:
            reference, what = loss_fn(features.double(), labels.double()), "RnCLoss in float64"
        value = loss_fn(features, labels)
        rel = abs(value.item() - reference.item()) / abs(reference.item())
        setting = f"N={n} (n={2 * n} views), D={dim}, float32"
        rows += [
            ("loss", "RnCLoss fwd", setting, f"{fwd:.2f} ms"),
            ("loss", "RnCLoss fwd+bwd", setting, f"{fb:.2f} ms"),
            ("loss", "relative difference", f"N={n}, vs {what}", f"{rel:.1e}"),
        ]
    return rows


def _loss_times(loss_fn: RnCLoss, features: torch.Tensor, labels: torch.Tensor,
                repeats: int) -> tuple[float, float]:
    """Median milliseconds of the loss and of the loss with its gradient."""

    def forward_backward() -> None:
        x = features.detach().requires_grad_(True)
        loss_fn(x, labels).backward()

    fwd = 1e3 * median_s(lambda: loss_fn(features, labels), repeats)
    return fwd, 1e3 * median_s(forward_backward, repeats)


@contextlib.contextmanager
def _work_dir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
            yield Path(tmp)


def simulated_datasets(setup: Setup, profile: dict[str, Any],
                       work: Path) -> tuple[VolumeDataset, VolumeDataset, list[Row]]:
    """Simulate (or reuse) the cohort, preprocess it onto the grid, split it as the profile does."""
    start = time.perf_counter()
    cohort = ensure_cohort(work / "cohort", n_healthy=setup.subjects, seed=int(profile["seed"]),
                           resolution_mm=setup.grid_mm, n_jobs=setup.jobs)
    simulate_s = time.perf_counter() - start
    splits = make_splits(cohort.participants, seed=int(profile["seed"]),
                         fractions=tuple(profile["split_fractions"]),
                         stratify_site=bool(profile["stratify_site"]))
    table = cohort.participants.merge(splits, on="participant_id")
    table = table[table["split"].isin(("train", "val"))]  # the test split is not needed here
    paths = [cohort.root / pid / "anat" / f"{pid}_T1w.nii.gz" for pid in table["participant_id"]]
    params = PreprocessParams(space=SPACE, grid_mm=setup.grid_mm,
                              crop_to_brain=bool(profile["crop_to_brain"]))
    start = time.perf_counter()
    items = preprocess_cohort(paths, params, PreprocessCache(work / "cache"), n_jobs=setup.jobs)
    failed = [item.error for item in items if item.error]
    if failed:
        raise RuntimeError(f"preprocessing failed for {len(failed)} scan(s): {failed[:3]}")
    images = np.stack([np.asarray(item.image.dataobj, dtype=np.float32)[None]
                       for item in items])  # N x (1, D, H, W) -> (N, 1, D, H, W)
    preprocess_s = time.perf_counter() - start
    split = table["split"].to_numpy()
    ages, ids = table["age"].to_numpy(dtype=float), table["participant_id"].to_numpy()

    def dataset(name: str) -> VolumeDataset:
        keep = split == name
        return VolumeDataset(images[keep], ages[keep], list(ids[keep]))

    shape = "x".join(map(str, images.shape[2:]))
    rows: list[Row] = [
        ("epoch", "simulate cohort",
         f"{setup.subjects} HC at {setup.grid_mm:g} mm, {setup.jobs} jobs", f"{simulate_s:.1f} s"),
        ("epoch", "preprocess", f"{len(items)} train + val scans onto {shape}, {setup.jobs} jobs",
         f"{preprocess_s:.1f} s"),
    ]
    return dataset("train"), dataset("val"), rows


def epoch_rows(setup: Setup, profile: dict[str, Any], args: argparse.Namespace, work: Path,
               data: tuple[VolumeDataset, VolumeDataset, list[Row]]) -> list[Row]:
    train_ds, val_ds, rows = data
    common: dict[str, Any] = {
        "batch_size": setup.batch, "optimizer": profile["optimizer"], "lr": float(profile["lr"]),
        "head_lr": float(profile["head_lr"]), "weight_decay": float(profile["weight_decay"]),
        "temperature": float(profile["temperature"]), "seed": int(profile["seed"]),
        "augment": profile.get("augment") or {}, "device": setup.device.type,
        "num_workers": args.workers, "progress": False, "resume": False}
    rnc = train_rnc(train_ds, val_ds, setup.model,
                    TrainConfig(epochs=1, head_epochs=1, **common), work / "rnc")
    l1 = train_l1(train_ds, val_ds, setup.model,
                  TrainConfig(epochs=1, head_epochs=0, **common), work / "l1")
    n_train, n_val = len(train_ds), len(val_ds)
    steps = n_train // setup.batch
    data = f"{n_train} train / {n_val} val scans, batch {setup.batch} ({steps} steps)"
    seconds = {**rnc.seconds_per_epoch, **l1.seconds_per_epoch}
    views = RandomViews(AugmentConfig(**(profile.get("augment") or {})), n_views=1)
    image = train_ds[0]["image"]
    seeds = iter(range(10_000))
    augment_ms = 1e3 * median_s(lambda: views(image, next(seeds)), 5)
    paper_train = round(int(profile["sim_n_healthy"]) * float(profile["split_fractions"][0]))
    scale = paper_train / n_train
    hours = (int(profile["epochs"]) * (seconds["rnc_encoder"] + seconds["rnc_head"])
             + int(profile["l1_epochs"]) * seconds["l1"]) * scale / 3600
    rows += [
        ("epoch", "RNC encoder epoch", f"{data}, + ridge probe, workers {args.workers}",
         f"{seconds['rnc_encoder']:.3g} s"),
        ("epoch", "RNC head epoch", f"{n_train} cached features", f"{seconds['rnc_head']:.3g} s"),
        ("epoch", "L1 epoch", f"{data}, + validation, workers {args.workers}",
         f"{seconds['l1']:.3g} s"),
        ("epoch", "augmentation", f"one view of {'x'.join(map(str, image.shape[1:]))}, CPU",
         f"{augment_ms:.1f} ms"),
        ("epoch", "paper-scale RNC epoch", f"{paper_train} train scans, linear",
         f"{seconds['rnc_encoder'] * scale:.3g} s"),
        ("epoch", "paper-scale training",
         f"{profile['epochs']} RNC + {profile['l1_epochs']} L1 epochs, linear", f"{hours:.3g} h"),
    ]
    return rows


def header_rows(setup: Setup, peak: float | None) -> list[Row]:
    if setup.device.type == "cuda":
        name = torch.cuda.get_device_name(setup.device)
        tf32 = f"cuDNN TF32 {'allowed' if torch.backends.cudnn.allow_tf32 else 'off'}"
    else:
        name, tf32 = "CPU (smoke run, not a measurement)", "n/a"
    peak_text = f"{peak:.0f} TFLOP/s" if peak else "unknown"
    parameters = sum(p.numel() for p in build_model(setup.model).parameters())
    arch = (f"ResNet-{setup.model.depth} {setup.model.widths[0]}-{setup.model.widths[-1]}, "
            f"steps on {'x'.join(map(str, setup.step_grid))}")
    return [
        ("device", "name", f"torch {torch.__version__}, {tf32}", name),
        ("device", "bf16 dense peak", "PEAK_BF16_DENSE_TFLOPS", peak_text),
        ("device", "model", arch, f"{parameters:,} parameters"),
    ]


def markdown(rows: list[Row]) -> str:
    lines = ["| section | measurement | setting | value |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run the same code paths on the CPU with a tiny model and input")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--subjects", type=int, default=128,
                        help="simulated healthy controls for the epoch section (default 128)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="simulation/preprocessing processes (default: min(16, CPUs))")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers in the epoch section (profile default 0)")
    parser.add_argument("--work-dir", help="keep the simulated cohort and runs here (reused)")
    parser.add_argument("--skip-epoch", action="store_true", help="skip the epoch section")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)

    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        print("No CUDA GPU found (torch.cuda.is_available() is False).")
        if not args.cpu_smoke:
            print("Nothing measured; run with --cpu-smoke to exercise the script on the CPU.")
            return 1
    if args.cpu_smoke:
        print("CPU smoke run: tiny model and input, the same code paths; not a benchmark.\n")
    profile = load_profile("paper", PARAMS_DIR).params
    setup = make_setup(profile, args)
    start = time.perf_counter()
    with _work_dir(args.work_dir) as work:
        # The cohort first: simulation forks worker processes, best done before CUDA starts.
        data = None if args.skip_epoch else simulated_datasets(setup, profile, work)
        peak = (peak_bf16_tflops(torch.cuda.get_device_name(setup.device))
                if setup.device.type == "cuda" else None)
        rows = header_rows(setup, peak)
        rows += training_rows(setup, profile, peak)
        rows += loss_rows(setup, float(profile["temperature"]))
        if data is not None:
            rows += epoch_rows(setup, profile, args, work, data)
    rows.append(("total", "wall time", "this script", f"{time.perf_counter() - start:.0f} s"))
    table = markdown(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
