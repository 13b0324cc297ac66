"""The scores CSV: strict parsing, row-numbered errors that never echo a cell's value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthetic.scores import synthetic_scores
from workers.score.table import ScoresFileError, join_on_exam, read_scores, write_scores

HEADER = "exam,woman,score,label,vendor,age,density,arrival\n"
GOOD = [
    "2.25.1,W1,0.10,0,vendor-A,52,b,2024-03-04T08:15:00",
    "2.25.2,W1,0.90,1,vendor-A,54,B,2024-03-05T09:00:00",
    "2.25.3,W2,0.30,0,vendor-B,,3,",
]
SECRET = "ODEGARD^KARI"  # what a wrong export could hold; must never reach a message


def write(tmp_path: Path, lines: list[str], header: str = HEADER, name: str = "s.csv") -> Path:
    p = tmp_path / name
    p.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    return p


def error(path: Path, **kw: bool) -> str:
    with pytest.raises(ScoresFileError) as exc:
        read_scores(path, **kw)
    msg = str(exc.value)
    assert SECRET not in msg and SECRET not in repr(exc.value)
    return msg


def test_reads_the_documented_format(tmp_path: Path) -> None:
    t = read_scores(write(tmp_path, GOOD))
    assert len(t) == 3 and t.n_women == 2
    assert t.score().tolist() == [0.1, 0.9, 0.3]
    assert t.label is not None and t.label.tolist() == [0, 1, 0]
    assert t.density is not None and t.density.tolist() == ["b", "b", "c"]  # B and 3 mapped
    assert t.age is not None and np.isnan(t.age[2]) and t.age[0] == 52
    assert t.arrival is not None and np.isnat(t.arrival[2])
    assert str(t.arrival[0]) == "2024-03-04T08:15:00"
    assert t.woman_codes().tolist() == [0, 0, 1]
    assert "W1" not in repr(t) and "2.25.1" not in repr(t)  # counts only


def test_bom_blank_lines_and_header_case_are_tolerated(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_text("\ufeffEXAM,Woman,Score,Label\n2.25.1,W1,0.5,1\n\n2.25.2,W2,0.1,0\n\n",
                 encoding="utf-8")
    t = read_scores(p)
    assert len(t) == 2


@pytest.mark.parametrize(("line", "expected"), [
    (f"2.25.9,W9,{SECRET},0,vendor-A,60,a,", "row 5: column 'score' is not a finite number"),
    ("2.25.9,W9,nan,0,vendor-A,60,a,", "row 5: column 'score' is not a finite number"),
    ("2.25.9,W9,inf,0,vendor-A,60,a,", "row 5: column 'score' is not a finite number"),
    (f"2.25.9,W9,0.5,{SECRET},vendor-A,60,a,", "row 5: column 'label' must be 0 or 1"),
    ("2.25.9,W9,0.5,2,vendor-A,60,a,", "row 5: column 'label' must be 0 or 1"),
    (f"2.25.9,W9,0.5,1,vendor-A,{SECRET},a,", "row 5: column 'age' must be whole years"),
    ("2.25.9,W9,0.5,1,vendor-A,61.5,a,", "row 5: column 'age' must be whole years"),
    (f"2.25.9,W9,0.5,1,vendor-A,60,{SECRET},", "row 5: column 'density' must be a, b, c, d"),
    (f"2.25.9,W9,0.5,1,vendor-A,60,a,{SECRET}", "row 5: column 'arrival' is not an ISO 8601"),
    ("2.25.9,W9,0.5,1,vendor-A,60,a,2024-03-04T08:15:00+01:00", "has a UTC offset"),
    (",W9,0.5,1,vendor-A,60,a,", "row 5: column 'exam' is empty"),
    ("2.25.9,,0.5,1,vendor-A,60,a,", "row 5: column 'woman' is empty"),
    (f"2.25.9,W9,0.5,1,{SECRET}", "row 5: 5 cells where the header has 8"),
    ("2.25.1,W1,0.5,1,vendor-A,60,a,", "row 5: repeats the exam (and laterality/view) of row 2"),
])
def test_bad_cells_are_named_by_row_and_column_never_by_value(
    tmp_path: Path, line: str, expected: str
) -> None:
    assert expected in error(write(tmp_path, [*GOOD, line]))


def test_an_exam_under_two_women_is_refused(tmp_path: Path) -> None:
    header = "exam,woman,score,label,laterality\n"
    lines = ["2.25.1,W1,0.1,0,L", "2.25.1,W2,0.2,0,R"]
    assert "row 3: the same exam belongs to two different women" in error(
        write(tmp_path, lines, header))
    # per-breast rows of one exam are fine: the key is exam + laterality (+ view)
    ok = read_scores(write(tmp_path, ["2.25.1,W1,0.1,0,L", "2.25.1,W1,0.2,0,r"], header))
    assert ok.laterality is not None and ok.laterality.tolist() == ["L", "R"]


def test_errors_are_listed_up_to_ten_then_counted(tmp_path: Path) -> None:
    lines = [f"2.25.{i},W{i},x,0,,,," for i in range(25)]
    msg = error(write(tmp_path, lines))
    assert msg.count("is not a finite number") == 10 and "(and 15 more)" in msg
    assert msg.startswith("s.csv: row 2:")


@pytest.mark.parametrize(("header", "expected"), [
    ("exam,woman,score,label,patient_name\n", "unknown column 'patient_name'"),
    ("exam,woman,label\n", "no score column"),
    ("exam,score,label\n", "required column 'woman' is missing"),
    ("exam,woman,score\n", "required column 'label' is missing"),
    ("exam,woman,score,score,label\n", "column 'score' appears twice"),
])
def test_bad_headers(tmp_path: Path, header: str, expected: str) -> None:
    assert expected in error(write(tmp_path, ["2.25.1,W1,0.5,1"], header))


def test_label_is_optional_for_monitoring(tmp_path: Path) -> None:
    p = write(tmp_path, ["2.25.1,W1,0.5,2024-01-01T09:00:00"], "exam,woman,score,arrival\n")
    t = read_scores(p, require_label=False)
    assert t.label is None
    with pytest.raises(ScoresFileError, match="needs a 'label' column"):
        t.need_label()


def test_empty_missing_and_binary_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    assert "the file is empty" in error(tmp_path / "empty.csv")
    assert "no data rows" in error(write(tmp_path, [], name="h.csv"))
    assert "cannot be read" in error(tmp_path / "absent.csv")
    (tmp_path / "bin.csv").write_bytes(b"exam,woman,score,label\n\xff\xfe" + SECRET.encode())
    msg = error(tmp_path / "bin.csv")
    assert "is not" in msg and "CSV" in msg and "UnicodeDecodeError" in msg


def test_two_score_columns_and_a_join_of_two_files(tmp_path: Path) -> None:
    both = read_scores(write(tmp_path, ["2.25.1,W1,0.1,0.3,0", "2.25.2,W2,0.9,0.6,1"],
                             "exam,woman,score_a,score_b,label\n"))
    assert list(both.scores) == ["a", "b"]
    a = read_scores(write(tmp_path, ["2.25.1,W1,0.1,0", "2.25.2,W2,0.9,1"],
                          "exam,woman,score,label\n", "a.csv"))
    b = read_scores(write(tmp_path, ["2.25.2,W2,0.6,1", "2.25.1,W1,0.3,0"],
                          "exam,woman,score,label\n", "b.csv"))
    j = join_on_exam(a, b, ("a", "b"))
    assert j.score("b").tolist() == [0.3, 0.6]  # aligned on exam, not on row order
    c = read_scores(write(tmp_path, ["2.25.2,W2,0.6,0", "2.25.1,W1,0.3,0"],
                          "exam,woman,score,label\n", "c.csv"))
    with pytest.raises(ScoresFileError, match=r"a\.csv row 3: the label differs in c\.csv"):
        join_on_exam(a, c, ("a", "b"))
    d = read_scores(write(tmp_path, ["2.25.2,W2,0.6,1"], "exam,woman,score,label\n", "d.csv"))
    with pytest.raises(ScoresFileError, match="must hold the same exams: 1 of 2"):
        join_on_exam(a, d, ("a", "b"))


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    t = synthetic_scores(200, seed=3, second_model=True)
    write_scores(tmp_path / "rt.csv", t)
    back = read_scores(tmp_path / "rt.csv")
    assert back.exam.tolist() == t.exam.tolist()
    assert np.array_equal(back.score("score"), t.score("score"))
    assert np.array_equal(back.score("b"), t.score("b"))
    assert back.label is not None and t.label is not None
    assert np.array_equal(back.label, t.label)
    assert back.arrival is not None and t.arrival is not None
    assert np.array_equal(back.arrival, t.arrival)
    assert back.age is not None and t.age is not None and np.array_equal(back.age, t.age)
