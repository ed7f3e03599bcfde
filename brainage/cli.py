"""The ``brainage`` command line: every argparse definition of the package.

Subcommands
-----------
build
    Execute the notebooks of a profile and render the book (what ``nox -s build`` runs).
profiles
    List the available profiles.
train
    Train the two heads on a BIDS folder (or the simulated cohort) with a profile.
simulate
    Generate a simulated BIDS cohort with its ground truth.
preprocess
    Preprocess T1w scans onto the MNI152 grid.
fetch
    Download a public dataset (IXI) into a BIDS folder.
predict
    Brain age of new scans (files or a BIDS folder) with a trained model folder.
calibrate
    A site calibration of a model folder from a site's healthy controls (for predict).
bids
    The BIDS App: brain age of a BIDS dataset as a derivative (participant and group levels).

Building the parser imports nothing but this module and :mod:`brainage._utils`, so that
``brainage --help`` answers at once; each subcommand imports the library it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from brainage._utils import (
    BRAIN_EXTRACTION_METHODS,
    OUTPUT_COLUMNS,
    RECOMMENDED_HEAD_REASON,
    SPACES,
    VERSION,
    check_scheduler,
    default_cache_dir,
)

__all__ = ["build_parser", "main", "predict_summary"]

#: ``brainage predict --space`` choices: ``auto`` reads the scan's grid.
PREDICT_SPACES = ("auto", *SPACES)
SCHEDULER_HELP = ("run the per-scan preprocessing on a Dask cluster: local:N (N local worker "
                  "processes), a scheduler address (tcp://host:8786) or a scheduler file "
                  "(*.json); the results are the same as a local run's (default: local "
                  "processes, --jobs)")

DEVICE_HELP = ("where the models run: auto (the GPU when one is visible, else the CPU), cpu, "
               "cuda, cuda:1 ... (default: auto)")
#: --site-calibration of predict and bids.
SITE_CALIBRATION_HELP = (
    "a site calibration of this model (brainage calibrate), or a folder of them (one per "
    "site); repeatable. Each scan uses its site's (participants.tsv's site column; the only one "
    "given when its site is unknown): corrected ages and intervals from the site's healthy "
    "controls; the calibration column says which calibration each row used")


def _scheduler(text: str) -> str:
    """argparse type of ``--scheduler`` (checked before any work)."""
    try:
        return check_scheduler(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# --- build, profiles -----------------------------------------------------------------------


def _add_build(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "build", help="execute the notebooks of a profile and render the book",
        description="Execute notebooks/NN_*.py in order with papermill, using the parameters of "
                    "a profile (notebooks/params/<profile>.yaml), then render book/_build/html.")
    parser.add_argument("--profile", default="quick",
                        help="profile name or YAML path (default: quick)")
    parser.add_argument("--root", default=None, help="project root (default: found from cwd)")
    parser.add_argument("--no-book", action="store_true", help="execute notebooks only")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                        help="execute only these notebooks (stems such as 01_data_audit)")
    parser.set_defaults(func=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from brainage.study.book import build

    report = build(args.profile, root=args.root, book=not args.no_book, only=args.only)
    for stem, seconds in report.notebooks.items():
        print(f"{stem:<24} {seconds:8.1f} s")
    if report.book_seconds is not None:
        print(f"{'book':<24} {report.book_seconds:8.1f} s")
    print(f"{'total':<24} {report.total_seconds:8.1f} s")
    if report.html_dir:
        print(f"book: {report.html_dir / 'index.html'}")
    return 0


def _add_profiles(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "profiles", help="list the available profiles, one line each",
        description="List the profiles of a brainage checkout (notebooks/params/*.yaml) with "
                    "the first sentence of each file's comment. Profiles come with the source: "
                    "run it inside a clone of the repository, or pass --root.")
    parser.add_argument("--root", default=None,
                        help="the clone of the repository (default: found from the working "
                             "directory)")
    parser.set_defaults(func=_run_profiles)


def _run_profiles(args: argparse.Namespace) -> int:
    from brainage.study.profiles import find_project_root, list_profiles, profile_description

    root = find_project_root(args.root) if args.root else find_project_root()
    params = root / "notebooks" / "params"
    names = list_profiles(params)
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {profile_description(params / f'{name}.yaml')}")
    return 0


# --- train ---------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="train the two heads (RNC, L1) on your BIDS folder or the simulated "
                      "cohort, without the clinical notebooks and the book",
        description="Run the study's data audit, training and evaluation notebooks (01-03) "
                    "with a profile's settings into OUT: the scans are checked, preprocessed "
                    "(cached) and split by subject; both heads are trained, their age-bias "
                    "correction and intervals fitted on the validation split and their test "
                    "error measured. OUT/models is a model folder for brainage predict "
                    "--model. Needs a clone of the repository (the notebooks and profiles "
                    "come with it). With --bids, participants.tsv must give participant_id "
                    "and age; rows whose group is not a control label are kept out of "
                    "training.")
    parser.add_argument("--profile", default="quick",
                        help="profile name or YAML file: model, schedule, grid, splits, seed "
                             "(default: quick; `brainage profiles` lists them)")
    parser.add_argument("--bids", default=None, metavar="BIDS_DIR",
                        help="your BIDS folder of healthy scans with ages (default: the "
                             "profile's dataset, the simulated cohort for quick)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="the run folder to write (audit, splits, metrics; the model "
                             "folder in RUN_DIR/models); an interrupted run resumes, a "
                             "finished one is refused")
    parser.add_argument("--space", default="native", choices=SPACES,
                        help="with --bids: space of the scans (default: native: registered "
                             "to MNI152)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="with --bids: the scans hold the brain only")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--root", default=None,
                        help="the clone of the repository (default: found from the working "
                             "directory)")
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from brainage.study.user_training import train_models

    if args.bids is None and (args.space != "native" or args.skull_stripped):
        raise ValueError("--space and --skull-stripped describe --bids scans; give --bids")
    report = train_models(args.profile, out=args.out, bids=args.bids, space=args.space,
                          skull_stripped=args.skull_stripped, device=args.device,
                          root=args.root)
    for stem, seconds in report.seconds.items():
        print(f"{stem:<24} {seconds:8.1f} s")
    print(f"model folder: {report.models_dir}")
    print(f"predict with: brainage predict SCANS --model {report.models_dir}")
    return 0


# --- simulate ------------------------------------------------------------------------------


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "simulate", help="generate a simulated BIDS cohort with its ground truth",
        description="Simulate healthy, AD and PD subjects from the MNI152 template and write a "
                    "BIDS dataset with ground-truth maps under derivatives/ground_truth.")
    parser.add_argument("out_dir", type=Path, help="BIDS folder to write")
    parser.add_argument("--n-healthy", type=int, default=100, help="healthy controls (100)")
    parser.add_argument("--n-ad", type=int, default=0, help="Alzheimer's patients (0)")
    parser.add_argument("--n-pd", type=int, default=0, help="Parkinson's patients (0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--resolution-mm", type=float, default=2.0,
                        help="template grid voxel size in mm (2)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1)")
    parser.add_argument("--native", action="store_true",
                        help="write native-space images (random rigid pose, site voxel size)")
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON or YAML file of SimulationConfig settings")
    parser.add_argument("--preset", choices=["varied"], default=None,  # simulate.PRESETS
                        help="start from a named preset instead of the defaults (--config's "
                             "settings go on top): varied, individual ageing rates, gamma, "
                             "finer shape, ventricular asymmetry and a contracting brain mask; "
                             "an opt-in experiment that read real scans worse "
                             "(docs/real-data.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--rescans-of", type=Path, default=None, metavar="COHORT",
                        help="instead of a cohort, write rescans of subjects of this simulated "
                             "cohort into out_dir (same anatomy and ages, new scanner draws)")
    parser.add_argument("--participants", default=None,
                        help="with --rescans-of: comma-separated participant ids (default all)")
    parser.add_argument("--sessions", default="repeat,travel",
                        help="with --rescans-of: 'repeat' (same site), 'travel' (another "
                             "site) or both, comma-separated (repeat,travel)")
    parser.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    import dataclasses

    from brainage.data.simulate import load_config_file, preset_config, simulate_cohort

    if args.rescans_of is not None:
        return _run_rescans(args)
    cfg = (load_config_file(args.config, preset=args.preset) if args.config
           else preset_config(args.preset))
    if args.native:
        cfg = dataclasses.replace(cfg, native_space=True)
    cohort = simulate_cohort(args.out_dir, n_healthy=args.n_healthy, n_ad=args.n_ad,
                             n_pd=args.n_pd, seed=args.seed, resolution_mm=args.resolution_mm,
                             config=cfg, n_jobs=args.jobs, overwrite=args.overwrite)
    logging.getLogger(__name__).info("wrote %d subjects to %s", len(cohort.participants),
                                     cohort.root)
    return 0


def _run_rescans(args: argparse.Namespace) -> int:
    import pandas as pd

    from brainage.data.simulate import simulate_rescans

    if args.participants:
        participants = [p.strip() for p in args.participants.split(",") if p.strip()]
    else:
        participants = pd.read_csv(args.rescans_of / "participants.tsv", sep="\t",
                                   usecols=["participant_id"])["participant_id"].tolist()
    rescans = simulate_rescans(args.rescans_of, args.out_dir, participants=participants,
                               sessions=[s.strip() for s in args.sessions.split(",")],
                               seed=args.seed, n_jobs=args.jobs, overwrite=args.overwrite)
    logging.getLogger(__name__).info("wrote %d rescans to %s", len(rescans.truth), rescans.root)
    return 0


# --- preprocess ----------------------------------------------------------------------------


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "preprocess", help="preprocess T1w scans onto the MNI152 grid",
        description="Reorient, bias-correct, register to MNI152 and skull-strip a native scan "
                    "(or resample a template-space scan), normalise its intensities and write it. "
                    "Exit status 1 if any scan failed.")
    parser.add_argument("input", metavar="IN",
                        help="a NIfTI scan, or a folder searched recursively for *.nii[.gz]")
    parser.add_argument("output", metavar="OUT",
                        help="output NIfTI file (for one scan) or folder (mirrors IN's layout)")
    parser.add_argument("--space", default="native", choices=SPACES,
                        help="space of the input scans (default: native: registered to MNI152)")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="a model folder: write the scans onto its grid (grid_mm, "
                             "crop_to_brain) with its skull removal, as brainage predict "
                             "preprocesses them for it (not with --grid-mm, --crop-to-brain or "
                             "--brain-extraction)")
    parser.add_argument("--grid-mm", type=float, default=None,
                        help="voxel size of the output MNI152 grid in mm (default: 2, or the "
                             "model's with --model)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="the scans hold the brain only (no template-mask skull removal)")
    parser.add_argument("--crop-to-brain", action="store_true",
                        help="crop the grid to the template brain's bounding box plus 8 mm")
    parser.add_argument("--brain-extraction", default=None,
                        choices=BRAIN_EXTRACTION_METHODS,
                        help="skull removal of native scans: deepbet, the subject's own brain "
                             "mask (default), or template, the template's mask after "
                             "registration")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="cache folder (default: OUT/.cache for a folder, none for a file)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--scheduler", type=_scheduler, default=None, metavar="ADDRESS",
                        help=SCHEDULER_HELP)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist already (default: refuse); an "
                             "output that is or lies inside IN is refused regardless")
    parser.set_defaults(func=_run_preprocess)


def _preprocess_params(args: argparse.Namespace):
    """``brainage preprocess``'s settings: the options, or the model folder's grid."""
    from brainage.imaging.preprocess import PreprocessParams

    if args.model is None:
        grid_mm = 2.0 if args.grid_mm is None else args.grid_mm
        return PreprocessParams(space=args.space, grid_mm=grid_mm,
                                skull_stripped=args.skull_stripped,
                                crop_to_brain=args.crop_to_brain,
                                brain_extraction=args.brain_extraction or "deepbet")
    given = [name for name, value in (("--grid-mm", args.grid_mm),
                                      ("--crop-to-brain", args.crop_to_brain or None),
                                      ("--brain-extraction", args.brain_extraction))
             if value is not None]
    if given:
        raise ValueError(f"--model {args.model} sets the grid and skull removal; drop "
                         f"{', '.join(given)}")
    from brainage.inference.model_folder import read_model_preprocess

    trained = read_model_preprocess(args.model)
    logging.getLogger(__name__).info(
        "model %s: grid %g mm, crop_to_brain %s, brain extraction %s", args.model,
        trained.grid_mm, trained.crop_to_brain, trained.brain_extraction)
    return PreprocessParams(space=args.space, grid_mm=trained.grid_mm,
                            skull_stripped=args.skull_stripped,
                            crop_to_brain=trained.crop_to_brain,
                            brain_extraction=trained.brain_extraction)


def _run_preprocess(args: argparse.Namespace) -> int:
    from brainage.imaging.preprocess import preprocess_files
    from brainage.imaging.registration import registration_qc_text

    params = _preprocess_params(args)
    results = preprocess_files(args.input, args.output, params, cache=args.cache,
                               n_jobs=args.jobs, overwrite=args.overwrite,
                               scheduler=args.scheduler)
    for item, out in results:
        if item.ok:
            # the figure stored with the volume: the one predict, bids and the audit report
            print(f"{item.path} -> {out}  {registration_qc_text(item.alignment)}")
        else:
            print(f"{item.path}: FAILED: {item.error}")
    return 0 if all(item.ok for item, _ in results) else 1


# --- fetch ---------------------------------------------------------------------------------


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fetch", help="download a public dataset (ixi) into a BIDS folder",
        description="Download IXI's T1 tarball and demographics sheet into DEST/sourcedata "
                    "(an interrupted download resumes), unpack the scans and write DEST as a BIDS "
                    "folder: participants.tsv, dataset_description.json and excluded.tsv. "
                    "Files obtained by hand (--t1-archive, --demographics, or already in "
                    "DEST/sourcedata) are used instead of downloading: no network needed.")
    parser.add_argument("dataset", metavar="DATASET", help="dataset to download (ixi)")
    parser.add_argument("dest", metavar="DEST",
                        help="BIDS folder to write; downloads are kept in DEST/sourcedata")
    parser.add_argument("--t1-url", default=None, metavar="URL",
                        help="the T1 tarball (default: IXI's published URL)")
    parser.add_argument("--demographics-url", default=None, metavar="URL",
                        help="the demographics sheet, .xls or .csv (default: IXI's published URL)")
    parser.add_argument("--t1-sha256", default=None, metavar="HEX",
                        help="expected sha256 of the T1 tarball (default: not checked)")
    parser.add_argument("--demographics-sha256", default=None, metavar="HEX",
                        help="expected sha256 of the sheet (default: not checked)")
    parser.add_argument("--t1-archive", default=None, metavar="PATH",
                        help="IXI-T1.tar obtained by hand (when IXI's server refuses downloads): "
                             "used where it is instead of downloading --t1-url")
    parser.add_argument("--demographics", default=None, metavar="PATH",
                        help="IXI.xls (or .csv) obtained by hand: used where it is instead of "
                             "downloading --demographics-url")
    parser.add_argument("--no-keep-archive", dest="keep_archive", action="store_false",
                        help="delete the tarball after unpacking (a rerun downloads it again)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds before a stalled connection fails (default: 60)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries after a dropped connection, each resuming (default: 3)")
    parser.set_defaults(func=_run_fetch)


def _run_fetch(args: argparse.Namespace) -> int:
    from brainage.data.fetch import DownloadSettings, IXISettings, fetch

    for url, local in (("--t1-url", "--t1-archive"), ("--demographics-url", "--demographics")):
        if getattr(args, url[2:].replace("-", "_")) and getattr(args, local[2:].replace("-", "_")):
            raise ValueError(f"give {url} or {local}, not both")
    urls = {key: value for key, value in (("t1_url", args.t1_url),
                                          ("demographics_url", args.demographics_url)) if value}
    settings = IXISettings(**urls, t1_archive=args.t1_archive, demographics=args.demographics,
                           t1_sha256=args.t1_sha256,
                           demographics_sha256=args.demographics_sha256,
                           keep_archive=args.keep_archive,
                           download=DownloadSettings(timeout_s=args.timeout, retries=args.retries))
    report = fetch(args.dataset, args.dest, settings)
    for problem in report.problems:
        print(f"warning: {problem}")
    print(f"{report.n_scans} scans written to {report.root} ({report.participants.name}); "
          f"{report.n_excluded} subjects excluded ({report.excluded.name}); "
          f"{report.bytes_downloaded / 1e6:.1f} MB downloaded in {report.seconds:.1f} s")
    return 0


# --- predict -------------------------------------------------------------------------------


def _add_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict", help="predict the brain age of T1w scans with a trained model folder",
        description="Preprocess each scan as the model's training scans were (native scans are "
                    "registered to MNI152), predict its brain age and write a CSV with one row "
                    "per scan (the recommended head; --all-heads: one row per scan and head), "
                    "with the brain-age gap and its bias-corrected value when ages are given. "
                    "Exit status 1 if any scan failed (its row names the problem).",
        epilog="Columns, in order (docs/outputs.md describes each, with brainageR's names): "
               + ", ".join(OUTPUT_COLUMNS) + ". brain_age is brainageR's "
               "brain.predicted_age, brain_age_lower and brain_age_upper its lower.CI and "
               "upper.CI (a split-conformal interval at interval_level, which holds only for "
               "scans exchangeable with the calibration scans that the calibration column "
               "names: same site and protocol, healthy, within their age range), "
               "brain_age_gap = brain_age - age (brainPAD); "
               "the _corrected columns apply the head's age-bias correction. domain carries "
               "the domain warning into the table: ok, sim2real (a model trained on simulated "
               "brains applied to a real scan: expect large errors) or ood (ood_score above 1: "
               "unlike the training scans). registration_misfit_mm is the registration QC (mm, "
               "lower is better; a native scan above the threshold of 5.0 mm gets no age unless "
               "--force). Ages are rounded to 0.1 year. The model's training domain is printed "
               "first, a summary line last. Head: " + RECOMMENDED_HEAD_REASON + ".")
    parser.add_argument("inputs", nargs="+", metavar="SCAN_OR_BIDS",
                        help="NIfTI scans and/or BIDS folders (sub-*/[ses-*/]anat/*_T1w.nii[.gz])")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model folder: runs/<profile>/models (all heads) or "
                             "runs/<profile>/models/<head>")
    parser.add_argument("--age", type=float, nargs="+", default=None, metavar="YEARS",
                        help="chronological age of each scan file, in order; nan if unknown "
                             "(BIDS folders use participants.tsv)")
    parser.add_argument("--out", default="brainage_predictions.csv", metavar="CSV",
                        help="output table (default: brainage_predictions.csv), checked before "
                             "any work and rewritten atomically after each scan, so an "
                             "interrupted run (Ctrl-C: exit 130, SIGTERM: 143) keeps the scans "
                             "that finished")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists, and the maps already in --saliency "
                             "(default: refuse, exit 2)")
    parser.add_argument("--all-heads", action="store_true",
                        help="one row per scan and head (default: one row per scan, the "
                             "recommended head rnc; see below)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="use a head whose model.json records no SHA-256 of its "
                             "checkpoint, with a warning (default: refuse, exit 2)")
    parser.add_argument("--space", default="auto", choices=PREDICT_SPACES,
                        help="space of the scans (default: auto: MNI152 if the scan lies on an "
                             "MNI152 template grid, else native: registered)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="the scans hold the brain only")
    parser.add_argument("--saliency", default=None, metavar="OUT_DIR",
                        help="write integrated-gradients maps (years against the model's "
                             "reference, a typical training scan of the mean age: the study's "
                             "method) to "
                             "OUT_DIR/<head>/<participant>.nii.gz")
    parser.add_argument("--qc", default=None, metavar="DIR",
                        help="where the registration-QC picture of each scan that fails the QC "
                             "goes (default: beside --out, in <OUT without .csv>_qc/)")
    parser.add_argument("--force", action="store_true",
                        help="predict native scans whose registration fails the QC too (look "
                             "at their QC pictures first)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help=f"preprocessing cache (default: {default_cache_dir()})")
    parser.add_argument("--jobs", type=int, default=1, help="preprocessing worker processes")
    parser.add_argument("--scheduler", type=_scheduler, default=None, metavar="ADDRESS",
                        help=SCHEDULER_HELP)
    parser.add_argument("--site-calibration", default=None, metavar="JSON", action="append",
                        help=SITE_CALIBRATION_HELP)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.set_defaults(func=_run_predict)


def _qc_dir(args: argparse.Namespace) -> str:
    """``--qc``, or ``<OUT without .csv>_qc`` beside the output table."""
    if args.qc:
        return args.qc
    out = Path(args.out)
    return str(out.with_name(f"{out.name.removesuffix('.csv')}_qc"))


def _run_predict(args: argparse.Namespace) -> int:
    """1 if any scan failed, else 0; 130 after Ctrl-C and 143 after SIGTERM, the scans that
    finished written first."""
    from brainage.inference.predict import predict_to_csv
    from brainage.inference.trust import describe_model

    domain = describe_model(args.model)
    if domain:
        print(f"model {args.model}: {domain}")
    run = predict_to_csv(args.inputs, args.model, args.out, overwrite=args.overwrite,
                         ages=args.age, space=args.space, skull_stripped=args.skull_stripped,
                         saliency_dir=args.saliency, cache=args.cache, n_jobs=args.jobs,
                         device=args.device, scheduler=args.scheduler,
                         allow_unverified=args.allow_unverified,
                         accept_registration=args.force, qc_dir=_qc_dir(args),
                         site_calibration=args.site_calibration, all_heads=args.all_heads)
    code = {None: 0, "SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
    if run.table is None:
        print(f"brainage predict: interrupted before any scan finished; {run.out} is not "
              f"written", file=sys.stderr)
        return code[run.interrupted or "SIGINT"]
    table = run.table
    failed = table.loc[table["error"] != "", ["path", "error"]].drop_duplicates("path")
    for row in failed.itertuples():
        print(f"brainage predict: FAILED {row.path}: {row.error}", file=sys.stderr)
    n_scans = table["path"].nunique()
    heads = list(dict.fromkeys(run.output["head"]))
    print(f"{n_scans - len(failed)} of {n_scans} scan(s) predicted, head(s) "
          f"{', '.join(heads)} -> {run.out}")
    for column, what in (("ood", "flagged out of distribution (ood) by at least one head"),
                         ("outside_age_range", "outside the training ages (outside_age_range)")):
        marked = table.loc[table[column].fillna(False).astype(bool), "path"].nunique()
        if marked:
            print(f"{marked} of {n_scans} scan(s) {what}")
    _print_calibration(table)
    if run.batch is not None:
        for entry in run.batch["heads"].values():
            print(f"batch: {entry['line']} -> {run.batch_file}")
    if run.interrupted is not None:
        name = "Ctrl-C" if run.interrupted == "SIGINT" else run.interrupted
        print(f"brainage predict: interrupted ({name}) after {n_scans} scan(s); {run.out} "
              f"holds them (run again to finish: preprocessed scans are cached)",
              file=sys.stderr)
    print(predict_summary(run.output))
    if run.interrupted is not None:
        return code[run.interrupted]
    return 1 if len(failed) else 0


def predict_summary(output) -> str:
    """The closing line of ``brainage predict``: scans predicted and refused, the range of
    the reported brain ages (per head with --all-heads) and the domain verdict, from the
    table the CSV holds (:func:`brainage.inference.predict.output_table`)."""
    scans = output.drop_duplicates("path")
    refused = int((scans["error"].astype("string").fillna("") != "").sum())
    parts = [f"summary: {len(scans) - refused} predicted, {refused} refused"]
    for head, rows in output.groupby("head", sort=False):
        ages = rows["brain_age"].dropna()
        if len(ages):
            parts.append(f"brain age {ages.min():.1f}-{ages.max():.1f} y ({head})")
    domain = scans["domain"].astype("string").fillna("")
    predicted = int((domain != "").sum())
    counts = {level: int((domain == level).sum()) for level in ("sim2real", "ood")}
    if counts["sim2real"]:
        verdict = (f"domain: {counts['sim2real']} of {predicted} sim2real (a model trained on "
                   f"simulated brains, real scans: ages not validated, intervals do not hold; "
                   f"calibrate on local controls or train on your data)")
    elif counts["ood"]:
        verdict = f"domain: {counts['ood']} of {predicted} ood (unlike the training scans)"
    else:
        verdict = f"domain: ok ({predicted} of {predicted})" if predicted else "domain: n/a"
    return "; ".join([*parts, verdict])


def _print_calibration(table) -> None:
    """Which calibration the intervals came from, and when they hold."""
    from brainage.inference.trust import interval_conditions

    line = interval_conditions(table)
    if line:
        print(line)


# --- calibrate -----------------------------------------------------------------------------


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate", help="fit a site calibration of a model folder on a site's healthy "
                          "controls",
        description="Predict healthy controls of one site (with known ages) as brainage "
                    "predict does, fit each head's site age-bias correction (slope shrunk "
                    "towards the training correction) and recalibrate its conformal interval "
                    "on cross-fitted residuals, and write them to one JSON file for "
                    "brainage predict --site-calibration. Refuses too few scans (10 at level "
                    "0.9), scans without an age, and patients (participants.tsv group).")
    parser.add_argument("model", metavar="MODEL_DIR", help="the model folder to calibrate")
    parser.add_argument("inputs", nargs="+", metavar="SCAN_OR_BIDS",
                        help="NIfTI scans and/or BIDS folders of the site's healthy controls")
    parser.add_argument("--out", required=True, metavar="JSON",
                        help="the site calibration file to write (never replaced without "
                             "--overwrite)")
    parser.add_argument("--site", default=None, metavar="NAME",
                        help="the site's name (default: participants.tsv's site, else the "
                             "first input's name)")
    parser.add_argument("--age", type=float, nargs="+", default=None, metavar="YEARS",
                        help="age of each scan file, in order (BIDS folders use "
                             "participants.tsv)")
    parser.add_argument("--level", type=float, default=0.9,
                        help="coverage of the intervals (default: 0.9)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="use a head whose model.json records no checkpoint checksum")
    parser.add_argument("--space", default="auto", choices=PREDICT_SPACES,
                        help="space of the scans (default: auto)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="the scans hold the brain only")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help=f"preprocessing cache (default: {default_cache_dir()})")
    parser.add_argument("--jobs", type=int, default=1, help="preprocessing worker processes")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    """0 when the calibration is written; 2 on a refused calibration set (the error)."""
    from brainage.inference.calibrate import calibrate_site
    from brainage.inference.model_folder import INTERVAL_CONDITIONS

    result = calibrate_site(args.inputs, args.model, args.out, site=args.site, ages=args.age,
                            level=args.level, overwrite=args.overwrite, device=args.device,
                            allow_unverified=args.allow_unverified, space=args.space,
                            skull_stripped=args.skull_stripped, cache=args.cache,
                            n_jobs=args.jobs)
    for path in result["failed"]:
        print(f"brainage calibrate: left out {path} (it failed; see the log)", file=sys.stderr)
    low, high = result["age_range"]
    print(f"site {result['site']}: {result['n_scans']} scan(s) aged {low:g}-{high:g} -> "
          f"{args.out}")
    for head, entry in result["heads"].items():
        c = entry["calibration"]
        print(f"  {head}: predicted = {c['correction']['slope']:.3f} x age + "
              f"{c['correction']['intercept']:.2f} ({c['correction']['fitted']} fitted), "
              f"{c['level']:g} interval +/- {c['half_width']:.2f} y")
    print(f"  {INTERVAL_CONDITIONS}")
    return 0


# --- bids ----------------------------------------------------------------------------------


def _add_bids(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bids", help="the BIDS App: brain age of a BIDS dataset as a BIDS derivative",
        description="BIDS-Apps interface. participant: preprocess and predict the chosen "
                    "participants' T1w scans into OUTPUT_DIR/sub-<label>/[ses-<label>/]anat/ "
                    "(a scan already done is skipped; a failed one writes OUTPUT_DIR/logs/"
                    "<scan>_error.json, the others go on; exit status 1 if any failed). "
                    "Parallel jobs (one participant per SLURM array task) may share "
                    "OUTPUT_DIR. group: collect every participant's table into "
                    "OUTPUT_DIR/group_desc-brainage_T1w.tsv with a summary figure. Nothing "
                    "is written inside BIDS_DIR.")
    parser.add_argument("--version", action="version", version=f"brainage {VERSION}")
    parser.add_argument("bids_dir", metavar="BIDS_DIR", help="the raw BIDS dataset (read only)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR",
                        help="the derivative dataset to write (outside BIDS_DIR)")
    parser.add_argument("analysis_level", metavar="LEVEL", choices=("participant", "group"),
                        help="participant or group")
    parser.add_argument("--participant-label", "--participant_label", nargs="+",
                        metavar="LABEL", dest="participant_label",
                        help="participants to process, without sub- (default: all)")
    parser.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                        dest="session_label",
                        help="sessions to process, without ses- (default: all)")
    parser.add_argument("--model", metavar="DIR",
                        help="model folder (participant level; runs/<profile>/models or one "
                             "head of it); at group level, optional: the same folder tests the "
                             "batch of scans against its training scans")
    parser.add_argument("--space", default="auto", choices=PREDICT_SPACES,
                        help="space of the scans (default: auto, from each scan's grid)")
    parser.add_argument("--skull-stripped", action="store_true",
                        help="the scans hold the brain only")
    parser.add_argument("--saliency", action="store_true",
                        help="also write an integrated-gradients map per scan and head "
                             "(years against the model's reference, a typical training scan)")
    parser.add_argument("--no-qc", dest="qc", action="store_false",
                        help="do not draw the registration-QC image of each scan (drawn by "
                             "default, also for scans the registration QC refused)")
    parser.add_argument("--force", action="store_true",
                        help="predict native scans whose registration fails the QC too (look "
                             "at their QC images first)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help=f"preprocessing cache, shared by parallel jobs (default: "
                             f"{default_cache_dir()})")
    parser.add_argument("--bids-filter-file", "--bids_filter_file", default=None,
                        metavar="JSON", dest="bids_filter_file",
                        help="select T1w scans by BIDS entities, in fMRIPrep's format: "
                             "{\"t1w\": {\"session\": \"01\", \"acquisition\": null}} "
                             "(session, acquisition, run, reconstruction, ceagent; a list "
                             "allows several values, null requires the entity to be absent)")
    parser.add_argument("--jobs", "--nprocs", "--n_cpus", "--n-cpus", type=int, default=1,
                        dest="jobs",
                        help="preprocessing worker processes (--nprocs and --n_cpus, as "
                             "fMRIPrep and MRIQC name it, are the same option; default: 1)")
    parser.add_argument("--scheduler", type=_scheduler, default=None, metavar="ADDRESS",
                        help=SCHEDULER_HELP)
    parser.add_argument("--site-calibration", default=None, metavar="JSON", action="append",
                        help=SITE_CALIBRATION_HELP)
    parser.add_argument("--all-heads", action="store_true",
                        help="one row per scan and head in each table (default: one row per "
                             "scan, the recommended head rnc; see brainage predict --help)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.set_defaults(func=_run_bids)


def _run_bids(args: argparse.Namespace) -> int:
    """participant: 1 if any scan failed, else 0; group: 1 if a participant table was left
    out (unreadable), else 0. 2 on bad input."""
    from brainage.inference import bids_app

    if args.analysis_level == "group":
        report = bids_app.run_group_level(args.bids_dir, args.output_dir,
                                          participant_labels=args.participant_label,
                                          model=args.model)
        print(f"{report.n_scans} scan(s) of {report.n_participants} participant(s) -> "
              f"{report.table}, {report.figure.name}")
        print(report.domain)
        if report.intervals:
            print(report.intervals)
        _print_group_batch(report, args.model)
        for entry in report.failed:
            print(f"brainage bids: failed at participant level: {entry.get('source')}: "
                  f"{entry.get('error')}", file=sys.stderr)
        for entry in report.skipped:
            print(f"brainage bids: SKIPPED {entry['error']}", file=sys.stderr)
        if report.skipped:
            print(f"{len(report.skipped)} participant-level table(s) left out of the group "
                  f"table (named above)", file=sys.stderr)
        return 1 if report.skipped else 0
    if not args.model:
        raise ValueError("the participant level needs --model DIR (a model folder)")
    from brainage.inference.bids_input import read_bids_filter, summarise_dataset

    bids_filter = read_bids_filter(args.bids_filter_file) if args.bids_filter_file else None
    if Path(args.bids_dir).is_dir():  # a missing folder is refused below, naming it
        for line in summarise_dataset(args.bids_dir).lines():
            print(line)
    options = bids_app.ParticipantOptions(
        participant_labels=args.participant_label, session_labels=args.session_label,
        space=args.space, skull_stripped=args.skull_stripped, saliency=args.saliency,
        qc=args.qc, accept_registration=args.force, cache=args.cache, n_jobs=args.jobs,
        scheduler=args.scheduler, device=args.device, site_calibration=args.site_calibration,
        all_heads=args.all_heads, bids_filter=bids_filter)
    report = bids_app.run_participant_level(args.bids_dir, args.output_dir, args.model, options)
    for source, error in report.failed.items():
        print(f"brainage bids: FAILED {source}: {error}", file=sys.stderr)
    print(f"{len(report.written)} scan(s) written, {report.n_done_before} done already, "
          f"{len(report.failed)} failed, of {report.n_scans} -> {report.output_dir}")
    return 0 if report.ok else 1


def _print_group_batch(report, model: str | None) -> None:
    """The group level's batch verdict, one line per head (or why there is none)."""
    from brainage.inference.trust import MIN_BATCH

    if report.batch is not None:
        for entry in report.batch["heads"].values():
            print(f"batch: {entry['line']} -> {report.batch_file}")
    elif model is None:
        print("batch: no shift test of these scans (give --model, the participant level's "
              "model folder, to test them against its training scans)")
    else:
        print(f"batch: no shift test of these scans (fewer than {MIN_BATCH} scans with stored "
              f"features, "
              f"or no head with an OOD reference)")


