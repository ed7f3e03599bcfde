"""The column registry (issue 27, item 3): one schema from which the evaluation, prediction and
BIDS tables take their columns; each column has one type and one description, and each table
name has one meaning."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match=r"\['brain_age'\] have no description"):
        registry.describe_columns([*registry.PREDICTION_COLUMNS, "brain_age"])


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
