"""HTML tables for the run reports: every stage's tables go through `show` (or `to_html`).

- Every cell and header is HTML-escaped: text from a site file, a log line or an Azure answer (`<subscription>`,
  `a & b`) shows as text, never as markup. Only values wrapped in `Html` (built here from escaped parts, e.g.
  `link`) are kept as markup.
- Numbers read as a person writes them: sensible precision (1.06, 0.003, 57.3, 1234), with their unit when the
  column says it (`latency_ms` -> "1.2 ms" under "latency"; `seconds` -> "1.06 s"); a missing value is a dash,
  never "nan", "None" or "NaT"; booleans are yes/no; times are UTC to the second.
- A pandas index that only numbers the rows is dropped; a meaningful one (named, or labels) becomes a column.
- An empty table is one sentence ("none", or what the caller says), not a lone header row.
- Long text wraps inside its cell, so a table never runs wider than the page.

Standard library and pandas only: any layer may render its tables here.
"""
from __future__ import annotations

import html as _html
import json
import math
from datetime import date, datetime, timedelta
from typing import Any, Callable, Mapping, Optional

from layernet import clock
from layernet.table import format_table

MISSING = "—"
WIDE = 9          # a table with more columns than this gets a smaller font and headers that may break anywhere
NONE = "none"
CSS = (  # table.ln-t outranks JupyterLab's own table rules (right-aligned cells, fixed layout) in reports and in Lab
    ".ln-table table.ln-t{border-collapse:collapse;table-layout:auto;width:auto;max-width:100%;margin:.4rem 0;"
    "font-size:.85rem}"
    ".ln-table table.ln-t th,.ln-table table.ln-t td{text-align:left;vertical-align:top;padding:.25rem .5rem;"
    "border-bottom:1px solid #d1d9e0;overflow-wrap:break-word}"
    ".ln-table table.ln-t td.wrap{overflow-wrap:anywhere}"
    ".ln-table table.ln-t.ln-wide{font-size:.78rem}"
    ".ln-table table.ln-t.ln-wide th,.ln-table table.ln-t.ln-wide td{padding:.2rem .3rem}"
    ".ln-table table.ln-t.ln-wide th{overflow-wrap:anywhere}"
    ".ln-table table.ln-t th{background:#f6f8fa;font-weight:600}"
    ".ln-table table.ln-t td.num,.ln-table table.ln-t th.num{text-align:right}.ln-table table.ln-t td.num{white-space:nowrap}"
    ".ln-table table.ln-t tr.ln-bad td{background:#ffebe9}.ln-table table.ln-t tr.ln-good td{background:#dafbe1}"
    ".ln-table table.ln-t tr.ln-skip td{color:#59636e}"
    ".ln-table p{margin:.3rem 0;color:#59636e;text-align:left}"
    ".ln-table details>summary{cursor:pointer}"
    ".ln-table pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0;padding:.4rem;background:#f6f8fa;"
    "font-size:.8rem;max-height:30rem;overflow-y:auto;text-align:left}"
    ".ln-table code{overflow-wrap:anywhere}")

# column-name suffixes that carry a unit: the unit moves into the cells, the header loses the suffix
_SUFFIX_UNITS = (("_ms", "ms"), ("_s", "s"), ("_seconds", "s"), ("_bytes", "bytes"), ("_pct", "%"), ("_mb", "MB"))
_NAME_UNITS = {"ms": "ms", "seconds": "s", "duration": "s", "bytes": "bytes", "size": "bytes"}


