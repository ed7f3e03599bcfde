"""Benchmark Grad-RAM (against MONAI's GradCAM), integrated gradients and the enrichment AUC.

Run from the repository root::

    python benchmarks/bench_saliency.py                      # 1 thread
    python benchmarks/bench_saliency.py --threads 2 --repeats 5 --n-steps 16

Grad-RAM and integrated gradients run on a MONAI ResNet-10 (widths 16-128,
``conv1_t_stride=2``, one output) at the quick profile's grid size; MONAI's GradCAM runs on a
copy without in-place activations. The tissue-matched enrichment AUC runs on an ellipsoid
brain with a box-shaped truth region, two tissue classes and a random map at a 4 mm and a 2 mm
MNI grid. Times are medians of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from _timing import median_s
from monai.networks.nets import ResNet
from monai.visualize import GradCAM

from brainage.models.saliency import enrichment_auc, grad_ram, integrated_gradients


def bench_grad_ram(shape: tuple[int, int, int], batch: int, repeats: int) -> list[dict]:
    """Time grad_ram (signed and rectified) and MONAI's GradCAM on one layer each."""
    torch.manual_seed(0)
    model = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(16, 32, 64, 128),
                   spatial_dims=3, n_input_channels=1, num_classes=1, conv1_t_stride=2).eval()
    monai_model = copy.deepcopy(model)
    for module in monai_model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    x = torch.randn(batch, 1, *shape)  # (B, 1, D, H, W)
    rows = []
    for layer in ("layer4", "layer3"):
        cam = GradCAM(monai_model, target_layers=layer)
        rows.append({
            "layer": layer,
            "grad_ram_signed_s": median_s(lambda layer=layer: grad_ram(model, x, layer), repeats),
            "grad_ram_rectified_s": median_s(
                lambda layer=layer: grad_ram(model, x, layer, signed=False), repeats),
            "monai_gradcam_s": median_s(lambda cam=cam: cam(x, class_idx=0), repeats),
        })
    return rows


def bench_integrated_gradients(shape: tuple[int, int, int], batch: int, n_steps: int,
                               repeats: int) -> float:
    """Seconds per scan of integrated_gradients (n_steps passes of the batch)."""
    torch.manual_seed(0)
    model = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(16, 32, 64, 128),
                   spatial_dims=3, n_input_channels=1, num_classes=1, conv1_t_stride=2).eval()
    x = torch.randn(batch, 1, *shape)  # (B, 1, D, H, W)
    baseline = x.mean(dim=0)
    return median_s(lambda: integrated_gradients(model, x, baseline, n_steps=n_steps),
                    repeats) / batch


def bench_enrichment(shape: tuple[int, int, int], repeats: int) -> dict:
    """Time the tissue-matched enrichment_auc on an ellipsoid brain with a random map."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    radius = (0.42 * np.array(shape))[:, None, None, None]
    brain = (((grid - centre) / radius) ** 2).sum(0) <= 1
    truth = np.zeros(shape, bool)
    lo = [s // 3 for s in shape]
    box = tuple(slice(start, start + size // 7) for start, size in zip(lo, shape, strict=True))
    truth[box] = True
    values = np.random.default_rng(0).normal(size=shape)
    tissue = 1 + (grid[0] > shape[0] / 2)
    seconds = median_s(lambda: enrichment_auc(values, truth, brain, tissue=tissue), repeats)
    return {"grid": "x".join(map(str, shape)), "n_brain": int(brain.sum()), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}; Grad-RAM on ResNet-10 (16-128), batch {args.batch}")
    print(f"{'grid':>10} {'layer':>7} {'signed s':>9} {'rectified s':>12} {'MONAI GradCAM s':>16}")
    for shape in ((48, 56, 48),):
        for row in bench_grad_ram(shape, args.batch, args.repeats):
            print(f"{'x'.join(map(str, shape)):>10} {row['layer']:>7} "
                  f"{row['grad_ram_signed_s']:9.3f} {row['grad_ram_rectified_s']:12.3f} "
                  f"{row['monai_gradcam_s']:16.3f}")
    seconds = bench_integrated_gradients((41, 49, 43), 16, args.n_steps, args.repeats)
    print(f"\nintegrated gradients, 41x49x43, batch 16, {args.n_steps} steps: "
          f"{seconds:.3f} s per scan")
    print(f"\n{'grid':>10} {'brain voxels':>13} {'enrichment s':>13}")
    for shape in ((46, 55, 46), (91, 109, 91)):
        row = bench_enrichment(shape, args.repeats)
        print(f"{row['grid']:>10} {row['n_brain']:13d} {row['seconds']:13.3f}")


if __name__ == "__main__":
    main()
