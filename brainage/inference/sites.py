"""Which site calibration each scan uses: ``--site-calibration`` of predict and the BIDS App.

A model folder may meet several sites; ``brainage calibrate`` writes one file per site (keyed
by the site's name inside it), and a user may keep them together, e.g. in
``<model folder>/site_calibrations/``. :func:`load_site_calibrations` reads files and folders
of them; :func:`calibrations_by_scan` gives each scan the calibration of its site in its BIDS
dataset's participants.tsv (``site`` column), so that one run over a multi-site dataset uses
each site's correction and intervals, and the ``calibration`` column says which.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainage.inference.model_folder import (
    ModelFolder,
    ModelFolderError,
    SiteCalibrationFile,
    load_site_calibration,
)

logger = logging.getLogger(__name__)

__all__ = ["calibrations_by_scan", "load_site_calibrations", "scan_site"]



def load_site_calibrations(sources: str | os.PathLike | Sequence[str | os.PathLike],
                           folder: ModelFolder) -> dict[str, SiteCalibrationFile]:
    """The site calibrations of ``folder`` in ``sources``, keyed by site.

    Parameters
    ----------
    sources : str, PathLike or sequence of them
        Site calibration files (``brainage calibrate``), and/or folders whose ``*.json`` files
        are all site calibrations (e.g. ``<model folder>/site_calibrations/``: a model folder
        may hold one per site).
    folder : ModelFolder
        Each file is checked against its heads' checkpoints
        (:func:`brainage.inference.model_folder.load_site_calibration`).

    Raises
    ------
    ModelFolderError
        A file cannot be used (see ``load_site_calibration``), a folder holds no ``*.json``,
        or two files calibrate the same site (both named).
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise ModelFolderError("--site-calibration needs at least one file or folder")
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.glob("*.json"))
            if not found:
                raise ModelFolderError(f"--site-calibration {item} is a folder without a site "
                                       f"calibration file (*.json)")
            files += found
        else:
            files.append(item)
    by_site: dict[str, SiteCalibrationFile] = {}
    for path in files:
        loaded = load_site_calibration(path, folder)
        if loaded.site in by_site:
            raise ModelFolderError(f"--site-calibration: {by_site[loaded.site].path} and {path} "
                                   f"both calibrate site {loaded.site!r}; keep one")
        by_site[loaded.site] = loaded
    return by_site


def scan_site(path: str | os.PathLike) -> str:
    """The ``site`` of a BIDS scan's participant in its dataset's participants.tsv, or ''.

    The dataset is found from the scan's place, ``<root>/sub-*/[ses-*/]anat/<scan>``; a scan
    outside a BIDS tree, a participants.tsv without a ``site`` column, or ``n/a`` give ''.
    """
    scan = Path(path).absolute()
    subject = next((p for p in scan.parents if p.name.startswith("sub-")), None)
    if subject is None:
        return ""
    tsv = subject.parent / "participants.tsv"
    if not tsv.is_file():
        return ""
    try:
        table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        logger.warning("%s cannot be read (%s): the site of %s is unknown", tsv, err, scan)
        return ""
    if "site" not in table or "participant_id" not in table:
        return ""
    rows = table.loc[table["participant_id"] == subject.name, "site"]
    value = str(rows.iloc[0]).strip() if len(rows) else ""
    return "" if value == "n/a" else value


def calibrations_by_scan(paths: Sequence[str | os.PathLike],
                         calibrations: Mapping[str, SiteCalibrationFile]
                         ) -> dict[int, SiteCalibrationFile]:
    """The site calibration each scan uses: the one of its site (participants.tsv's ``site``,
    :func:`scan_site`); a scan without a known site takes the only calibration when one is
    given, none (the training calibration) when several are. A scan whose site has no
    calibration takes none: another site's correction would be wrong for it. Both cases
    are logged with the scan; the prediction table's ``calibration`` column says which each
    row used.

    Returns
    -------
    dict of int to SiteCalibrationFile
        By position in ``paths``; a position without an entry uses the training calibration.
    """
    chosen: dict[int, SiteCalibrationFile] = {}
    unknown, uncalibrated = [], []
    only = next(iter(calibrations.values())) if len(calibrations) == 1 else None
    for i, path in enumerate(paths):
        site = scan_site(path)
        if site in calibrations:
            chosen[i] = calibrations[site]
        elif not site and only is not None:
            chosen[i] = only
        elif not site:
            unknown.append(str(path))
        else:
            uncalibrated.append(f"{path} (site {site})")
    if unknown:
        logger.warning("%d scan(s) have no site in participants.tsv, and %d site calibrations "
                       "were given (%s): they use the training calibration (e.g. %s)",
                       len(unknown), len(calibrations), sorted(calibrations), unknown[0])
    if uncalibrated:
        logger.warning("%d scan(s) come from a site without a site calibration (given: %s): "
                       "they use the training calibration (e.g. %s)", len(uncalibrated),
                       sorted(calibrations), uncalibrated[0])
    return chosen
