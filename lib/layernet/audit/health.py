"""The audit's log-health checks: lines that are not records and why, and records that disagree with their file.

`diagnose` reads the raw text of the lines DuckDB could not type and says why each is not an access-log record
(or that it is the proxy's own log line, or a live log's half-written last line); `checks` finds records that
name another level, times in the future and end times that go backwards, and files that could not be read.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Optional

from layernet.audit.scan import raw_lines

if TYPE_CHECKING:
    import pandas as pd

MALFORMED_COLUMNS = ["level", "line", "reason", "text"]
CHECK_COLUMNS = ["check", "level", "file", "lines", "first_line", "sample"]
SAMPLE_CHARS = 300
FUTURE_SLACK = timedelta(minutes=5)
BACKWARDS_SLACK_MS = 1000         # Envoy writes a line when the connection ends: end times may jitter this much
BATCH_ROWS = 1 << 20             # rows per batch of the end-time check
MALFORMED_INPUT = "malformed-input"       # the check of a log file that cannot be read (a damaged .gz)

# the proxy's own log lines (Envoy: "[2025-03-01 08:00:00.000][1][info][main] ..."), also behind those prefixes
_PROXY_LINE = re.compile(r"^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?"
                         r"\[\d{4}-\d\d-\d\d[ T][0-9:.]+\]\[\d+\]\[\w+\]")


def _whole(v) -> Optional[bool]:
    """Whether a listener_port value is a whole number (None: a number too large for a port)."""
    if isinstance(v, bool):
        return False
    try:
        x = float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
        return False
    if x != x or not x.is_integer():
        return False
    return None if abs(x) >= 2**31 else True


def _reason(raw: bytes) -> tuple[str, bool]:
    """(why a line is not an access-log record, whether it is the proxy's own log line), for a line the reader
    could not type."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8 (the line is not text)", False
    if _PROXY_LINE.match(text):
        return "the proxy's own log line", True
    try:
        rec = json.loads(text)
    except ValueError:
        return ("invalid or truncated JSON" if text.lstrip().startswith("{")
                else "not JSON (another format or garbage)"), False
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object", False
    missing = [k for k in ("time", "listener_port") if rec.get(k) is None]
    if missing:
        return f"not an access-log record (no {' or '.join(missing)})", False
    whole = _whole(rec["listener_port"])
    if whole is None:
        return "listener_port is too large for a port", False
    if not whole:
        return "listener_port is not a whole number", False
    return "time is not an ISO 8601 UTC time", False


def _sample(raw: bytes) -> str:
    return raw[:SAMPLE_CHARS].decode("utf-8", "replace")


def diagnose(bad: list, scans: list) -> tuple:
    """(malformed lines with reason and sample, incomplete last lines, the proxy's own log lines) from the rows
    DuckDB could not type: their raw text is read from the files by line number."""
    import pandas as pd

    malformed, incomplete, other = [], 0, 0
    by_file: dict[int, list] = {}
    for fid, line in bad:
        by_file.setdefault(fid, []).append(line)
    for fid, lines in by_file.items():
        level, scan, _ = scans[fid]
        raw = raw_lines(scan, lines)
        for line in lines:
            text = raw.get(line, b"")
            why, own = _reason(text)
            if own:
                other += 1
                continue
            last = not scan.ends_with_newline and line == scan.lines
            if last and why in ("invalid or truncated JSON", "not JSON (another format or garbage)"):
                incomplete += 1          # a live log's half-written last line: held back, read next time
                continue
            malformed.append((level, line, why, _sample(text)))
    mal = pd.DataFrame(malformed, columns=MALFORMED_COLUMNS).sort_values(["level", "line"], ignore_index=True)
    mal["line"] = mal["line"].astype("int64")
    return mal, incomplete, other


def _backwards(db, r0: int, r1: int, bad_g: list[str]) -> Optional[tuple[int, int, int]]:
    """(lines whose end time is more than BACKWARDS_SLACK_MS before an earlier line's, the first one's row id, by
    how much) among the records with row ids in [r0, r1), or None. The rows stream in id order (a filtered scan
    keeps the table's order), a batch at a time."""
    import numpy as np

    keep = f" AND hash(a, b) NOT IN ({', '.join(bad_g)})" if bad_g else ""
    res = db.sql(f"SELECT rowid AS id, t + dur AS e FROM _rows WHERE rowid >= {int(r0)} AND rowid < {int(r1)} "
                 f"AND t IS NOT NULL" + keep)
    carry, last_id = None, -1
    n, first, gap = 0, None, 0
    for batch in res.to_arrow_reader(BATCH_ROWS):
        ids = batch.column(0).to_numpy()
        e = batch.column(1).to_numpy()
        if not len(e):
            continue
        if ids[0] <= last_id or (len(ids) > 1 and not (ids[1:] > ids[:-1]).all()):
            raise RuntimeError("audit: rows did not stream in line order")
        last_id = int(ids[-1])
        seq = e if carry is None else np.concatenate(([carry], e))      # the running maximum goes on
        run = np.maximum.accumulate(seq)
        prev, cur = run[:-1], seq[1:]
        at = ids[1:] if carry is None else ids
        back = np.flatnonzero(prev - cur > BACKWARDS_SLACK_MS)
        if len(back):
            if first is None:
                first, gap = int(at[back[0]]), int(prev[back[0]] - cur[back[0]])
            n += int(len(back))
        carry = int(run[-1])
    return (n, first, gap) if n else None


def checks(db, sources_are_levels: bool, now: datetime, scans, files, lines_of, damaged=()) -> "pd.DataFrame":
    """Records that disagree with their file: another level's name, a time in the future, an end time that goes
    backwards (Envoy writes a line when the connection ends, so end = start + duration only grows); and files that
    could not be read at all (`damaged`: a broken gzip file)."""
    import pandas as pd

    out = list(damaged)
    future_ms = int((now + FUTURE_SLACK).timestamp() * 1000)
    for fid, n, rid in db.execute("""SELECT gr.fid, count(*), min(r.id) FROM _r r JOIN _groups gr ON gr.g = r.g
                                     WHERE r.t > ? AND NOT gr.bad GROUP BY gr.fid""", [future_ms]).fetchall():
        t, = db.execute("SELECT t FROM _rows WHERE rowid = ?", [rid]).fetchall()[0]
        when = datetime.fromtimestamp(t / 1000, timezone.utc).isoformat(timespec="milliseconds")
        out.append(("future-time", scans[fid][0], str(scans[fid][2]), int(n), lines_of(fid, rid), f"time {when}"))
    if sources_are_levels:
        for fid, n, level, want in db.execute("""SELECT gr.fid, sum(gr.n), min(gr.level), f.level FROM _groups gr
                JOIN _files f ON f.fid = gr.fid WHERE NOT gr.bad AND gr.level <> f.level GROUP BY gr.fid, f.level
                """).fetchall():
            rid, lv = db.execute("""SELECT r.id, gr.level FROM _r r JOIN _groups gr ON gr.g = r.g
                WHERE gr.fid = ? AND NOT gr.bad AND gr.level <> ? ORDER BY r.id LIMIT 1""", [fid, want]).fetchall()[0]
            out.append(("level-mismatch", scans[fid][0], str(scans[fid][2]), int(n), lines_of(fid, rid),
                        f"level field {lv} in the log of {want}"))
    # end times going backwards, per file in line order: a running maximum over batches of the rows (numpy)
    bad_g = [str(r[0]) for r in db.execute("SELECT g FROM _groups WHERE bad").fetchall()]
    for fid, _, _, r0, r1, _, _ in files:
        found = _backwards(db, r0, r1, bad_g)
        if found:
            n, first, gap = found
            out.append(("time-backwards", scans[fid][0], str(scans[fid][2]), n, lines_of(fid, first),
                        f"ends {gap} ms before an earlier line"))
    out.sort(key=lambda r: (r[0], r[1], r[2]))
    return pd.DataFrame(out, columns=CHECK_COLUMNS)
