"""Benchmark RnCLoss (vectorised) against the direct O(n^3) evaluation on CPU.

Run from the repository root::

    python benchmarks/bench_losses.py                  # 1 thread, then torch's default threads
    python benchmarks/bench_losses.py --sizes 16 32 --dim 512 --repeats 5

Both evaluations run in float64 on the same inputs (integer ages 20-80, so label ties occur);
times are medians of ``--repeats`` runs after one warm-up. "fwd" is the loss alone, "fwd+bwd"
adds the gradient with respect to the features.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _timing import median_s

from brainage.models.losses import RnCLoss, rnc_loss_reference


def forward_backward(loss_fn: Callable, features: torch.Tensor, labels: torch.Tensor) -> None:
    x = features.detach().requires_grad_(True)
    loss_fn(x, labels).backward()


def bench_row(n: int, dim: int, repeats: int, temperature: float) -> dict[str, float]:
    """Time both evaluations at batch size ``n`` and compare their values."""
    gen = torch.Generator().manual_seed(n)
    features = torch.randn(n, 2, dim, generator=gen, dtype=torch.float64)  # (N, 2, D)
    labels = torch.randint(20, 81, (n,), generator=gen).to(torch.float64)  # (N,)
    vectorised = RnCLoss(temperature)

    def direct(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return rnc_loss_reference(f, y, temperature)

    diff = abs(vectorised(features, labels).item() - direct(features, labels).item())
    row = {"N": n, "max_abs_diff": diff}
    row["direct_fwd"] = 1e3 * median_s(lambda: direct(features, labels), repeats)
    row["vec_fwd"] = 1e3 * median_s(lambda: vectorised(features, labels), repeats)
    row["direct_fb"] = 1e3 * median_s(lambda: forward_backward(direct, features, labels), repeats)
    row["vec_fb"] = 1e3 * median_s(lambda: forward_backward(vectorised, features, labels), repeats)
    return row


def print_table(rows: list[dict[str, float]], threads: int, dim: int) -> None:
    print(f"\nthreads = {threads}, D = {dim}, float64 (times in ms, median)")
    header = (f"{'N':>5} {'direct fwd':>11} {'vec fwd':>9} {'speed-up':>9} "
              f"{'direct f+b':>11} {'vec f+b':>9} {'speed-up':>9} {'max abs diff':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['N']:>5} {r['direct_fwd']:>11.2f} {r['vec_fwd']:>9.2f} "
              f"{r['direct_fwd'] / r['vec_fwd']:>8.1f}x "
              f"{r['direct_fb']:>11.2f} {r['vec_fb']:>9.2f} "
              f"{r['direct_fb'] / r['vec_fb']:>8.1f}x {r['max_abs_diff']:>13.2e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--dim", type=int, default=128, help="feature dimension D")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args(argv)

    default_threads = torch.get_num_threads()
    for threads in dict.fromkeys([1, default_threads]):  # 1 thread first; skip a repeat
        torch.set_num_threads(threads)
        rows = [bench_row(n, args.dim, args.repeats, args.temperature) for n in args.sizes]
        print_table(rows, threads, args.dim)
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
