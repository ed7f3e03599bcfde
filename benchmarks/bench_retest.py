"""Test-retest reliability of a trained model on simulated rescans: prints the table.

Held-out subjects of a run's simulated cohort (test-split controls and patients) are scanned
again by the simulator (``brainage.data.simulate.simulate_rescans``): a repeat session at the
own site (new head pose, bias field, noise, brain-mask variation) and a travelling-subject
session at another site. Every scan is predicted with ``brainage.inference.predict.predict_scans``
and the model folder's stored age-bias correction; ``brainage.analysis.reliability`` gives
ICC(2,1), ICC(3,1), Bland-Altman limits, SEM and the smallest detectable change (SDC), the
paired RNC-vs-L1 comparison of the SEM and the site offsets of the travelling subjects. The
goal of issue 33: within site ICC >= 0.97 and an SDC of the corrected gap below the simulated
PD effect (about 3 years) for RNC; across sites ICC >= 0.9.

Usage (a finished quick build; the rescans go to ``--out``, outside the cohort)::

    python benchmarks/bench_retest.py --run /work/wt/base/runs/quick \\
        --n-controls 30 --n-patients 20 --jobs 2

With ``--real N`` it also predicts N real scans (``../shared/data/ixi10``, ``ixi40``) and their
acquisition changes (``brainage.imaging.perturb.ACQUISITION_CASES``: a head moved by 3-4
degrees and mm, 1.5 and 3 mm voxels, 2 % Rician noise, a bias field, motion ghosting, another
axis order) and prints the change of prediction per change: predictions only, the real scans
never train, calibrate or select anything (``--skip-sim`` for only that part).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from brainage.study.retest import choose_rescan_subjects, run_retest
from brainage.study.tables import format_interval, format_number


def _markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _table(result_table: pd.DataFrame) -> pd.DataFrame:
    t = result_table
    return pd.DataFrame({
        "subjects": t["subjects"], "model": t["model"].str.upper(), "comparison": t["comparison"],
        "measure": t["measure"], "n": t["n"],
        "ICC(2,1) [95% CI]": [format_interval(v, lo, hi, 3) for v, lo, hi in
                              zip(t["icc2"], t["icc2_low"], t["icc2_high"])],
        "ICC(3,1) [95% CI]": [format_interval(v, lo, hi, 3) for v, lo, hi in
                              zip(t["icc3"], t["icc3_low"], t["icc3_high"])],
        "mean diff (y)": [format_number(v, 2) for v in t["mean_diff"]],
        "LoA (y)": [f"{lo:.2f} to {hi:.2f}" for lo, hi in zip(t["loa_low"], t["loa_high"])],
        "MAD (y)": [format_interval(v, lo, hi, 2) for v, lo, hi in
                    zip(t["mad"], t["mad_low"], t["mad_high"])],
        "SEM (y)": [format_number(v, 2) for v in t["sem"]],
        "SDC (y) [95% CI]": [format_interval(v, lo, hi, 2) for v, lo, hi in
                             zip(t["sdc"], t["sdc_low"], t["sdc_high"])]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("/work/wt/base/runs/quick"),
                        help="a finished run folder of a simulated cohort")
    parser.add_argument("--models", type=Path, default=None,
                        help="model folder (default: <run>/models)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the rescans (default: a temporary folder)")
    parser.add_argument("--n-controls", type=int, default=30)
    parser.add_argument("--n-patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--real", type=int, default=0, metavar="N",
                        help="also predict N real scans of --real-data and their acquisition "
                             "changes (predictions only; about 20 s per scan and change on 2 "
                             "cores)")
    parser.add_argument("--real-data", type=Path, nargs="+",
                        default=[Path("../shared/data/ixi10"), Path("../shared/data/ixi40")])
    parser.add_argument("--skip-sim", action="store_true", help="only the real scans")
    parser.add_argument("--factors", action="store_true",
                        help="also repeat sessions that redraw only the pose, only the "
                             "mask margin's variation or only the scanner stream (bias, "
                             "noise and mask): what limits the repeatability")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.skip_sim:
        _simulated(args)
    if args.factors:
        _factors(args)
    if args.real:
        _real(args)
    return 0


def _real(args: argparse.Namespace) -> None:
    from brainage.study.retest import perturbation_predictions, perturbation_table

    rows = []
    for root in args.real_data:
        if (root / "participants.tsv").is_file():
            people = pd.read_csv(root / "participants.tsv", sep="\t")
            rows += [(root / p / "anat" / f"{p}_T1w.nii.gz", float(a))
                     for p, a in zip(people["participant_id"], people["age"])]
    if not rows:
        print(f"no real scans under {args.real_data}: skipped")
        return
    step = max(len(rows) // args.real, 1)  # spread over the datasets' ages
    chosen = rows[::step][:args.real]
    models = args.models or args.run / "models"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        predictions = perturbation_predictions([p for p, _ in chosen], [a for _, a in chosen],
                                               models, Path(tmp), seed=args.seed,
                                               n_jobs=args.jobs)
        seconds = time.perf_counter() - start
    failed = predictions.loc[predictions["error"].fillna("") != "", ["path", "error"]]
    table = perturbation_table(predictions)
    print(f"\n## Real scans: change of prediction per acquisition change ({len(chosen)} scans "
          f"of {', '.join(map(str, args.real_data))}, ages "
          f"{min(a for _, a in chosen):.0f}-{max(a for _, a in chosen):.0f} y)\n")
    table = table.assign(model=table["model"].str.upper()).round(3)
    print(_markdown(table))
    print(f"\nFailed predictions: {len(failed)} {failed.to_dict('records')}. Wall time "
          f"{seconds:.0f} s for {predictions['path'].nunique()} scans (--jobs {args.jobs}).")


def _factors(args: argparse.Namespace) -> None:
    cohort = pd.read_csv(args.run / "cohort.csv")
    info = json.loads((args.run / "dataset.json").read_text(encoding="utf-8"))
    models = args.models or args.run / "models"
    chosen = choose_rescan_subjects(cohort, n_controls=args.n_controls,
                                    n_patients=args.n_patients, seed=args.seed)
    rows = []
    for redraw in (("pose",), ("mask",), ("scanner",), ("pose", "scanner", "mask")):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_retest(cohort, Path(info["root"]), models, Path(tmp) / "rescans",
                                participants=chosen,
                                skull_stripped=bool(info.get("skull_stripped")),
                                seed=args.seed, n_boot=args.n_boot, n_jobs=args.jobs,
                                sessions=["repeat"], redraw=redraw)
        t = result.table[result.table["subjects"] == "all"]
        for r in t.itertuples():
            rows.append({"redrawn": "+".join(redraw), "model": r.model.upper(),
                         "measure": r.measure, "n": r.n,
                         "ICC(2,1)": format_interval(r.icc2, r.icc2_low, r.icc2_high, 3),
                         "SEM (y)": format_number(r.sem, 2),
                         "SDC (y) [95% CI]": format_interval(r.sdc, r.sdc_low, r.sdc_high, 2)})
    print("\n## Within site: which redrawn part limits the repeatability (repeat sessions; "
          "pose = rotation and residual scale, mask = the brain-mask margin's variation, "
          "scanner = bias field, noise and mask)\n")
    print(_markdown(pd.DataFrame(rows)))


def _simulated(args: argparse.Namespace) -> None:

    cohort = pd.read_csv(args.run / "cohort.csv")
    info = json.loads((args.run / "dataset.json").read_text(encoding="utf-8"))
    if not info.get("simulated"):
        print(f"{args.run} is not a run of a simulated cohort", file=sys.stderr)
        return
    models = args.models or args.run / "models"
    chosen = choose_rescan_subjects(cohort, n_controls=args.n_controls,
                                    n_patients=args.n_patients, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "rescans"
        start = time.perf_counter()
        result = run_retest(cohort, Path(info["root"]), models, out, participants=chosen,
                            skull_stripped=bool(info.get("skull_stripped")), seed=args.seed,
                            n_boot=args.n_boot, n_jobs=args.jobs)
        total = time.perf_counter() - start
    groups = cohort.set_index("participant_id").loc[chosen, "group"].value_counts().to_dict()
    print(f"## Test-retest on simulated rescans: {len(chosen)} held-out subjects {groups}, "
          f"model {models}\n")
    print(_markdown(_table(result.table)))
    print("\n## RNC minus L1 within-subject SD (SEM, years), paired bootstrap 95% CI\n")
    comp = result.comparison
    print(_markdown(pd.DataFrame({
        "comparison": comp["comparison"], "measure": comp["measure"], "n": comp["n"],
        "SEM RNC": comp["sem_a"].round(2), "SEM L1": comp["sem_b"].round(2),
        "RNC - L1 [95% CI]": [format_interval(v, lo, hi, 2) for v, lo, hi in
                              zip(comp["difference"], comp["ci_low"], comp["ci_high"])]})))
    print("\n## Travelling subjects: change of the corrected gap by site pair (years)\n")
    off = result.offsets.assign(model=lambda t: t["model"].str.upper())
    print(_markdown(off.round({"mean": 2, "sd": 2})))
    truth = json.loads((Path(info["root"]) / "derivatives" / "ground_truth" /
                        "simulation.json").read_text(encoding="utf-8"))
    effects = truth["true_mean_brain_age_gap"]
    print(f"\nSimulated true mean brain-age gaps (effects to detect): AD "
          f"{effects.get('AD', float('nan')):.2f} y, PD {effects.get('PD', float('nan')):.2f} y")
    clinical = args.run / "clinical.json"
    if clinical.is_file():
        print(f"(the study's measured group effects: {clinical})")
    failed = result.predictions["error"].fillna("").ne("").sum()
    print(f"\nFailed predictions: {failed}. Wall time: rescans simulated in "
          f"{result.seconds['simulate_rescans']:.1f} s, predictions of "
          f"{result.predictions['path'].nunique()} scans in {result.seconds['predict']:.1f} s, "
          f"total {total:.1f} s (--jobs {args.jobs}).")


if __name__ == "__main__":
    raise SystemExit(main())
