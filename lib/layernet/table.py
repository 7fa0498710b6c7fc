"""Plain-text tables for the command line."""
from __future__ import annotations


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    out = [line, "  ".join("-" * widths[c] for c in columns)]
    for r in rows:
        out.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(out)


def print_table(rows: list[dict], columns: list[str]) -> None:
    print(format_table(rows, columns))
