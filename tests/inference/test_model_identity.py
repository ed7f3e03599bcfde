"""What a model card says the model is (its note: "a starter model ...") and how well it did
(each head's test MAE, recorded by notebook 03), and that ``brainage predict`` says both: in the
domain line it prints and in the warning when a simulated model meets real scans."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from brainage.inference import model_folder, trust
from tests.inference.test_predict import GRID_MM, MNI

NOTE = "a starter model (brainage train --profile starter), for trying the tool"
ERRORS = {"rnc": {"mae_years": 9.14, "n": 32, "simulated": True},
          "l1": {"mae_years": 10.25, "n": 32, "simulated": True}}


@pytest.fixture
def folder(model_dir: Path, tmp_path: Path) -> Path:
    """The module's tiny model folder, copied again: each test changes its card."""
    return Path(shutil.copytree(model_dir, tmp_path / "models"))


def _card(folder: Path) -> dict:
    return json.loads((folder / model_folder.MODEL_CARD_FILE).read_text(encoding="utf-8"))


def test_recorded_test_error_and_note_are_printed_with_the_domain(folder: Path) -> None:
    model_folder.write_model_card(folder, preprocess={"space": MNI, "grid_mm": GRID_MM,
                                                      "skull_stripped": True,
                                                      "crop_to_brain": True},
                                  saliency_layer=None, profile="starter", note=NOTE)
    assert model_folder.record_test_error(folder, ERRORS) == folder / "model.json"
    card = _card(folder)
    assert card["note"] == NOTE
    assert card["test_error"]["rnc"]["mae_years"] == pytest.approx(9.14)
    text = trust.describe_model(folder)
    assert text is not None
    assert text.startswith(NOTE)
    assert "test MAE on 32 held-out simulated scans: 9.1 y (rnc), 10.2 y (l1)" in text
    # the folder still loads: the new fields are part of the card's schema
    assert set(model_folder.load_model_folder(folder).models) == {"rnc", "l1"}


def test_a_card_without_note_or_test_error_says_neither(folder: Path) -> None:
    assert trust.model_identity(_card(folder)) == ""
    assert "test MAE" not in (trust.describe_model(folder) or "")


@pytest.mark.parametrize(("values", "message"), [
    ({"rnx": {"mae_years": 9.0, "n": 32}}, r"no head \['rnx'\].*heads: \['l1', 'rnc'\]"),
    ({"rnc": {"mae_years": -1.0, "n": 32}}, "mae_years"),
    ({"rnc": {"mae_years": 9.0}}, "'n' is a required property|n"),
    ({"rnc": {"mae_years": "nine", "n": 32}}, "mae_years"),
])
def test_bad_test_error_is_refused_and_the_card_is_kept(folder: Path, values: dict,
                                                        message: str) -> None:
    before = (folder / model_folder.MODEL_CARD_FILE).read_bytes()
    with pytest.raises(model_folder.ModelFolderError, match=message) as info:
        model_folder.record_test_error(folder, values)
    assert str(folder / model_folder.MODEL_CARD_FILE) in str(info.value)
    assert (folder / model_folder.MODEL_CARD_FILE).read_bytes() == before


@pytest.mark.parametrize("note", ["", "   ", 3])
def test_empty_or_non_text_note_is_refused(folder: Path, note) -> None:
    with pytest.raises(TypeError, match="note must be a non-empty string"):
        model_folder.write_model_card(folder, preprocess={"space": MNI, "grid_mm": GRID_MM},
                                      saliency_layer=None, profile="x", note=note)


def _domain_warning(card: dict, scan: Path) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trust.DomainCheck(card).check({str(scan): "native"})
    messages = [str(w.message) for w in caught if issubclass(w.category, trust.DomainWarning)]
    assert len(messages) == 1
    return messages[0]


def test_the_sim2real_warning_says_it_is_a_starter_model_and_its_error(tmp_path: Path) -> None:
    card = {"domain": {"dataset": "simulated", "simulated": True, "n_train": 96,
                       "age_range": [20.0, 85.0]}, "note": NOTE, "test_error": ERRORS}
    message = _domain_warning(card, tmp_path / "real_T1w.nii.gz")
    assert message.startswith(f"the model ({NOTE}; test MAE on 32 held-out simulated scans: "
                              f"9.1 y (rnc), 10.2 y (l1)) was trained on simulated data")
    plain = _domain_warning({"domain": card["domain"]}, tmp_path / "real_T1w.nii.gz")
    assert plain.startswith("the model was trained on simulated data ('simulated')")
