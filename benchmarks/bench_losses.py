"""Benchmark RnCLoss against the two direct O(n^3) evaluations a user would otherwise run.

Run from the repository root::

    python benchmarks/bench_losses.py                     # N = 128 and 256, D = 512, 2 threads
    python benchmarks/bench_losses.py --sizes 32 128 --dim 128 --threads 1 2 --repeats 5

The baselines, on the same machine and inputs (standard normal features, integer ages 20-80, so
label ties occur):

- "loop f32": the direct evaluation in the shape of the authors' ``loss.py`` (Zha et al.,
  github.com/kaiwenzha/Rank-N-Contrast): float32, distances by broadcasting, logits shifted by
  the row maximum, ``exp``, then one loop over the positive column with a masked sum of the
  negatives. :func:`authors_loop` below writes it out.
- "ref f64": :func:`brainage.losses.rnc_loss_reference`, the float64 loop with ``logsumexp``
  that the tests use as the ground truth.

"RnCLoss" is :class:`brainage.losses.RnCLoss` in float32, as training calls it. "fwd" is the loss
alone, "f+b" adds the gradient with respect to the features. Times are medians over
``--repeats`` rounds after one warm-up of each; a round calls every evaluation once in turn, so
that a burst of load on a shared machine slows all of them alike and the speed-ups (ratios of
the medians) stay meaningful. "rel diff" is the relative difference of the loss from the float64
reference, and "grad diff" the largest gradient difference relative to the largest gradient
element. With CUDA, RnCLoss and the float32 loop are also timed on the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from brainage.models.losses import RnCLoss, rnc_loss_reference

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def authors_loop(features: torch.Tensor, labels: torch.Tensor,
                 temperature: float = 2.0) -> torch.Tensor:
    """The Rank-N-Contrast loss evaluated as the authors' implementation does (float32 input).

    Parameters
    ----------
    features : Tensor, shape (N, 2, D)
        Two views of N samples.
    labels : Tensor, shape (N,)
        Their labels.
    temperature : float, default=2.0
        The temperature.

    Returns
    -------
    Tensor, shape ()
        The loss, in the dtype of ``features``.
    """
    z = torch.cat([features[:, 0], features[:, 1]], dim=0)  # (N, 2, D) -> (n, D)
    y = labels.to(z.dtype).reshape(-1, 1).repeat(2, 1)  # (N,) -> (n, 1)
    n = z.shape[0]
    label_diffs = (y[:, None, :] - y[None, :, :]).abs().sum(dim=-1)  # (n, n, 1) -> (n, n)
    logits = -(z[:, None, :] - z[None, :, :]).norm(2, dim=-1) / temperature  # (n, n)
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # (n, n), max-shifted
    exp_logits = logits.exp()  # (n, n)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)  # (n, n)
    logits = logits[off_diagonal].view(n, n - 1)  # (n, n) -> (n, n - 1)
    exp_logits = exp_logits[off_diagonal].view(n, n - 1)  # (n, n) -> (n, n - 1)
    label_diffs = label_diffs[off_diagonal].view(n, n - 1)  # (n, n) -> (n, n - 1)
    loss = torch.zeros((), dtype=z.dtype, device=z.device)
    for k in range(n - 1):
        negatives = (label_diffs >= label_diffs[:, k : k + 1]).to(z.dtype)  # (n, n - 1)
        log_probs = logits[:, k] - (negatives * exp_logits).sum(dim=1).log()  # (n,)
        loss = loss - log_probs.sum() / (n * (n - 1))
    return loss


def forward_backward(loss_fn: LossFn, features: torch.Tensor, labels: torch.Tensor) -> None:
    x = features.detach().requires_grad_(True)
    loss_fn(x, labels).backward()


def value_and_grad(loss_fn: LossFn, features: torch.Tensor,
                   labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = features.detach().requires_grad_(True)
    loss = loss_fn(x, labels)
    loss.backward()
    return loss.item(), x.grad.double().cpu()


def interleaved_ms(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median milliseconds of each call over ``rounds`` rounds that run every call once in turn.

    ``_timing.median_s`` times one function at a time; here one warm-up of each comes first,
    and, as there, CUDA work is waited for before each clock read.
    """

    def run(call: Callable[[], object]) -> float:
        start = time.perf_counter()
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for call in calls.values():
        run(call)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(run(call))
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def timed_calls(prefix: str, loss_fn: LossFn, features: torch.Tensor,
                labels: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The forward pass and forward + backward of ``loss_fn``, named ``<prefix>_fwd``/``_fb``."""
    return {f"{prefix}_fwd": lambda: loss_fn(features, labels),
            f"{prefix}_fb": lambda: forward_backward(loss_fn, features, labels)}


def bench_row(n: int, dim: int, repeats: int, temperature: float) -> dict[str, float]:
    """Time the three evaluations at batch size ``n`` and compare them with the reference."""
    gen = torch.Generator().manual_seed(n)
    features = torch.randn(n, 2, dim, generator=gen, dtype=torch.float64)  # (N, 2, D)
    labels = torch.randint(20, 81, (n,), generator=gen).to(torch.float64)  # (N,)
    f32, y32 = features.float(), labels.float()
    fast = RnCLoss(temperature)

    def loop(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return authors_loop(f, y, temperature)

    def reference(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return rnc_loss_reference(f, y, temperature)

    ref_value, ref_grad = value_and_grad(reference, features, labels)
    row: dict[str, float] = {"N": n}
    for name, fn, f, y in (("fast", fast, f32, y32), ("loop", loop, f32, y32)):
        value, grad = value_and_grad(fn, f, y)
        row[f"{name}_rel"] = abs(value - ref_value) / abs(ref_value)
        row[f"{name}_grad"] = ((grad - ref_grad).abs().max() / ref_grad.abs().max()).item()
    calls = {**timed_calls("loop", loop, f32, y32),
             **timed_calls("ref", reference, features, labels),
             **timed_calls("fast", fast, f32, y32)}
    row.update(interleaved_ms(calls, repeats))
    if torch.cuda.is_available():
        fc, yc = f32.cuda(), y32.cuda()
        gpu = {**timed_calls("gpu_loop", loop, fc, yc), **timed_calls("gpu_fast", fast, fc, yc)}
        row.update(interleaved_ms(gpu, repeats))
    return row


def print_table(rows: list[dict[str, float]], threads: int, dim: int) -> None:
    print(f"\nCPU, {threads} thread(s), D = {dim}, median ms; speed-up = baseline / RnCLoss\n")
    print("| N | loop f32 fwd | loop f32 f+b | ref f64 fwd | ref f64 f+b | RnCLoss fwd "
          "| RnCLoss f+b | vs loop fwd | vs loop f+b | vs ref fwd | vs ref f+b "
          "| rel diff (loop) | rel diff | grad diff |")
    print("|---:" * 14 + "|")
    for r in rows:
        print(f"| {r['N']} | {r['loop_fwd']:.2f} | {r['loop_fb']:.2f} | {r['ref_fwd']:.2f} "
              f"| {r['ref_fb']:.2f} | {r['fast_fwd']:.2f} | {r['fast_fb']:.2f} "
              f"| {r['loop_fwd'] / r['fast_fwd']:.1f}x | {r['loop_fb'] / r['fast_fb']:.1f}x "
              f"| {r['ref_fwd'] / r['fast_fwd']:.1f}x | {r['ref_fb'] / r['fast_fb']:.1f}x "
              f"| {r['loop_rel']:.1e} | {r['fast_rel']:.1e} | {r['fast_grad']:.1e} |")
    if "gpu_fast_fb" in rows[0]:
        print(f"\n{torch.cuda.get_device_name()}, float32, median ms\n")
        print("| N | loop f32 fwd | loop f32 f+b | RnCLoss fwd | RnCLoss f+b | vs loop f+b |")
        print("|---:" * 6 + "|")
        for r in rows:
            print(f"| {r['N']} | {r['gpu_loop_fwd']:.2f} | {r['gpu_loop_fb']:.2f} "
                  f"| {r['gpu_fast_fwd']:.2f} | {r['gpu_fast_fb']:.2f} "
                  f"| {r['gpu_loop_fb'] / r['gpu_fast_fb']:.1f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256],
                        help="batch sizes N (scans; n = 2N views)")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension D")
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args(argv)

    default_threads = torch.get_num_threads()
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows = [bench_row(n, args.dim, args.repeats, args.temperature) for n in args.sizes]
        print_table(rows, threads, args.dim)
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