# --- the parser ----------------------------------------------------------------------------


def _add_verbosity(parser: argparse.ArgumentParser, after: bool = False) -> None:
    """``-v``/``-q`` on the main parser and (``after``) on every subcommand, so that
    ``brainage -q predict ...`` and ``brainage predict ... -q`` mean the same (a subcommand
    parses into its own namespace: its options have their own names, combined by
    :func:`_verbosity`)."""
    parser.add_argument("-v", "--verbose", action="count", default=0 if after else 1,
                        dest="more_verbose" if after else "verbose",
                        help="more log output (-v debug); default: progress (info)")
    quiet = {"action": "store_true", "dest": "quiet_after"} if after else {
        "action": "store_const", "const": 0, "dest": "verbose"}
    parser.add_argument("-q", "--quiet", **quiet,
                        help="warnings and errors only, no progress bars (before or after the "
                             "subcommand)")


def _verbosity(args: argparse.Namespace) -> int:
    """0 (quiet), 1 (info, the default) or more (debug), from the options before and after
    the subcommand; ``-q`` anywhere wins."""
    if getattr(args, "quiet_after", False) or args.verbose == 0:
        return 0
    return args.verbose + getattr(args, "more_verbose", 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``brainage`` command."""
    parser = argparse.ArgumentParser(
        prog="brainage",
        description="MRI brain-age estimation with Rank-N-Contrast: a reproducible study.")
    parser.add_argument("--version", action="version", version=f"brainage {VERSION}")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_build, _add_profiles, _add_train, _add_simulate, _add_preprocess,
                _add_fetch, _add_predict, _add_calibrate, _add_bids):
        add(sub)
    for command in sub.choices.values():
        _add_verbosity(command, after=True)
    return parser


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """A warning as one readable line, without the source path and line that Python's own
    format shows (``warnings.formatwarning`` of the command line only). Replacing the
    formatter, not ``showwarning``, keeps ``warnings.catch_warnings(record=True)`` (and
    pytest.warns) working; on a terminal the line first clears a progress bar being drawn
    (tqdm draws it again on its next update)."""
    from tqdm import tqdm

    text = " ".join(str(message).split())
    drawing = any(not bar.disable for bar in list(getattr(tqdm, "_instances", ())))
    # a bar being drawn ends its line with no newline: clear it on a terminal, else
    # (a log file) start a new line
    clear = ("\r\x1b[K" if sys.stderr.isatty() else "\n") if drawing else ""
    return f"{clear}warning: {text} ({category.__name__})\n"


@contextlib.contextmanager
def _terminal(verbose: int):
    """Logging, warnings and progress bars of one command: log lines at the level asked,
    written above the progress bar (not through it, which drew the bar twice); warnings as one
    line; no bars with ``-q``."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from brainage._utils import set_progress

    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root_level = root.level
    root.setLevel(level)  # also when logging was configured before (a second main() call)
    set_progress(verbose > 0)
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        warnings.formatwarning = previous
        root.setLevel(root_level)
        set_progress(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 with one error line on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    args.verbose = _verbosity(args)
    with _terminal(args.verbose):
        try:
            return int(args.func(args) or 0)
        except (ValueError, OSError, RuntimeError) as err:
            print(f"brainage {args.command}: error: {' '.join(str(err).split())}",
                  file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
