"""Data: the manifest, cohort and BIDS reading, OpenBHB, IXI fetching, splits, audit, simulator.

Imports only :mod:`brainage._utils` of brainage (and :mod:`brainage.exceptions`).
"""

from __future__ import annotations

from brainage._utils.lazy import lazy_exports

#: Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    "alignment_problems": "audit",
    "demographics": "audit",
    "example_subjects": "audit",
    "problem_summary": "audit",
    "tissue_fractions": "audit",
    "tissue_table": "audit",
    "BASE_COLUMNS": "cohort",
    "CohortError": "cohort",
    "CohortResult": "cohort",
    "ImageLimits": "cohort",
    "PROBLEM_COLUMNS": "cohort",
    "TAIL_COLUMNS": "cohort",
    "check_header": "cohort",
    "check_image": "cohort",
    "file_problem": "cohort",
    "find_scans": "cohort",
    "load_cohort": "cohort",
    "open_image": "cohort",
    "parse_age": "cohort",
    "read_participant_ages": "cohort",
    "AGE_TOLERANCE": "fetch",
    "DATASETS": "fetch",
    "DownloadSettings": "fetch",
    "EXCLUDED_COLUMNS": "fetch",
    "FetchError": "fetch",
    "FetchReport": "fetch",
    "IXISettings": "fetch",
    "IXI_DEMOGRAPHICS_URL": "fetch",
    "IXI_SITES": "fetch",
    "IXI_T1_URL": "fetch",
    "PARTICIPANT_COLUMNS": "fetch",
    "download": "fetch",
    "fetch_ixi": "fetch",
    "read_ixi_demographics": "fetch",
    "unpack_ixi_t1": "fetch",
    "Atlas": "manifest",
    "DatasetSpec": "manifest",
    "FORMATS": "manifest",
    "MANIFEST_SCHEMA": "manifest",
    "Manifest": "manifest",
    "ManifestError": "manifest",
    "Problem": "manifest",
    "load_manifest": "manifest",
    "AFFINE": "openbhb",
    "OFFICIAL_SPLITS": "openbhb",
    "SHAPE": "openbhb",
    "find_openbhb_scans": "openbhb",
    "load_openbhb_array": "openbhb",
    "load_openbhb_cohort": "openbhb",
    "openbhb_grid": "openbhb",
    "openbhb_path": "openbhb",
    "AgeingConfig": "simulate",
    "AnatomyConfig": "simulate",
    "DiseaseConfig": "simulate",
    "ScoreConfig": "simulate",
    "SimulatedCohort": "simulate",
    "SimulationConfig": "simulate",
    "SimulationConfigError": "simulate",
    "SiteConfig": "simulate",
    "config_from_dict": "simulate",
    "ensure_cohort": "simulate",
    "read_truth": "simulate",
    "simulate_cohort": "simulate",
    "CLINICAL": "splits",
    "EXTERNAL_TEST": "splits",
    "SPLITS": "splits",
    "benchmark_splits": "splits",
    "load_splits": "splits",
    "make_splits": "splits",
    "save_splits": "splits",
}
_MODULES = (
    "audit", "cohort", "fetch", "manifest", "openbhb", "simulate", "splits",
)

__all__ = sorted([*_EXPORTS, *_MODULES])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MODULES)
