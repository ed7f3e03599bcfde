"""Benchmark how fast ``brainage predict --jobs N`` stops on Ctrl-C and SIGTERM (issue 26).

Run from the repository root (real scans: ``../shared/data/ixi10``, native, so each worker is
inside brain extraction, N4 or registration when the signal comes)::

    python benchmarks/bench_interrupt.py --model runs/quick/models
    python benchmarks/bench_interrupt.py --model runs/quick/models --scans 6 --after 20
    python benchmarks/bench_interrupt.py --model runs/quick/models --data /path/to/ixi10

For each case ``brainage predict`` runs in its own session on ``--scans`` scans with ``--jobs``
workers and an empty cache; after ``--after`` seconds it gets SIGINT sent to its whole process
group (what Ctrl-C in a terminal does) or SIGTERM sent to the main process only (what a batch
scheduler's cancel does). Columns: the exit status, seconds from the signal to the exit,
processes of its session still alive 1 s after the exit (left-behind workers), and the scans
in the CSV (0 and no file when the signal came before the first group of scans finished).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IXI10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi10"


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (Linux ``/proc``)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _case(scans: list[Path], model: str, jobs: int, after: float, how: str,
          folder: Path) -> dict[str, object]:
    out, cache = folder / f"{how}.csv", folder / f"cache_{how}"
    command = [sys.executable, "-m", "brainage.cli", "-q", "predict", *map(str, scans),
               "--model", model, "--jobs", str(jobs), "--out", str(out), "--cache", str(cache)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(after)
    sent = time.monotonic()
    if how == "SIGINT to group":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    code = process.wait()
    seconds = time.monotonic() - sent
    time.sleep(1.0)
    left = _session_members(process.pid)
    for pid in left:  # clean up what the run left behind
        os.kill(pid, signal.SIGKILL)
    rows = out.read_text().count("\n") - 1 if out.is_file() else 0
    return {"case": how, "exit": code, "stop_s": round(seconds, 1), "alive_after_1s": len(left),
            "csv_rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (runs/<profile>/models)")
    parser.add_argument("--scans", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--after", type=float, default=20.0, help="seconds before the signal")
    parser.add_argument("--data", type=Path, default=IXI10, help=f"BIDS folder ({IXI10})")
    args = parser.parse_args()
    scans = sorted(args.data.glob("sub-*/anat/*_T1w.nii.gz"))[: args.scans]
    if len(scans) < args.scans:
        sys.exit(f"needs {args.scans} scans in {args.data}, found {len(scans)}")
    with tempfile.TemporaryDirectory() as tmp:
        results = [_case(scans, args.model, args.jobs, args.after, how, Path(tmp))
                   for how in ("SIGINT to group", "SIGTERM to main")]
    print(f"brainage predict --jobs {args.jobs} on {len(scans)} native IXI scans, signal after "
          f"{args.after:g} s (brainage from {Path(__import__('brainage').__file__).parent})")
    print(f"{'case':<16} {'exit':>4} {'stop_s':>7} {'alive_after_1s':>14} {'csv_rows':>8}")
    for r in results:
        print(f"{r['case']:<16} {r['exit']:>4} {r['stop_s']:>7} {r['alive_after_1s']:>14} "
              f"{r['csv_rows']:>8}")


if __name__ == "__main__":
    main()
