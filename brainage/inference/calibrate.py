"""``brainage calibrate``: a site calibration of a model folder from a site's healthy controls.

The scans are predicted exactly as ``brainage predict`` predicts them
(:func:`brainage.inference.predict.predict_scans`), and each head's site calibration is fitted
on the raw predictions with :func:`brainage.analysis.site_calibration.fit_site_calibration`
(the age-bias line, its slope shrunk towards the head's training correction, and the conformal
interval recalibrated on cross-fitted residuals). One JSON file
(:data:`SITE_CALIBRATION_FILE_FORMAT`) holds every head's calibration, each bound to the
SHA-256 of the checkpoint it was fitted for: ``brainage predict --site-calibration`` refuses it
for other weights.

Split-conformal intervals from a site calibration hold at their level for new scans that are
exchangeable with the calibration scans: the same site (scanner and protocol), healthy, and
in the calibration scans' age range (:data:`INTERVAL_CONDITIONS`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainage._utils import atomic_write
from brainage.analysis.site_calibration import fit_site_calibration, training_line
from brainage.inference.model_folder import (
    INTERVAL_CONDITIONS,
    SITE_CALIBRATION_FILE_FORMAT,
    ModelFolder,
    head_checkpoint_digest,
    load_model_folder,
)
from brainage.inference.predict import collect_scans, predict_scans

logger = logging.getLogger(__name__)

__all__ = [
    "CONTROL_LABELS",
    "calibrate_site",
]

#: Labels of participants.tsv's ``group`` column taken as healthy controls.
CONTROL_LABELS = ("HC", "CN", "control", "healthy")


def _participants(inputs: Sequence[str | os.PathLike]) -> dict[str, dict[str, str]]:
    """``{participant_id: {column: value}}`` of the BIDS folders' participants.tsv (group, site)."""
    found: dict[str, dict[str, str]] = {}
    for item in map(Path, inputs):
        tsv = item / "participants.tsv"
        if item.is_dir() and tsv.is_file():
            table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
            if "participant_id" not in table:
                continue
            for row in table.to_dict("records"):
                found[str(row["participant_id"])] = {k: str(v) for k, v in row.items()}
    return found


def _site_name(site: str | None, inputs: Sequence[str | os.PathLike],
               participants: Mapping[str, Mapping[str, str]], ids: Sequence[str]) -> str:
    """``site``, else the one ``site`` of participants.tsv, else the first input's name."""
    if site is not None:
        if not isinstance(site, str) or not site.strip():
            raise ValueError(f"--site must be a non-empty name, got {site!r}")
        return site
    sites = {participants[i].get("site", "") for i in ids if i in participants} - {"", "n/a"}
    if len(sites) > 1:
        raise ValueError(f"the calibration scans of {list(map(str, inputs))} come from "
                         f"{len(sites)} sites {sorted(sites)} in participants.tsv: a site "
                         f"calibration is fitted on one site (select its scans, or name it "
                         f"with --site if they are one scanner)")
    if sites:
        return sites.pop()
    first = Path(str(inputs[0])).resolve()  # a BIDS folder's name, or a scan's folder's
    return first.name if first.is_dir() else first.parent.name


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as "
                         f"{out / 'site_calibration.json'}")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")


def calibrate_site(inputs: Sequence[str | os.PathLike],
                   model_folder: str | os.PathLike | ModelFolder, out: str | os.PathLike, *,
                   site: str | None = None, ages: Sequence[float | None] | None = None,
                   level: float = 0.9, overwrite: bool = False, device: str = "cpu",
                   allow_unverified: bool = False, **options: Any) -> dict[str, Any]:
    """Predict a site's healthy controls and write every head's site calibration to ``out``.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Scans and/or BIDS folders (:func:`brainage.inference.predict.collect_scans`), all of
        one site, healthy controls with known ages (a ``group`` column of participants.tsv
        outside :data:`CONTROL_LABELS` is refused).
    model_folder : str, PathLike or ModelFolder
        The model folder whose heads are calibrated.
    out : str or PathLike
        The JSON file written (refused if it exists, unless ``overwrite``).
    site : str, optional
        The site's name; default: participants.tsv's one ``site``, else the first input's name.
    ages : sequence of float, optional
        One age per scan file of ``inputs`` (BIDS folders use participants.tsv).
    level : float, default=0.9
        The intervals' coverage (0.9 needs at least 10 scans).
    overwrite : bool, default=False
        Replace ``out``.
    device, allow_unverified
        As in :func:`brainage.inference.predict.load_model_folder`.
    **options
        Further options of :func:`brainage.inference.predict.predict_scans` (``space``,
        ``skull_stripped``, ``cache``, ``n_jobs``, ``accept_registration`` ...).

    Returns
    -------
    dict
        What was written (:data:`SITE_CALIBRATION_FILE_FORMAT`).

    Raises
    ------
    ValueError
        ``out`` exists; a scan has no age; a scan is a patient; too few scans predicted; ages
        spanning too little with no training correction; messages name the inputs.
    """
    out = Path(out)
    _check_out(out, overwrite)
    where = ", ".join(map(str, inputs))
    scans = collect_scans(inputs, ages)
    unknown = scans.loc[~np.isfinite(scans["age"].to_numpy(float)), "path"].tolist()
    if unknown:
        raise ValueError(f"calibration scans of {where}: {len(unknown)} of {len(scans)} have no "
                         f"age (e.g. {unknown[0]}); a site calibration needs every scan's age "
                         f"(participants.tsv for BIDS folders, --age for files)")
    participants = _participants(inputs)
    ids = scans["participant_id"].tolist()
    group_of = {i: participants.get(i, {}).get("group", "HC") or "HC" for i in ids}
    site = _site_name(site, inputs, participants, ids)
    folder = (model_folder if isinstance(model_folder, ModelFolder)
              else load_model_folder(model_folder, device=device,
                                     allow_unverified=allow_unverified))
    table = predict_scans(inputs, folder, ages=ages, **options)
    failed = table.loc[table["error"] != "", ["path", "error"]].drop_duplicates("path")
    for row in failed.itertuples():
        logger.warning("calibration scan %s failed and is left out: %s", row.path, row.error)
    created = datetime.datetime.now(datetime.UTC).date().isoformat()
    heads: dict[str, Any] = {}
    for head in folder.models:
        rows = table[(table["model"] == head) & (table["error"] == "")]
        prior = (None if folder.corrections.get(head) is None
                 else training_line(folder.corrections[head]))
        try:
            calibration = fit_site_calibration(
                rows["age"].to_numpy(float), rows["predicted"].to_numpy(float), site=site,
                prior=prior, level=level, controls=CONTROL_LABELS, created=created,
                group=[group_of[p] for p in rows["participant_id"]])
        except ValueError as err:
            raise ValueError(f"calibration scans of {where} (head {head}, {len(rows)} of "
                             f"{len(scans)} scans predicted): {err}") from err
        heads[head] = {"checkpoint_sha256": head_checkpoint_digest(folder, head),
                       "calibration": calibration.to_dict()}
    used = table.loc[table["error"] == "", "age"]
    result = {"format": SITE_CALIBRATION_FILE_FORMAT, "site": site, "created": created,
              "n_scans": int(table.loc[table["error"] == "", "path"].nunique()),
              "age_range": [float(used.min()), float(used.max())],
              "model": str(folder.root), "failed": failed["path"].tolist(),
              "conditions": INTERVAL_CONDITIONS, "heads": heads}
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1),
                                                      encoding="utf-8"))
    logger.info("wrote the site calibration of %s (%d scans) to %s", site, result["n_scans"], out)
    return result

