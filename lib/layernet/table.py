"""Plain-text tables for the command line: numbers formatted for people, text left-aligned, "(none)" for an
empty table, a line saying how many rows are shown when a table is cut (and where the full table is), and on a
terminal a table that fits its width."""
from __future__ import annotations

import csv
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

NONE = "(none)"
MIN_COLUMN = 6


def cell(value: Any) -> str:
    """A value as a person reads it: 57.3, not 57.300000 or 50.199999999999875; nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 1:
            text = f"{value:.1f}"
        else:
            text = f"{value:.3g}"
        return text
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(cell(v) for v in value)
    try:  # numpy and pandas scalars (float64, Timestamp) without importing them
        item = value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else None
    except (ValueError, TypeError):
        item = None
    if isinstance(item, (int, float, bool)) and not isinstance(value, (int, float)):
        return cell(item)
    return str(value).replace("\n", " ")


def _fit(widths: dict[str, int], columns: list[str], width: Optional[int]) -> dict[str, int]:
    """Shrink the widest columns until the table fits `width` characters (None: no limit)."""
    if not width:
        return widths
    w = dict(widths)
    total = sum(w.values()) + 2 * (len(columns) - 1)
    while total > width:
        widest = max(columns, key=lambda c: w[c])
        if w[widest] <= MIN_COLUMN:
            break
        w[widest] -= 1
        total -= 1
    return w


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "…"


def format_table(rows: list[dict], columns: list[str], width: Optional[int] = None) -> str:
    cells = [{c: cell(r.get(c)) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in columns}
    widths = _fit(widths, columns, width)
    out = ["  ".join(_cut(c, widths[c]).ljust(widths[c]) for c in columns).rstrip(),
           "  ".join("-" * widths[c] for c in columns)]
    if not cells:
        out.append(NONE)
    for r in cells:
        out.append("  ".join(_cut(r[c], widths[c]).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(out)


def terminal_width() -> Optional[int]:
    """The terminal's width when output goes to one; None (no limit) for a pipe or a file."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def write_csv(rows: Iterable[dict], columns: list[str], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([cell(r.get(c)) for c in columns])
    return path


def print_table(rows: list[dict], columns: list[str], limit: Optional[int] = None,
                csv_path: Optional[str | Path] = None, hint: str = "") -> None:
    """Print a table; with `limit`, only that many rows and a line saying so. With `csv_path` the full table is
    written there as CSV (and the line says where); `hint` says how to get it otherwise."""
    rows = list(rows)
    full = write_csv(rows, columns, csv_path) if csv_path is not None else None
    shown = rows if limit is None or len(rows) <= limit else rows[:limit]
    print(format_table(shown, columns, width=terminal_width()))
    if len(shown) < len(rows):
        where = f", full table in {full}" if full else f" ({hint})" if hint else ""
        print(f"showing {len(shown)} of {len(rows)} rows{where}")
