"""The ``brainage`` command line.

Subcommands
-----------
build
    Execute the notebooks of a profile and render the book (what ``nox -s build`` runs).
profiles
    List the available profiles.
simulate
    Generate a simulated BIDS cohort with its ground truth.
preprocess
    Preprocess a T1w scan onto the MNI152 grid.
predict
    Brain age of new scans (files or a BIDS folder) with a trained model folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from brainage._utils.constants import VERSION as __version__

__all__ = ["build_parser", "main"]


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
    parser = sub.add_parser("profiles", help="list the available profiles")
    parser.add_argument("--root", default=None, help="project root (default: found from cwd)")
    parser.set_defaults(func=_run_profiles)


def _run_profiles(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainage.study.profiles import find_project_root, list_profiles

    root = Path(args.root) if args.root else find_project_root()
    for name in list_profiles(root / "notebooks" / "params"):
        print(name)
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from brainage.data.simulate import add_simulate_arguments, run_simulate

    parser = sub.add_parser(
        "simulate", help="generate a simulated BIDS cohort with its ground truth",
        description="Simulate healthy, AD and PD subjects from the MNI152 template and write a "
                    "BIDS dataset with ground-truth maps under derivatives/ground_truth.")
    add_simulate_arguments(parser)
    parser.set_defaults(func=run_simulate)


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    from brainage.imaging.preprocess import add_preprocess_arguments, run_preprocess

    parser = sub.add_parser(
        "preprocess", help="preprocess a T1w scan onto the MNI152 grid",
        description="Reorient, bias-correct, register to MNI152 and skull-strip a native scan "
                    "(or resample a template-space scan), normalise its intensities and write it.")
    add_preprocess_arguments(parser)
    parser.set_defaults(func=run_preprocess)


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    from brainage.data.fetch import add_fetch_arguments, run_fetch

    parser = sub.add_parser(
        "fetch", help="download a public dataset (ixi) into a BIDS folder",
        description="Download IXI's T1 tarball and demographics sheet into DEST/sourcedata "
                    "(an interrupted download resumes), unpack the scans and write DEST as a BIDS "
                    "folder: participants.tsv, dataset_description.json and excluded.tsv.")
    add_fetch_arguments(parser)
    parser.set_defaults(func=run_fetch)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from brainage.study.predict import add_predict_arguments, run_predict

    parser = sub.add_parser(
        "predict", help="predict the brain age of T1w scans with a trained model folder",
        description="Preprocess each scan as the model's training scans were (native scans are "
                    "registered to MNI152), predict with every head of the model folder and "
                    "write a CSV with the brain-age gap and its bias-corrected value when ages "
                    "are given. Exit status 1 if any scan failed (its row names the problem).")
    add_predict_arguments(parser)
    parser.set_defaults(func=run_predict)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``brainage`` command."""
    parser = argparse.ArgumentParser(
        prog="brainage",
        description="MRI brain-age estimation with Rank-N-Contrast: a reproducible study.")
    parser.add_argument("--version", action="version", version=f"brainage {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=1,
                        help="more log output (-v debug); default: progress (info)")
    parser.add_argument("-q", "--quiet", action="store_const", const=0, dest="verbose",
                        help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_build(sub)
    _add_profiles(sub)
    _add_simulate(sub)
    _add_preprocess(sub)
    _add_fetch(sub)
    _add_predict(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"brainage {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
