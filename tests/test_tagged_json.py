"""One reader of brainage's JSON files with a format tag (issue 27, item 3): ``read_tagged_json``
parses, checks the tag first, then the fields; the model card, the conformal calibration, the
site calibration and the checkpoints refuse a foreign tag with the same message."""

from __future__ import annotations

import json

import pytest

from brainage._utils.io import check_format_tag, read_tagged_json

SCHEMA = {"type": "object", "required": ["format", "shape"],
          "properties": {"shape": {"type": "array", "minItems": 3, "maxItems": 3,
                                   "items": {"type": "integer"}}}}


def _write(tmp_path, payload, name="thing.json"):
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_a_tagged_file_is_read_with_its_fields(tmp_path):
    path = _write(tmp_path, {"format": "demo/1", "shape": [7, 8, 9], "extra": True})
    assert read_tagged_json(path, "demo/1", SCHEMA) == {"format": "demo/1", "shape": [7, 8, 9],
                                                        "extra": True}


@pytest.mark.parametrize(("payload", "message"), [
    ("{not json", "cannot be read as JSON"),
    ("[1, 2]", "field 'format' must be 'demo/1', got 'list'"),
    ({"format": "demo/2", "shape": [7, 8, 9]}, "field 'format' must be 'demo/1', got 'demo/2'"),
    ({"shape": [7, 8, 9]}, "field 'format' must be 'demo/1', got None"),
    ({"format": "demo/1", "shape": [7, 8]}, "shape must hold 3 item(s) here; got [7, 8]"),
    ({"format": "demo/1", "shape": [7, 8, "9"]}, "shape[2] must be an integer; got str '9'"),
    ({"format": "demo/1"}, "required key 'shape' is missing"),
])
def test_a_bad_file_is_refused_naming_file_field_and_problem(tmp_path, payload, message):
    path = _write(tmp_path, payload)

    class DemoError(ValueError):
        pass

    with pytest.raises(DemoError) as info:
        read_tagged_json(path, "demo/1", SCHEMA, kind="a demo file", error=DemoError)
    assert str(path) in str(info.value) and message in str(info.value)


def test_every_reader_refuses_a_foreign_tag_with_the_same_words(tmp_path):
    import torch

    from brainage.analysis.site_calibration import SiteCalibration
    from brainage.inference.model_folder import load_calibration, read_card
    from brainage.models.checkpoint import read_checkpoint

    card = _write(tmp_path, {"format": "other/9"}, "model.json")
    (tmp_path / "rnc").mkdir()
    _write(tmp_path / "rnc", {"format": "other/9"}, "conformal.json")
    site = _write(tmp_path, {"format": "other/9"}, "site.json")
    checkpoint = tmp_path / "other.pt"
    torch.save({"format": "other/9"}, checkpoint)
    readers = [lambda: read_card(card), lambda: load_calibration(tmp_path / "rnc"),
               lambda: SiteCalibration.load(site), lambda: read_checkpoint(checkpoint)]
    for read in readers:
        with pytest.raises(ValueError, match=r"field 'format' must be '[a-z-]+/1', got 'other/9'"):
            read()
    with pytest.raises(TypeError, match="must be"):
        check_format_tag({"format": 1}, "demo/1", "x", error=TypeError)