class Html:
    """Markup that is already safe (built here from escaped parts); `to_html` keeps it as it is. Not a str, so a
    DataFrame keeps it as this object (pandas turns str subclasses into plain text)."""

    __slots__ = ("markup",)

    def __init__(self, markup: str):
        self.markup = str(markup)

    def __str__(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return f"Html({self.markup!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Html) and other.markup == self.markup

    def __hash__(self) -> int:
        return hash(self.markup)

    def __contains__(self, part: str) -> bool:
        return part in self.markup


def escape(text: Any) -> str:
    return _html.escape(str(text), quote=True)


def link(href: str, text: Optional[str] = None) -> Html:
    """An escaped link (a path inside the run folder, relative to the report)."""
    return Html(f'<a href="{escape(href)}">{escape(text if text is not None else href)}</a>')


def details(summary: str, body: str, extra: str = "") -> Html:
    """A collapsed block: `summary` (text) on one line, `body` (text) one click away in a <pre>; `extra` is Html."""
    return Html(f"<details><summary>{escape(summary)}</summary><pre>{escape(body)}</pre>{extra}</details>")


# ----------------------------------------------------------------------------------------------- cells
def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        import pandas as pd

        if value is pd.NaT or value is pd.NA:
            return True
        if hasattr(value, "dtype") and not hasattr(value, "__len__"):   # numpy scalars
            return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
    return False


def number(value: float, unit: Optional[str] = None) -> str:
    """A number as a person writes it: integers as they are, otherwise three significant digits (whole numbers
    from 100 on), no exponent, no trailing zeros; with its unit after a space."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "bytes":
        return size(value)
    if isinstance(value, float) and math.isinf(value):
        text = "∞" if value > 0 else "-∞"
    elif isinstance(value, int) or float(value) == int(value):
        text = str(int(value))
    elif abs(value) >= 99.95:
        text = f"{value:.0f}"
    elif abs(value) < 1e-6:
        text = "0"
    else:
        digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return f"{text} {unit}" if unit else text


def size(n: float) -> str:
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{number(round(n, 1))} {unit}"
        n /= 1024
    return f"{n:.0f} B"


def duration(seconds: float) -> str:
    """A span of time: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 1:
        return f"{sign}{number(s * 1000)} ms"
    if s < 120:
        return f"{sign}{number(s)} s"
    if s < 7200:
        return f"{sign}{int(s // 60)} min {int(s % 60)} s"
    return f"{sign}{int(s // 3600)} h {int(s % 3600 // 60)} min"


def moment(value: datetime) -> str:
    """A point in time in UTC (a naive one is UTC), to the second (milliseconds when it has them)."""
    value = clock.utc(value)
    ms = value.microsecond // 1000
    return value.strftime("%Y-%m-%d %H:%M:%S") + (f".{ms:03d}" if ms else "") + " UTC"


def text(value: Any, unit: Optional[str] = None) -> str:
    """One cell as plain text (not yet escaped)."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return number(value, unit)
    if isinstance(value, datetime):
        return moment(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return duration(value.total_seconds())
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ", ".join(text(v) for v in items) if items else MISSING
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    item = getattr(value, "item", None)          # numpy scalars
    if callable(item) and not isinstance(value, str):
        try:
            plain = item()
        except (TypeError, ValueError):
            plain = None
        if isinstance(plain, (bool, int, float)):
            return text(plain, unit)
    to_py = getattr(value, "to_pydatetime", None)  # pandas Timestamp
    if callable(to_py):
        return moment(to_py())
    as_td = getattr(value, "to_pytimedelta", None)  # pandas Timedelta
    if callable(as_td):
        return duration(value.total_seconds())
    return str(value)


def cell(value: Any, unit: Optional[str] = None) -> str:
    """One cell as HTML: escaped text, or the markup of an `Html` value."""
    if isinstance(value, Html):
        return value.markup
    return escape(text(value, unit))


# ----------------------------------------------------------------------------------------------- columns
def unit_of(column: str) -> tuple[str, Optional[str]]:
    """(header, unit) for a column name: `latency_ms` -> ("latency", "ms"), `seconds` -> ("seconds", "s")."""
    name = str(column)
    low = name.lower()
    if low in _NAME_UNITS:
        return name.replace("_", " "), _NAME_UNITS[low]
    if low.startswith("bytes_"):
        return name.replace("_", " "), "bytes"
    for suffix, unit in _SUFFIX_UNITS:
        if low.endswith(suffix) and len(low) > len(suffix):
            return name[: -len(suffix)].replace("_", " "), unit
    return name.replace("_", " "), None


def _frame(data: Any, columns: Optional[list[str]]):
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame()
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(list(data or []), columns=columns)
    elif columns is not None:
        data = data[columns]
    if _meaningful_index(data.index):
        data = data.reset_index()
    if isinstance(data.columns, pd.MultiIndex):
        data = data.copy()
        data.columns = [" ".join(str(p) for p in c if str(p)) for c in data.columns]
    return data


def _meaningful_index(index) -> bool:
    """A named index, or labels that are not just 0..n-1, say something about the rows."""
    import pandas as pd

    if any(n is not None for n in index.names):
        return True
    if isinstance(index, pd.RangeIndex):
        return False
    try:
        return list(index) != list(range(len(index)))
    except TypeError:
        return True


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


# ----------------------------------------------------------------------------------------------- tables
def to_html(data: Any, *, columns: Optional[list[str]] = None, units: Optional[Mapping[str, Optional[str]]] = None,
            empty: str = NONE, row_class: Optional[Callable[[Mapping], str]] = None, note: str = "",
            headers: Optional[Mapping[str, str]] = None, kind: str = "") -> str:
    """A DataFrame, Series, list of dicts or Styler as one escaped HTML table (see the module's notes).
    `units`: {column: unit} over what the names say (None: no unit). `empty`: the sentence for no rows.
    `row_class(row) -> "ln-good" | "ln-bad" | ""` colours rows. `note`: a sentence under the table (text).
    `kind`: a name for what the table is (`plan`), as the class `ln-<kind>` for readers and tests."""
    data = getattr(data, "data", data) if type(data).__name__ == "Styler" else data
    if data is None:
        return _wrap(f"<p>{escape(empty)}</p>", kind)
    df = _frame(data, columns)
    if not len(df.index):
        return _wrap(f"<p>{escape(empty)}</p>", kind)
    units = dict(units or {})
    cols = list(df.columns)
    head, unit, num = {}, {}, {}
    for c in cols:
        h, u = unit_of(c)
        if c in units:
            h, u = str(c).replace("_", " "), units[c]
        head[c] = (headers or {}).get(c, h)
        unit[c] = u
        num[c] = _is_numeric(df[c])
    parts = [f'<table class="ln-t{" ln-wide" if len(cols) > WIDE else ""}"><thead><tr>']
    parts += [f'<th{" class=num" if num[c] else ""}>{escape(head[c])}</th>' for c in cols]
    parts.append("</tr></thead><tbody>")
    for rec in df.to_dict("records"):
        cls = row_class(rec) if row_class else ""
        parts.append(f'<tr class="{escape(cls)}">' if cls else "<tr>")
        for c in cols:
            body = cell(rec[c], unit[c])
            cls = "num" if num[c] else "wrap" if _long_word(body) else ""
            parts.append(f'<td class="{cls}">{body}</td>' if cls else f"<td>{body}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    if note:
        parts.append(f"<p>{escape(note)}</p>")
    return _wrap("".join(parts), kind)


def _long_word(body: str, limit: int = 24) -> bool:
    """A cell with a word too long for a narrow column (an id, a URL, JSON, markup): it may break anywhere."""
    return body.startswith("<") or any(len(w) > limit for w in body.split())


def _wrap(body: str, kind: str = "") -> str:
    cls = f"ln-table ln-{escape(kind)}" if kind else "ln-table"
    return f'<div class="{cls}"><style>{CSS}</style>{body}</div>'


class Table:
    """What a notebook cell shows: the escaped HTML table (see `to_html`); `data` keeps the frame."""

    def __init__(self, data: Any, **options):
        self.data = getattr(data, "data", data) if type(data).__name__ == "Styler" else data
        self.options = options

    def _repr_html_(self) -> str:
        return to_html(self.data, **self.options)

    def __repr__(self) -> str:
        if self.data is None:
            return self.options.get("empty", NONE)
        df = _frame(self.data, self.options.get("columns"))
        if not len(df.index):
            return self.options.get("empty", NONE)
        return format_table(df.to_dict("records"), [str(c) for c in df.columns])


def show(data: Any, **options) -> Table:
    """The one way a report shows a table: `show(df)` in a notebook cell (options as for `to_html`)."""
    return Table(data, **options)
