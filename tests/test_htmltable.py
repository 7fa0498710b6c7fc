"""The one table helper of the run reports: escaping, numbers with units, meaningless indices, empty tables."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layernet.htmltable import MISSING, Html, details, link, number, show, text, to_html

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


class Cells(HTMLParser):
    """The text of each header and cell as a browser shows it (entities decoded, tags not text)."""

    def __init__(self):
        super().__init__()
        self.head, self.rows, self.tags, self.paragraphs = [], [], [], []
        self._cell = None
        self._p = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = (tag, [])
        elif tag == "p":
            self._p = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell:
            kind, parts = self._cell
            (self.head if kind == "th" else self.rows[-1]).append("".join(parts))
            self._cell = None
        elif tag == "p" and self._p is not None:
            self.paragraphs.append("".join(self._p))
            self._p = None

    def handle_data(self, data):
        if self._cell:
            self._cell[1].append(data)
        if self._p is not None:
            self._p.append(data)


def parse(html: str) -> Cells:
    p = Cells()
    p.feed(html)
    p.rows = [r for r in p.rows if r]
    return p


HOSTILE = ["POST /subscriptions/<subscription>/providers/Microsoft.Kubernetes/register",
           "a & b <b>bold</b>", "<script>alert(1)</script>", "it's \"quoted\"", "&lt;already&gt;"]


def test_every_cell_and_header_is_escaped_and_reads_as_the_original_text():
    df = pd.DataFrame({"detail <x>": HOSTILE, "n": range(len(HOSTILE))})
    html = to_html(df)
    got = parse(html)
    assert got.head == ["detail <x>", "n"]
    assert [r[0] for r in got.rows] == HOSTILE
    assert "script" not in got.tags and "b" not in got.tags and "x" not in got.tags
    assert "/subscriptions//" not in html


def test_a_styler_is_escaped_too_where_pandas_does_not():
    df = pd.DataFrame({"detail": HOSTILE[:1]})
    raw = df.style.hide(axis="index").to_html()
    assert "<subscription>" in raw                    # what the reports did: the browser swallows it as a tag
    assert parse(to_html(df.style.hide(axis="index"))).rows == [[HOSTILE[0]]]


def test_markup_is_kept_only_when_built_escaped():
    a = link("aio/resources/level2/x<y>.json", "x<y>.json")
    d = details("connect cluster <c>", '{"a": "<b>"}', extra=a)
    got = parse(to_html(pd.DataFrame([{"file": a, "step": d, "plain": str(Html("<i>ok</i>"))}])))
    assert got.rows == [["x<y>.json", 'connect cluster <c>{"a": "<b>"}x<y>.json', "<i>ok</i>"]]
    assert 'href="aio/resources/level2/x&lt;y&gt;.json"' in a


@pytest.mark.parametrize("value, unit, shown", [
    (1.057, None, "1.06"), (0.003, None, "0.003"), (57.3, None, "57.3"), (50.199999999999875, None, "50.2"),
    (1234.56, None, "1235"), (99.96, None, "100"), (3.0, None, "3"), (7, None, "7"), (0.0001234, None, "0.000123"),
    (1.057, "s", "1.06 s"), (0.003, "ms", "0.003 ms"), (12.0, "ms", "12 ms"), (2048, "bytes", "2 KB"), (1536, "bytes", "1.5 KB"),
    (True, None, "yes"), (False, None, "no"), (float("inf"), None, "∞"),
])
def test_numbers_read_as_written(value, unit, shown):
    assert number(value, unit) == shown


@pytest.mark.parametrize("value", [None, float("nan"), np.nan, pd.NaT, pd.NA, np.float64("nan"), np.datetime64("NaT")])
def test_missing_values_are_a_dash_never_nan_none_or_nat(value):
    assert text(value) == MISSING


def test_values_of_every_kind():
    assert text(pd.Timestamp("2026-12-05T04:58:13.250Z")) == "2026-12-05 04:58:13.250 UTC"
    assert text(datetime(2026, 12, 5, 5, 58, 13, tzinfo=timezone(timedelta(hours=1)))) == "2026-12-05 04:58:13 UTC"
    assert text(pd.Timedelta(seconds=1.5)) == "1.5 s" and text(timedelta(minutes=3, seconds=5)) == "3 min 5 s"
    assert text(np.int64(42)) == "42" and text(np.float64(1.057)) == "1.06" and text(np.bool_(True)) == "yes"
    assert text(["a", "b"]) == "a, b" and text([]) == MISSING and text({"b": 1, "a": None}) == '{"a": null, "b": 1}'


def test_a_table_of_durations_has_units_and_no_nan():
    df = pd.DataFrame({"level": ["level2", "level3", "level4"], "latency_ms": [1.057, 0.003, np.nan],
                       "seconds": [1.057, None, 2.0], "checks": [3, 4, 5], "bytes_in": [10, 2048, 0]})
    got = parse(to_html(df))
    assert got.head == ["level", "latency", "seconds", "checks", "bytes in"]
    assert got.rows == [["level2", "1.06 ms", "1.06 s", "3", "10 B"], ["level3", "0.003 ms", MISSING, "4", "2 KB"],
                        ["level4", MISSING, "2 s", "5", "0 B"]]
    words = " ".join(" ".join(r) for r in got.rows)
    for bad in ("nan", "None", "NaT", "1.057000", "0.003000"):
        assert bad not in words


def test_row_numbers_are_dropped_and_a_meaningful_index_becomes_a_column():
    plain = parse(to_html(pd.DataFrame({"a": ["x", "y"]}, index=[0, 1])))
    assert plain.head == ["a"] and plain.rows == [["x"], ["y"]]
    filtered = pd.DataFrame({"a": ["x", "y", "z"]}).iloc[[2, 0]]       # a filtered frame keeps labels 2, 0
    assert parse(to_html(filtered.reset_index(drop=True))).rows == [["z"], ["x"]]
    pivot = pd.DataFrame({"level": ["l2", "l2", "l3"], "check": ["dns", "tls", "dns"], "ok": [1, 1, 0]}).pivot_table(
        index="level", columns="check", values="ok", aggfunc="sum")
    got = parse(to_html(pivot))
    assert got.head == ["level", "dns", "tls"] and got.rows[0] == ["l2", "1", "1"]


def test_an_empty_table_is_one_sentence():
    for empty in (pd.DataFrame(columns=["a", "b"]), [], None, pd.DataFrame()):
        got = parse(to_html(empty))
        assert "table" not in got.tags and got.paragraphs == ["none"]
    assert parse(to_html(pd.DataFrame(columns=["a"]), empty="no anomalies")).paragraphs == ["no anomalies"]


def test_show_is_what_a_notebook_displays():
    df = pd.DataFrame({"host": ["a<b>"], "latency_ms": [1.5]})
    t = show(df, empty="nothing")
    assert t._repr_html_() == to_html(df, empty="nothing")
    assert "a<b>" in repr(t) and "1.5" in repr(t)
    assert repr(show(pd.DataFrame())) == "none"


def test_rows_coloured_by_outcome():
    html = to_html([{"ok": True}, {"ok": False}], row_class=lambda r: "ln-good" if r["ok"] else "ln-bad")
    assert html.count('class="ln-good"') == 1 and html.count('class="ln-bad"') == 1


def test_no_stage_notebook_renders_a_table_with_pandas_styler():
    """Styler does not escape: every stage's tables go through the helper (show / show_plan)."""
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not re.search(r"\.style\b", "".join(cell["source"])), nb.name


def test_a_table_with_many_columns_is_set_to_fit():
    narrow = to_html(pd.DataFrame([{f"c{i}": i for i in range(4)}]))
    wide = to_html(pd.DataFrame([{f"column_{i}": i for i in range(15)}]))
    assert 'class="ln-t"' in narrow and 'class="ln-t ln-wide"' in wide
