"""Bad inputs of the cohort reader and of preprocessing (issue 13): each test builds the bad
input itself, checks that the message names the file and the problem, and that the good inputs
of the same run still went through."""

from __future__ import annotations

import pytest

from brainage.cohort import CohortError, load_cohort, parse_age, read_participant_ages
from tests.test_cohort import HEADER, ROWS, TINY, make_bids, make_spec

# --- read_participant_ages / parse_age ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30.5", (30.5, None)), (" 0 ", (0.0, None)), ("120", (120.0, None)),
     ("n/a", (None, "missing")), ("", (None, "missing")), ("forty", (None, "not a number")),
     ("nan", (None, "not a number")), ("inf", (None, "not a number")),
     ("-inf", (None, "not a number")), ("1_0", (None, "not a number")),
     ("-1", (None, "outside 0-120 years")), ("130", (None, "outside 0-120 years"))],
)
def test_parse_age(text, expected):
    assert parse_age(text) == expected


def test_read_participant_ages_checks_as_the_cohort_reader(tmp_path):
    table = tmp_path / "bids" / "participants.tsv"
    table.parent.mkdir()
    table.write_text("participant_id\tage\n01\t30\nsub-02\tNaN\nsub-03\t130\nsub-04\tn/a\n"
                     "sub-05\t40\nsub-05\t41\n\t50\nsub-06\t7.5\n")
    ages, problems = read_participant_ages(table)
    assert ages == {"sub-01": 30.0, "sub-02": None, "sub-03": None, "sub-04": None,
                    "sub-05": None, "sub-06": 7.5}
    assert len(problems) == 5, problems
    for expected in (f"sub-02, {table} line 3: age 'NaN' is not a number",
                     f"sub-03, {table} line 4: age '130' is outside 0-120 years",
                     f"sub-04, {table} line 5: age 'n/a' is missing",
                     f"sub-05, {table}: the participant id appears on lines 6, 7",
                     f"{table}: line 8 has no participant id"):
        assert sum(expected in p for p in problems) == 1, (expected, problems)


def test_read_participant_ages_unreadable_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="participants table does not exist"):
        read_participant_ages(tmp_path / "participants.tsv")
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\tAge\nsub-01\t30\n")
    with pytest.raises(CohortError, match=r"participants\.tsv: the table lacks the column 'age'; "
                                          r"its columns: participant_id, Age \(did you mean"):
        read_participant_ages(table)
    table.write_bytes(b"participant_id\tage\nsub-01\t\xff\xfe30\n")
    with pytest.raises(CohortError, match="cannot read the participants table"):
        read_participant_ages(table)


# --- participants.tsv through load_cohort (11c, 11d) --------------------------------------


def _messages(result, check: str, severity: str) -> list[str]:
    rows = result.problems[(result.problems["check"] == check)
                           & (result.problems["severity"] == severity)]
    return rows["message"].tolist()


def test_nan_and_inf_ages_are_not_a_number(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\tNaN\tM\tB\tCN\t28\n",
                         "sub-03": "sub-03\t-inf\tM\tA\tAlzheimer\t21\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    table = root / "participants.tsv"
    assert _messages(result, "age", "error") == [
        f"dataset 'toy', sub-02, {table} line 3: age 'NaN' is not a number",
        f"dataset 'toy', sub-03, {table} line 4: age '-inf' is not a number"]
    assert sorted(result.table["participant_id"]) == ["sub-01", "sub-04"]  # the good rows


def test_stray_trailing_tabs_warn_and_the_table_is_read(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tmale\tB\tCN\tn/a\t\n",
                         "sub-04": "sub-04\t65\tn/a\tB\tParkinson\t\t \t\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows, header=HEADER.replace("\n", "\t\n"))
    table = root / "participants.tsv"
    result = load_cohort(make_spec(root), limits=TINY)
    assert result.errors.empty, result.errors["message"].tolist()
    warnings = _messages(result, "fields", "warning")
    assert len(warnings) == 3, warnings
    assert f"{table}: the header (line 1) ends with an empty column name" in warnings[0]
    assert f"{table}: line 3 ends with 1 empty field(s) more than the header's 6" in warnings[1]
    assert f"{table}: line 5 ends with 2 empty field(s)" in warnings[2]
    assert len(result.table) == 5  # every scan of the run
    assert result.table.set_index("participant_id")["age"].to_dict()["sub-04"] == 65.0
    ages, problems = read_participant_ages(table)
    assert ages == {"sub-01": 30.5, "sub-02": 41.0, "sub-03": 72.0, "sub-04": 65.0}
    assert len(problems) == 3 and "line 5 ends with 2 empty field(s)" in problems[2]


def test_extra_values_are_an_error_naming_the_line(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "sub-02\t41\tmale\tB\tCN\tn/a\tleft-handed\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    table = root / "participants.tsv"
    result = load_cohort(make_spec(root), limits=TINY)
    assert _messages(result, "fields", "error") == [(
        f"dataset 'toy', {table}: line 3 has 7 fields but the header has 6 (extra values "
        f"'left-handed'): cannot tell which value belongs to which column; the row is left out")]
    assert len(result.errors) == 1  # its scan is not reported again as an image without a row
    assert sorted(result.table["participant_id"]) == ["sub-01", "sub-03", "sub-03", "sub-04"]
    ages, problems = read_participant_ages(table)
    assert ages["sub-02"] is None and ages["sub-01"] == 30.5 and "line 3 has 7" in problems[0]


def test_blank_lines_keep_line_numbers(tmp_path, rng):
    rows = dict(ROWS, **{"sub-02": "\nsub-02\tforty\tM\tB\tCN\t28\n"})
    root = make_bids(tmp_path / "bids", rng, rows=rows)
    result = load_cohort(make_spec(root), limits=TINY)
    assert _messages(result, "age", "error") == [(
        f"dataset 'toy', sub-02, {root / 'participants.tsv'} line 4: age 'forty' is not a "
        f"number")]
    assert len(result.table) == 4
