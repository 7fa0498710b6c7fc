"""Envoy JSON access-log lines -> connection groups and a narrow row table, read and typed by DuckDB.

`parse_logs({level: source, ...}, allowlist)` returns a `Parsed`. A source is a file, a list of files (rotated
logs, oldest first; ``.gz`` is read as gzip), text, bytes or a list of lines. The result holds:

- ``db``: a DuckDB connection with the tables the findings run SQL on (below);
- ``connections``: every connection as a pandas DataFrame (columns `COLUMNS`, sorted by time), built on first
  use; ``table`` names the same rows as a DuckDB table (for exports);
- ``malformed``: every line that is not a valid access-log record (level, line number, reason, sample text),
  so nothing is ever dropped silently; ``other`` counts the proxy's own log lines (``kubectl logs`` output)
  and ``incomplete`` the half-written last line of a live log, held back;
- ``checks``: records that disagree with where they came from (``level`` field vs the file's level),
  times in the future and times that go backwards;
- ``lines`` / ``blank``: how many lines were read and how many were empty.

Envoy writes ``null`` for a value it does not have (no SNI, no filter chain, no upstream); the table holds
``""`` there so grouping never loses rows. ``response_flags`` keeps Envoy's ``"-"`` for "no flag". The column
types are in `db`.

How. A million connections are mostly the same few thousand (level, source address, name, port, verdict)
combinations. DuckDB reads each file once with ``read_json`` (newline-delimited, explicit text columns,
``ignore_errors``: a line it cannot read becomes an all-NULL row and never stops the audit) into ``_rows``, one
narrow row per line in file order (rowid = place in the files): start time, duration, bytes, two halves of a
group key (`a`: file, level, source address; `b`: name, port, chain, flags, TLS error) and the hashes of Envoy's
own "ip:port" texts (the source, and the upstream local address a child proxy logs). Then:

- ``_groups``: the rows summed per (a, b): connections, bytes, first/last time. The text behind every `a` and
  every `b` is read from one line of each (taken from the file by line number, typed by the same SQL), so a few
  hundred lines name a million rows; with too many distinct halves, or a compressed file, one more pass names
  them. The group key is ``hash(a, b)``; two groups with one key stop the audit.
- ``_rows`` keeps only time, key and the two address hashes: all the per-connection joins (paths, forwarded
  names, probe windows, gaps) need.

A line's number is its place in its file plus the blank lines DuckDB skipped before it: a byte count beside the
reading finds them, and indexes the newlines per block so a line is read back without counting from the start.
The few lines that are not records go back to Python, which reads their raw text to say why.

The jobs live in their own modules: `scan` (the files and their bytes: line counts, blank lines, raw text by
line number), `db` (the DuckDB connection, its memory, the columns and their types), `passes` (the SQL passes)
and `health` (why a line is not a record; records that disagree with their file). This module runs them.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

from layernet import clock
from layernet.audit import health, passes, scan
from layernet.audit.db import COLUMNS, FINDINGS_MEMORY_MIN, MEMORY_MAX, connect, memory_limit_for, release_cache, to_frame
from layernet.audit.scan import Source

if TYPE_CHECKING:     # imported lazily: the CLI must start fast
    import pandas as pd


@dataclass
class Parsed:
    db: object                              # duckdb.DuckDBPyConnection with _rows, _groups, _g, _conn
    diagnosis: object                       # (malformed, incomplete, other), or a future of it
    lines: int = 0
    blank: int = 0
    levels: list[str] = field(default_factory=list)
    checks: Optional["pd.DataFrame"] = None
    files: dict = field(default_factory=dict)
    reads: list = field(default_factory=list)      # (fid, file DuckDB read, level): read again for full rows
    since: Optional[datetime] = None
    _df: Optional["pd.DataFrame"] = None
    _table: str = ""

    def _diag(self) -> tuple:
        if not isinstance(self.diagnosis, tuple):      # the raw text of bad lines is read beside the findings
            self.diagnosis = self.diagnosis.result()
        return self.diagnosis

    @property
    def malformed(self) -> "pd.DataFrame":
        return self._diag()[0]

    @property
    def incomplete(self) -> int:
        return self._diag()[1]

    @property
    def other(self) -> int:
        return self._diag()[2]

    @property
    def table(self) -> str:
        """A DuckDB table with every column of every connection (`COLUMNS` plus ``id``), built on first use: the
        files are read again in the same order, so each row meets its narrow row by rowid."""
        if not self._table:
            passes.full_table(self.db, self.reads)
            self._table = "_table"
        return self._table

    @property
    def connections(self) -> "pd.DataFrame":
        """The connection table as a DataFrame, sorted by time (built on first use)."""
        if self._df is None:
            self._df = to_frame(self.db, f"SELECT {', '.join(COLUMNS)} FROM {self.table} ORDER BY time, id")
        return self._df

    @property
    def records(self) -> int:
        n = self.db.execute("SELECT sum(n) FROM _g").fetchall()[0][0]
        return int(n or 0)

    def levels_with_records(self) -> set[str]:
        """Levels with at least one record in the whole log (also before `since`)."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT level FROM _groups WHERE NOT bad").fetchall()}

    def malformed_summary(self) -> "pd.DataFrame":
        """Per level and reason: how many lines, the first line number and a sample."""
        import pandas as pd

        m = self.malformed
        if m.empty:
            return pd.DataFrame(columns=["level", "reason", "lines", "first_line", "sample"])
        g = m.groupby(["level", "reason"], sort=True)
        out = g.agg(lines=("line", "size"), first_line=("line", "min"), sample=("text", "first")).reset_index()
        return out[["level", "reason", "lines", "first_line", "sample"]]

    def report(self) -> dict:
        out = {"lines": self.lines, "records": self.records, "malformed": int(len(self.malformed)),
               "blank": self.blank}
        if self.incomplete:
            out["incomplete"] = self.incomplete
        if self.other:
            out["other"] = self.other
        return out


