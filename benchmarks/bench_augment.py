"""Benchmark the batched training augmentations against MONAI's per-scan transforms.

Run from the repository root::

    python benchmarks/bench_augment.py                    # 4 mm and 2 mm grids, batch 16 x 2 views
    python benchmarks/bench_augment.py --grids 4 --batch 16 --threads 1 2 --repeats 5

The baseline is what the training loop ran before: :func:`brainage.models.augment.
build_augmentation`, MONAI's random affine, flip, bias field, gamma contrast, intensity scaling
and Gaussian noise applied to one scan at a time (``Compose`` of MONAI's array transforms), on the
CPU, float32, with the default :class:`~brainage.models.augment.AugmentConfig`.
"batched" is :meth:`brainage.models.augment.RandomViews.batch` on the same scans, same
configuration and dtype. "affine" columns time the random affine alone (probability 1), the
largest single cost. Times are per augmented view, medians over ``--repeats`` rounds after one
warm-up; each round runs both in turn, so load on a shared machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from brainage.imaging.registration import template_grid
from brainage.models.augment import AugmentConfig, RandomViews, build_augmentation

AFFINE_ONLY = dict(affine_prob=1.0, flip_prob=0, bias_field_prob=0, contrast_prob=0,
                   intensity_prob=0, noise_prob=0)


def _per_scan(cfg: AugmentConfig, images: torch.Tensor, n_views: int) -> Callable[[], None]:
    transform = build_augmentation(cfg)
    transform.set_random_state(seed=0)

    def run() -> None:
        for image in images:
            for _ in range(n_views):
                transform(image)
    return run


def _batched(cfg: AugmentConfig, images: torch.Tensor, n_views: int) -> Callable[[], None]:
    views = RandomViews(cfg, n_views=n_views)
    seeds = list(range(len(images)))
    return lambda: views.batch(images, seeds)


def _median_ms(fns: dict[str, Callable[[], None]], repeats: int, n_views: int
               ) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v) / n_views for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=float, nargs="+", default=[4.0, 2.0],
                        help="grid spacings in mm (cropped to the brain, as the profiles)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| grid | shape | threads | MONAI per scan (ms/view) | batched (ms/view) | speed-up "
          "| MONAI affine | batched affine | affine speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    generator = torch.Generator().manual_seed(0)
    for grid in args.grids:
        shape, _ = template_grid(grid, crop_to_brain=True)
        images = 0.5 + torch.rand(args.batch, 1, *shape, generator=generator)  # (B, 1, D, H, W)
        for threads in args.threads:
            torch.set_num_threads(threads)
            n = args.batch * args.views
            full, affine = AugmentConfig(), AugmentConfig(**AFFINE_ONLY)
            t = _median_ms({"monai": _per_scan(full, images, args.views),
                            "batched": _batched(full, images, args.views),
                            "monai_affine": _per_scan(affine, images, args.views),
                            "batched_affine": _batched(affine, images, args.views)},
                           args.repeats, n)
            print(f"| {grid:g} mm | {'x'.join(map(str, shape))} | {threads} | {t['monai']:.1f} | "
                  f"{t['batched']:.1f} | {t['monai'] / t['batched']:.1f}x | "
                  f"{t['monai_affine']:.1f} | {t['batched_affine']:.1f} | "
                  f"{t['monai_affine'] / t['batched_affine']:.1f}x |")


if __name__ == "__main__":
    main()
