"""Command-line tables: numbers for people, "(none)" for an empty table, a stated cut, the terminal's width."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from layernet.table import cell, format_table, print_table


@pytest.mark.parametrize("value, text", [
    (57.300000, "57.3"), (50.199999999999875, "50.2"), (0.1234567, "0.123"), (3.0, "3"), (8084, "8084"),
    (None, ""), (float("nan"), ""), ([443, 8084], "443, 8084"), ("a\nb", "a b"), (True, "True"),
])
def test_cell_formats_for_people(value, text):
    assert cell(value) == text


def test_numpy_scalars_are_formatted_like_floats():
    np = pytest.importorskip("numpy")
    assert cell(np.float64(50.199999999999875)) == "50.2" and cell(np.int64(7)) == "7"


def test_empty_table_says_none():
    assert format_table([], ["host", "ports"]).splitlines() == ["host  ports", "----  -----", "(none)"]


def test_text_is_left_aligned():
    lines = format_table([{"level": "level4", "n": 1}, {"level": "l2", "n": 12}], ["level", "n"]).splitlines()
    assert lines[2] == "level4  1" and lines[3] == "l2      12"


def test_table_fits_the_width():
    rows = [{"host": "h" * 80, "purpose": "p" * 80, "port": 443}]
    text = format_table(rows, ["host", "purpose", "port"], width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "…" in text and "443" in text


def test_a_cut_table_says_how_many_rows_and_where_the_rest_is(tmp_path: Path, capsys):
    rows = [{"n": i, "ms": i / 3} for i in range(153)]
    print_table(rows, ["n", "ms"], limit=40, csv_path=tmp_path / "t.csv")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 40 + 1
    assert out[-1] == f"showing 40 of 153 rows, full table in {tmp_path / 't.csv'}"
    with (tmp_path / "t.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["n", "ms"] and len(table) == 154 and table[-1] == ["152", "50.7"]


def test_a_table_within_the_limit_has_no_note(capsys):
    print_table([{"n": 1}], ["n"], limit=40)
    assert "showing" not in capsys.readouterr().out


def test_a_cut_table_without_a_file_says_how_to_get_the_rest(capsys):
    print_table([{"n": i} for i in range(5)], ["n"], limit=2, hint="--out DIR writes the full table as CSV")
    assert capsys.readouterr().out.splitlines()[-1] == "showing 2 of 5 rows (--out DIR writes the full table as CSV)"