# ----------------------------------------------------------------------------------------------- entry point
def parse_logs(sources: Mapping[str, Source], allowlist=None, sources_are_levels: bool = False,
               now: Optional[datetime] = None, since: Optional[datetime] = None, db=None) -> Parsed:
    """Parse each level's log. `allowlist` (an AllowList) names the entry every connection matched; without it
    the ``entry`` column is empty. `sources_are_levels`: the keys are level names, so a record whose ``level``
    field names another level is flagged. `now`: the collection time (a later record is in the future).
    `since`: connections that started earlier are read (their lines are counted and checked) but left out of
    the connections and findings."""
    import shutil
    import weakref

    import pandas  # noqa: F401  (loaded here, before the line diagnosis thread uses it)

    now = now or datetime.now(timezone.utc)
    since_ms = None
    if since is not None:
        since_ms = int(clock.utc(since).timestamp() * 1000)
    # text sources, stripped copies and DuckDB's spill files: kept while the Parsed lives (rows are read again)
    tmpdir = tempfile.mkdtemp(prefix="layernet-audit-")
    tmp = Path(tmpdir)
    db = db or connect(tmp)
    pending, damaged = [], []
    k = 0
    for level, src in sources.items():
        for f in scan.files_of(level, src, tmp, k):
            k += 1
            why = scan.gzip_damage(f)
            if why:                      # one malformed-input finding; the rest of the logs are read as usual
                damaged.append((health.MALFORMED_INPUT, level, str(f), 1, 1, f"damaged gzip file, not read: {why}"))
                continue
            read = f
            if scan.prefixed(f):
                read = tmp / f"stripped-{k}.log"
                scan.strip_prefixes(f, read)
            pending.append((level, f, read))
    size = sum(read.stat().st_size * (8 if read.name.endswith(".gz") else 1) for _, _, read in pending)
    db.execute(f"SET memory_limit = '{memory_limit_for(size)}'")
    # the byte scans (line counts) run beside DuckDB's reading, which releases the GIL
    pool = ThreadPoolExecutor(max_workers=1)
    futures = [pool.submit(scan.scan_file, read) for _, _, read in pending]
    pool.shutdown(wait=False)
    db.execute(passes.ROWS)
    reads, files, r0 = [], [], 0
    for fid, (level, f, read) in enumerate(pending):
        if read.stat().st_size:
            reads.append((fid, str(read), level))
            passes.pass_rows(db, str(read), fid, since_ms)
        r1 = int(db.execute("SELECT count(*) FROM _rows").fetchall()[0][0])
        files.append([fid, level, str(f), r0, r1])
        r0 = r1
    db.execute("""CREATE OR REPLACE TABLE _gstat AS SELECT a, b, count(*) AS n, sum(bi) AS bytes_in,
                  sum(bo) AS bytes_out, min(t) AS t0, max(t) AS t1, min(rowid) AS rep FROM _rows GROUP BY a, b""")
    for col in ("bi", "bo"):           # summed per group: their memory goes to the findings
        db.execute(f"ALTER TABLE _rows DROP COLUMN {col}")
    scans = []
    for fid, (level, f, read) in enumerate(pending):
        s = futures[fid].result()
        s.path = read
        scans.append((level, s, f))
        if files[fid][4] - files[fid][3] < s.lines:         # DuckDB skips blank lines: find where they are
            s.blank = scan.find_blank(read)
        files[fid] += [s.lines, s.ends_with_newline]
    db.execute("CREATE OR REPLACE TABLE _files (fid INTEGER, level VARCHAR, path VARCHAR, r0 BIGINT, r1 BIGINT, "
               "lines BIGINT, complete BOOLEAN)")
    if files:
        db.executemany("INSERT INTO _files VALUES (?, ?, ?, ?, ?, ?, ?)", files)
    # line numbers: the row's place in its file, plus the blank lines DuckDB skipped before it
    blanks = [[fid, b - (j + 1), j + 1] for fid, (_, s, _) in enumerate(scans) for j, b in enumerate(s.blank or [])]
    db.execute("CREATE OR REPLACE TABLE _blank (fid INTEGER, before BIGINT, n BIGINT)")
    if blanks:
        db.executemany("INSERT INTO _blank VALUES (?, ?, ?)", blanks)
    lines_of = scan.LineNumbers(files, scans)
    passes.name_groups(db, reads, scans, lines_of, tmp, since_ms)
    passes.build_groups(db, {fid: level for fid, (level, _, _) in enumerate(pending)}, allowlist)
    bad = db.execute("""SELECT r.id, gr.fid FROM _r r JOIN _groups gr ON gr.g = r.g WHERE gr.bad
                        ORDER BY r.id""").fetchall()
    diag = ThreadPoolExecutor(max_workers=1)
    diagnosis = diag.submit(health.diagnose, [(fid, lines_of(fid, rid)) for rid, fid in bad], scans)
    diag.shutdown(wait=False)
    checks = health.checks(db, sources_are_levels, now, scans, files, lines_of, damaged)
    # the end-time check is done and the groups are named: time, key and addresses are all the findings read
    for name in ("_gstat", "_reps", "_adict", "_bdict"):
        db.execute(f"DROP TABLE IF EXISTS {name}")
    db.execute("CREATE TABLE _rows_g AS SELECT t, hash(a, b) AS g, sk, uk FROM _rows")      # same order
    db.execute("DROP TABLE _rows")
    db.execute("ALTER TABLE _rows_g RENAME TO _rows")
    passes.views(db)
    # the findings hold the narrow rows and the links: a limit in proportion to the rows keeps DuckDB from caching
    # more than that
    rows, groups = db.execute("SELECT (SELECT count(*) FROM _rows), (SELECT count(*) FROM _groups)").fetchall()[0]
    if not os.environ.get("LAYERNET_AUDIT_MEMORY"):
        need = int(rows) * 96 + int(groups) * 512          # a group's texts and its rows in the findings' tables
        db.execute(f"SET memory_limit = '{min(MEMORY_MAX, max(FINDINGS_MEMORY_MIN, need)) >> 20}MB'")
    release_cache(db)
    total = sum(s.lines for _, s, _ in scans)
    blank = sum(len(s.blank or []) for _, s, _ in scans)
    parsed = Parsed(db, diagnosis, total, blank, list(sources), checks,
                    {lv: [str(f) for l2, _, f in scans if l2 == lv] for lv in sources}, reads=reads, since=since)
    weakref.finalize(parsed, shutil.rmtree, tmpdir, True)
    return parsed

