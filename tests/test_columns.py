"""The column registry (issue 27, item 3): one schema from which the evaluation, prediction and
BIDS tables take their columns; each column has one type and one description, and each table
name has one meaning."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainage._utils import PREDICTION_VALUES, TRUST_VALUES
from brainage._utils import columns as registry
from brainage.analysis import evaluation

TABLES = {"evaluation": registry.EVALUATION_COLUMNS,
          "prediction": registry.PREDICTION_COLUMNS,
          "bids": registry.BIDS_COLUMNS}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_column_of_every_table_has_a_type_and_a_description(table):
    columns = TABLES[table]
    assert len(set(columns)) == len(columns)  # no column twice
    assert set(columns) <= set(registry.COLUMN_TYPES)
    assert list(registry.describe_columns(columns)) == list(columns)


def test_tables_share_the_prediction_values_and_one_name_means_one_table():
    for columns in TABLES.values():
        assert [c for c in columns if c in PREDICTION_VALUES] == list(PREDICTION_VALUES)
    assert [c for c in registry.PREDICTION_COLUMNS if c in TRUST_VALUES] == list(TRUST_VALUES)
    assert registry.BIDS_COLUMNS[:len(registry.PREDICTION_COLUMNS)] == registry.PREDICTION_COLUMNS
    # the evaluation table is not a second PREDICTION_COLUMNS (it was, with 11 columns)
    assert not hasattr(evaluation, "PREDICTION_COLUMNS")
    from brainage.inference import bids_app, predict

    assert predict.PREDICTION_COLUMNS is registry.PREDICTION_COLUMNS
    assert not hasattr(bids_app, "TABLE_COLUMNS")


def test_a_column_without_a_description_is_refused():
    with pytest.raises(ValueError, match=r"\['brain_age_months'\] have no description"):
        registry.describe_columns([*registry.PREDICTION_COLUMNS, "brain_age_months"])


def test_evaluation_table_has_the_registry_columns_and_types(rng):
    ages = rng.uniform(20, 90, 60)
    predicted = 0.7 * ages + 16.5 + rng.normal(0, 3, 60)
    table = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(60)],
                          "split": ["val"] * 30 + ["test"] * 30, "group": "HC", "age": ages,
                          "sex": "F", "site": "a", "model": "rnc", "predicted": predicted,
                          "gap": predicted - ages})
    out, _ = evaluation.correct_predictions(table)
    assert list(out.columns) == list(registry.EVALUATION_COLUMNS)
    for column in out.columns:
        if registry.COLUMN_TYPES[column] == "float64":
            assert out[column].dtype == np.float64, column


# --- the output tables (issue 30) -----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"


def _section(text: str, title: str) -> str:
    """The text of docs/outputs.md's section ``## title`` (up to the next ``## ``)."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 3)
    return text[start:] if end < 0 else text[start:end]


def _documented_columns(text: str) -> list[str]:
    """First cells (`name`) of the rows of docs/outputs.md's column table."""
    return re.findall(r"^\| `([a-z_]+)` \|", _section(text, "Columns"), flags=re.MULTILINE)


def test_every_output_column_is_documented_with_the_fields_names():
    text = DOCS.read_text(encoding="utf-8")
    documented = _documented_columns(text)
    assert documented == list(registry.BIDS_OUTPUT_COLUMNS)  # all, in the tables' order
    for name in ("brain.predicted_age", "lower.CI", "upper.CI", "brainPAD"):
        assert f"`{name}`" in text or name in text, name
    for internal, output in registry.OUTPUT_NAMES.items():  # the API's name of each column
        row = next(line for line in _section(text, "Names elsewhere").splitlines()
                   if line.startswith(f"| `{output}` |"))
        assert row.rstrip().endswith(f"| `{internal}` |"), row
    assert registry.RECOMMENDED_HEAD in text


def test_the_documented_columns_parser_sees_an_undocumented_one():
    text = DOCS.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `domain` |"))
    assert "domain" not in _documented_columns(text.replace(row + "\n", ""))


def test_output_names_and_rounding_cover_only_output_columns():
    outputs = set(registry.BIDS_OUTPUT_COLUMNS)
    assert set(registry.OUTPUT_NAMES) <= set(registry.PREDICTION_COLUMNS)
    assert set(registry.OUTPUT_NAMES.values()) <= outputs
    assert set(registry.COLUMN_DECIMALS) <= outputs
    assert not set(registry.OUTPUT_NAMES) & outputs  # no library name is written as such
    for column in registry.COLUMN_DECIMALS:
        assert registry.COLUMN_TYPES[column] == "float64", column
