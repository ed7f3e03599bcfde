"""Bad inputs of the cohort reader and of preprocessing (issue 13): each test builds the bad
input itself, checks that the message names the file and the problem, and that the good inputs
of the same run still went through."""

from __future__ import annotations

import pytest

from brainage.cohort import CohortError, parse_age, read_participant_ages

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
