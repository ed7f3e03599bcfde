"""Helpers every stage shares: option and number checks, file I/O, constants, lazy exports.

``_utils`` imports nothing of brainage, so any subpackage may import it (see the import rules in
``tests/test_imports.py``).
"""

from __future__ import annotations

from brainage._utils.bids import bids_id, bids_label
from brainage._utils.columns import (
    BIDS_COLUMNS,
    BIDS_OUTPUT_COLUMNS,
    COLUMN_DECIMALS,
    COLUMN_DESCRIPTIONS,
    COLUMN_TYPES,
    EVALUATION_COLUMNS,
    OUTPUT_COLUMNS,
    OUTPUT_NAMES,
    PREDICTION_COLUMNS,
    RECOMMENDED_HEAD,
    RECOMMENDED_HEAD_REASON,
    describe_columns,
)
from brainage._utils.constants import (
    AGE_RANGE,
    BRAIN_EXTRACTION_METHODS,
    CHECKPOINT_FILE,
    GROUPS,
    PREDICTION_VALUES,
    SPACES,
    TRUST_VALUES,
    VERSION,
)
from brainage._utils.io import (
    atomic_write,
    check_format_tag,
    default_cache_dir,
    package_versions,
    read_json,
    read_tagged_json,
    schema_problems,
    sha256_file,
)
from brainage._utils.lazy import lazy_exports
from brainage._utils.scheduler import (
    TaskOutcome,
    check_scheduler,
    dask_client,
    progress_bar,
    run_tasks,
    scheduler_address,
    set_progress,
    worker_count,
)
from brainage._utils.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_vector,
    closest_hint,
    dataclass_from_dict,
)

__all__ = [
    "AGE_RANGE",
    "BIDS_COLUMNS",
    "BIDS_OUTPUT_COLUMNS",
    "BRAIN_EXTRACTION_METHODS",
    "CHECKPOINT_FILE",
    "COLUMN_DECIMALS",
    "COLUMN_DESCRIPTIONS",
    "COLUMN_TYPES",
    "EVALUATION_COLUMNS",
    "GROUPS",
    "OUTPUT_COLUMNS",
    "OUTPUT_NAMES",
    "PREDICTION_COLUMNS",
    "PREDICTION_VALUES",
    "RECOMMENDED_HEAD",
    "RECOMMENDED_HEAD_REASON",
    "SPACES",
    "TRUST_VALUES",
    "TaskOutcome",
    "VERSION",
    "atomic_write",
    "bids_id",
    "bids_label",
    "check_bool",
    "check_choice",
    "check_format_tag",
    "check_int",
    "check_number",
    "check_vector",
    "check_scheduler",
    "closest_hint",
    "dask_client",
    "dataclass_from_dict",
    "default_cache_dir",
    "describe_columns",
    "lazy_exports",
    "package_versions",
    "progress_bar",
    "read_json",
    "read_tagged_json",
    "run_tasks",
    "scheduler_address",
    "schema_problems",
    "set_progress",
    "sha256_file",
    "worker_count",
]
