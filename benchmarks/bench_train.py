"""Training throughput of the brainage encoders (MONAI 3D ResNet), to size the profiles.

Run from the repository root::

    python benchmarks/bench_train.py                      # quick candidates + paper backbone, CPU
    python benchmarks/bench_train.py --threads 1 --skip-paper
    python benchmarks/bench_train.py --subjects 200 --rnc-epochs 12 --l1-epochs 12

"vol/s" counts training volumes per second through one optimisation step (forward, backward,
SGD step; batch norm in training mode); for RNC every scan counts twice (two views). Times are
medians over ``--repeats`` steps after one warm-up step (the paper backbone at 91x109x91: one
timed step on CPU). "aug ms/view" is the CPU cost of one augmented view (MONAI transforms).
On CUDA each backbone is timed in float32 and with bf16 autocast + channels_last_3d.
The last table estimates the wall time of the quick profile's training notebook from these rates.
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_s

from brainage.models.augment import AugmentConfig, RandomViews
from brainage.models.network import MODEL_PRESETS, ModelConfig, build_encoder

QUICK_GRID = (48, 56, 48)  # about 4 mm (the MNI 2 mm grid 91x109x91 halved, padded to even)
PAPER_GRID = (91, 109, 91)  # MNI 2 mm


def train_step_rate(cfg: ModelConfig, grid: tuple[int, int, int], batch: int, device: str,
                    amp: bool, repeats: int) -> float:
    """Training volumes per second of one SGD step of the encoder (+ a linear readout)."""
    torch.manual_seed(0)
    encoder = build_encoder(cfg).to(device).train()
    head = torch.nn.Linear(cfg.feature_dim, 1).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 1, *grid, device=device)
    if amp:
        encoder = encoder.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def step() -> None:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            loss = head(encoder(x)).float().abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / median_s(step, repeats)


def augment_ms(grid: tuple[int, int, int], repeats: int) -> float:
    views = RandomViews(AugmentConfig(), n_views=1)
    image = torch.rand(1, *grid)
    seeds = iter(range(10_000))
    return 1e3 * median_s(lambda: views(image, next(seeds)), repeats)


def candidates(skip_paper: bool) -> list[tuple[str, ModelConfig, tuple[int, int, int], int]]:
    rows = [
        ("R10 8-64", ModelConfig(depth=10, widths=(8, 16, 32, 64)), QUICK_GRID, 8),
        ("R10 16-128 (quick)", MODEL_PRESETS["quick"], QUICK_GRID, 8),
        ("R18 16-128", ModelConfig(depth=18, widths=(16, 32, 64, 128)), QUICK_GRID, 8),
        ("R10 32-256", ModelConfig(depth=10, widths=(32, 64, 128, 256)), QUICK_GRID, 8),
    ]
    if not skip_paper:
        rows.append(("R18 64-512 (paper)", MODEL_PRESETS["paper"], PAPER_GRID, 2))
    return rows


def estimate(rate: float, aug_ms: float, args: argparse.Namespace) -> dict[str, float]:
    """Seconds of the training notebook's two models at the quick profile, from measured rates."""
    n_train = round(args.subjects * args.train_fraction)
    n_val = round(args.subjects * (1 - args.train_fraction) / 2)  # validation half of the rest
    forward = 3.0 * rate  # a forward pass costs about a third of forward + backward + step
    rnc_epoch = 2 * n_train / rate + 2 * n_train * aug_ms / 1e3
    probe = (n_train + n_val) / forward
    l1_epoch = n_train / rate + n_train * aug_ms / 1e3 + n_val / forward
    rnc = args.rnc_epochs * (rnc_epoch + probe) + probe  # + the head stage's feature pass
    return {"rnc_epoch_s": rnc_epoch, "l1_epoch_s": l1_epoch, "rnc_total_s": rnc,
            "l1_total_s": args.l1_epochs * l1_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true", help="skip ResNet-18 at 91x109x91")
    parser.add_argument("--subjects", type=int, default=200, help="quick-profile cohort size")
    parser.add_argument("--train-fraction", type=float, default=0.7)
    parser.add_argument("--rnc-epochs", type=int, default=12)
    parser.add_argument("--l1-epochs", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={device}, torch threads={torch.get_num_threads()}, torch {torch.__version__}")
    aug = augment_ms(QUICK_GRID, 10)
    print(f"augmentation at {QUICK_GRID}: {aug:.1f} ms/view (CPU, one thread of the loader)\n")
    print(f"{'backbone':<20}{'grid':<14}{'batch':>6}{'amp':>6}{'s/step':>9}{'vol/s':>8}")
    rates = {}
    for name, cfg, grid, batch in candidates(args.skip_paper):
        for amp in ((False, True) if device == "cuda" else (False,)):
            repeats = 1 if (grid == PAPER_GRID and device == "cpu") else args.repeats
            rate = train_step_rate(cfg, grid, batch, device, amp, repeats)
            rates.setdefault(name, rate)
            print(f"{name:<20}{'x'.join(map(str, grid)):<14}{batch:>6}{str(amp):>6}"
                  f"{batch / rate:>9.3f}{rate:>8.2f}")
    print(f"\nquick-profile estimate: {args.subjects} subjects, {args.train_fraction:.0%} train, "
          f"RNC {args.rnc_epochs} epochs (+ probe each epoch), L1 {args.l1_epochs} epochs; "
          f"augmentation in the main process (num_workers=0)")
    print(f"{'backbone':<20}{'RNC s/ep':>10}{'L1 s/ep':>10}{'RNC min':>10}{'L1 min':>10}")
    for name, rate in rates.items():
        if "paper" in name:
            continue
        est = estimate(rate, aug, args)
        print(f"{name:<20}{est['rnc_epoch_s']:>10.1f}{est['l1_epoch_s']:>10.1f}"
              f"{est['rnc_total_s'] / 60:>10.1f}{est['l1_total_s'] / 60:>10.1f}")


if __name__ == "__main__":
    main()
