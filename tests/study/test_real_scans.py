"""Tests of brainage.study.real_scans: the shared real-scan folders and the book's sentence
(issue 28, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainage.analysis.transfer import transfer_table
from brainage.study import real_scans


def _bids(folder: Path, ids: list[str]) -> None:
    for pid in ids:
        (folder / pid / "anat").mkdir(parents=True)
        (folder / pid / "anat" / f"{pid}_T1w.nii.gz").write_bytes(b"")
    (folder / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"{p}\t40\n" for p in ids))


def test_shared_real_folders_beside_the_checkout(tmp_path):
    checkout = tmp_path / "brainage"
    checkout.mkdir()
    data = tmp_path / "shared" / "data"
    _bids(data / "ixi10", ["sub-01"])
    (data / "ixi40").mkdir(parents=True)  # no participants.tsv
    found, skipped = real_scans.shared_real_folders(checkout)
    assert found == [data / "ixi10"]
    # relative to the checkout: the book shows these and must not show machine paths
    assert skipped == ["../shared/data/ixi40 has no participants.tsv (the ages are needed)"]
    found, skipped = real_scans.shared_real_folders(checkout, names=("ixi10", "other"))
    assert found == [data / "ixi10"] and skipped == ["../shared/data/other does not exist"]
    (data / "empty").mkdir()
    (data / "empty" / "participants.tsv").write_text("participant_id\tage\n")
    _, skipped = real_scans.shared_real_folders(checkout, names=("empty",))
    assert skipped == ["../shared/data/empty holds no sub-*/anat/*_T1w.nii[.gz]"]


def test_predict_real_scans_refuses_no_folder():
    with pytest.raises(ValueError, match="at least one real-scan folder"):
        real_scans.predict_real_scans("models", [])


def test_real_scans_sentence_reads_the_table():
    age = np.array([20.0, 30.0, 40.0, 50.0, 60.0])
    table = pd.DataFrame({"model": ["rnc"] * 5, "age": age,
                          "predicted": [30.0, 30.0, 40.0, 40.0, 50.0]})
    sentence = real_scans.real_scans_sentence(transfer_table(table))
    # r 0.9449 [0.3778, 0.9965] (Fisher z), MAE 6, own-mean MAE 12, gap -2, slope 0.5
    assert sentence == ("RNC: r = 0.94 (95% CI 0.38 to 1.00), MAE 6.00 years (predicting the "
                        "scans' own mean age: 12.0), mean gap -2.00 years, slope 0.50")
