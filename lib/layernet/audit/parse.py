"""Envoy JSON access-log lines -> one typed row per connection, read and typed by DuckDB.

`parse_logs({level: source, ...}, allowlist)` returns a `Parsed`. A source is a file, a list of files (rotated
logs, oldest first; ``.gz`` is read as gzip), text, bytes or a list of lines. The result holds:

- ``db`` / ``table``: a DuckDB connection holding the typed connection table (findings run SQL on it);
- ``connections``: the same table as a pandas DataFrame (columns `COLUMNS`, sorted by time), built on first use;
- ``malformed``: every line that is not a valid access-log record (level, line number, reason, sample text),
  so nothing is ever dropped silently; ``other`` counts the proxy's own log lines (``kubectl logs`` output)
  and ``incomplete`` the half-written last line of a live log, held back;
- ``checks``: records that disagree with where they came from (``level`` field vs the file's level),
  times in the future and times that go backwards;
- ``lines`` / ``blank``: how many lines were read and how many were empty.

Column types of the DataFrame: ``time`` datetime64[ms, UTC]; ``level``, ``verdict``, ``response_flags`` and the
other low-cardinality text columns are categoricals; ports int32; bytes, duration and connection id int64.
Envoy writes ``null`` for a value it does not have (no SNI, no filter chain, no upstream); the table holds
``""`` there so grouping never loses rows. ``response_flags`` keeps Envoy's ``"-"`` for "no flag".

How: DuckDB reads every file with ``read_json`` (newline-delimited, explicit text columns, ``ignore_errors``),
so a line it cannot read becomes an all-NULL row and never stops the audit. DuckDB skips blank lines; a light
byte scan of each file finds them (and the last line's newline), so every row keeps its line number. Only the
few rows that are not records go back to Python, which reads their raw text to say why.
"""
from __future__ import annotations

import gzip
import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Union

from layernet.render.envoy import CHAIN_REFUSED_SOURCE

if TYPE_CHECKING:     # imported lazily: the CLI must start fast
    import pandas as pd

VERDICTS = ["allowed", "refused-name", "refused-source", "upstream-failure"]
# Envoy response flags that mean the proxy accepted the connection but could not reach the upstream
UPSTREAM_FAILURE_FLAGS = frozenset({"UH", "UF", "UO", "URX", "UT", "NC", "DF", "UMSDR", "DO"})
NO_CHAIN_FLAG = "NR"

# keys of the access-log record (render/envoy.py ACCESS_LOG_FORMAT); read as text, typed in SQL
RAW_KEYS = ["time", "level", "listener_port", "source", "sni", "filter_chain", "upstream_host", "upstream_cluster",
            "upstream_local", "bytes_in", "bytes_out", "duration_ms", "response_flags", "details",
            "transport_failure", "connection_id"]
COLUMNS = ["time", "level", "listener_port", "source_ip", "source_port", "sni", "filter_chain", "upstream_host",
           "upstream_cluster", "upstream_local", "bytes_in", "bytes_out", "duration_ms", "response_flags",
           "details", "transport_failure", "connection_id", "verdict", "entry", "line"]
CATEGORY_COLUMNS = ["level", "source_ip", "sni", "filter_chain", "upstream_host", "upstream_cluster",
                    "response_flags", "details", "transport_failure", "entry"]
MALFORMED_COLUMNS = ["level", "line", "reason", "text"]
CHECK_COLUMNS = ["check", "level", "file", "lines", "first_line", "sample"]
SAMPLE_CHARS = 300
SCAN_BYTES = 16 << 20
MAX_LINE_BYTES = 1 << 30          # DuckDB's maximum_object_size: a 20 MB line is still read
FUTURE_SLACK = timedelta(minutes=5)
BACKWARDS_SLACK_MS = 1000         # Envoy writes a line when the connection ends: end times may jitter this much
TABLE = "connections"

# kubectl logs output: optional "[pod/NAME/CONTAINER] " and "--timestamps" prefixes before the JSON record
_PREFIX = re.compile(rb"^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?(?=\{)")
_HAS_PREFIX = re.compile(rb"(?m)^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?(?<= )\{")
# the proxy's own log lines (Envoy: "[2025-03-01 08:00:00.000][1][info][main] ..."), also behind those prefixes
_PROXY_LINE = re.compile(r"^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?"
                         r"\[\d{4}-\d\d-\d\d[ T][0-9:.]+\]\[\d+\]\[\w+\]")

Source = Union[Path, str, bytes, Iterable[str], list]


@dataclass
class Parsed:
    db: object                              # duckdb.DuckDBPyConnection with the table `table`
    malformed: "pd.DataFrame"
    lines: int = 0
    blank: int = 0
    levels: list[str] = field(default_factory=list)
    incomplete: int = 0
    other: int = 0
    checks: Optional["pd.DataFrame"] = None
    files: dict = field(default_factory=dict)
    table: str = TABLE
    _df: Optional["pd.DataFrame"] = None

    @property
    def connections(self) -> "pd.DataFrame":
        if self._df is None:
            self._df = to_frame(self.db, f"SELECT * FROM {self.table}")
        return self._df

    @connections.setter
    def connections(self, df: "pd.DataFrame") -> None:
        """Replace the table (e.g. a time filter applied in pandas): DuckDB gets the new rows too."""
        self._df = df
        self.db.register("_replaced", df)
        self.db.execute(f"CREATE OR REPLACE TABLE {self.table} AS SELECT * FROM _replaced")
        self.db.unregister("_replaced")

    def since(self, when) -> None:
        """Keep only connections that started at or after `when`."""
        if when is None:
            return
        self.db.execute(f"DELETE FROM {self.table} WHERE time < ?", [when])
        self._df = None

    @property
    def records(self) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

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


# ----------------------------------------------------------------------------------------------- helpers
def verdict_of(filter_chain: str, flags: str) -> str:
    """The verdict of one connection from its filter chain and response flags."""
    names = set(flags.split(",")) if flags and flags != "-" else set()
    if filter_chain == CHAIN_REFUSED_SOURCE:
        return "refused-source"
    if not filter_chain or NO_CHAIN_FLAG in names:
        return "refused-name"
    if names & UPSTREAM_FAILURE_FLAGS:
        return "upstream-failure"
    return "allowed"


def ms_ints(times: "pd.Series"):
    """UTC milliseconds since the epoch as int64 (no per-element conversion)."""
    import numpy as np

    naive = times.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(times.dt, "tz", None) is not None else times
    return naive.to_numpy().astype("datetime64[ms]").view(np.int64)


def to_frame(db, sql: str, params=None) -> "pd.DataFrame":
    """A query on the connection table as a DataFrame with the table's pandas types."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    t = (db.sql(sql, params=params) if params else db.sql(sql)).to_arrow_table()
    cols = {}
    for name in t.column_names:
        col = t[name]
        if name in CATEGORY_COLUMNS:
            col = pc.dictionary_encode(col)
        elif name == "time":
            col = pc.cast(col, pa.timestamp("ms", tz="UTC"), safe=False)
        cols[name] = col
    df = pa.table(cols).to_pandas() if cols else pd.DataFrame()
    if "verdict" in df:
        df["verdict"] = pd.Categorical(df["verdict"].astype(object), categories=VERDICTS)
    for c in CATEGORY_COLUMNS:
        if c in df and not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype("category")
    return df


def empty_connections() -> "pd.DataFrame":
    import pandas as pd

    df = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    df["time"] = pd.Series(dtype="datetime64[ms, UTC]")
    for c in ("listener_port", "source_port"):
        df[c] = pd.Series(dtype="int32")
    for c in ("bytes_in", "bytes_out", "duration_ms", "connection_id", "line"):
        df[c] = pd.Series(dtype="int64")
    for c in CATEGORY_COLUMNS:
        df[c] = pd.Categorical([])
    df["upstream_local"] = pd.Series(dtype=object)
    df["verdict"] = pd.Categorical([], categories=VERDICTS)
    return df[COLUMNS]


# ----------------------------------------------------------------------------------------------- scanning
def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


_WS = b" \t\r\x0b\x0c"


def _blank_lines(chunk: bytes, first: int) -> list[int]:
    """Line numbers (1-based, first line of the chunk = first + 1) of whitespace-only lines of a chunk of whole
    lines. Cheap when there are none (the usual case)."""
    if not (chunk.startswith((b"\n", b" ", b"\t", b"\r")) or b"\n\n" in chunk or b"\n\r\n" in chunk
            or b"\n " in chunk or b"\n\t" in chunk):
        return []
    import numpy as np

    arr = np.frombuffer(chunk, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    if len(arr) and arr[-1] == 10:
        starts, ends = starts[:-1], ends[:-1]
    ws = np.isin(arr, np.frombuffer(_WS + b"\n", dtype=np.uint8))
    cs = np.concatenate(([0], np.cumsum(~ws)))
    blank = (cs[ends] - cs[starts]) == 0
    return (np.flatnonzero(blank) + first + 1).tolist()


@dataclass
class _FileScan:
    path: Path
    lines: int = 0
    blank: list = field(default_factory=list)
    ends_with_newline: bool = True
    prefixed: bool = False


def _scan(path: Path) -> _FileScan:
    """Lines, blank lines and whether the last line is complete, reading the file once in large pieces."""
    s = _FileScan(path)
    last = b"\n"
    with _open(path) as f:
        rest = b""
        head = True
        while True:
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                break
            if head:
                s.prefixed = bool(_HAS_PREFIX.search(chunk[:1 << 16]))
                head = False
            chunk = rest + chunk
            cut = chunk.rfind(b"\n")
            if cut < 0:
                rest = chunk
                continue
            whole, rest = chunk[:cut + 1], chunk[cut + 1:]
            s.blank += _blank_lines(whole, s.lines)
            s.lines += whole.count(b"\n")
            last = whole[-1:]
        if rest:
            s.blank += _blank_lines(rest, s.lines)
            s.lines += 1
            last = rest[-1:]
    s.ends_with_newline = last == b"\n"
    return s


def _strip_prefixes(path: Path, out: Path) -> None:
    """Copy of a `kubectl logs` file without the pod and timestamp prefixes in front of each JSON record."""
    with _open(path) as f, open(out, "wb") as w:
        for line in f:
            w.write(_PREFIX.sub(b"", line, count=1))


def _raw_lines(path: Path, wanted: list[int]) -> dict[int, bytes]:
    """The raw bytes (without the line end) of the given 1-based line numbers."""
    want = sorted(set(wanted))
    out: dict[int, bytes] = {}
    if not want:
        return out
    k = 0
    with _open(path) as f:
        for n, line in enumerate(f, start=1):
            if n == want[k]:
                out[n] = line.rstrip(b"\r\n")
                k += 1
                if k == len(want):
                    break
    return out


def _reason(raw: bytes) -> tuple[str, bool]:
    """(why a line is not an access-log record, whether it is the proxy's own log line)."""
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
    return "a field has a value the reader cannot take (nested object or list)", False


def _sample(raw: bytes) -> str:
    return raw[:SAMPLE_CHARS].decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------- entry point
def _files_of(level: str, src: Source, tmp: Path, k: int) -> list[Path]:
    if isinstance(src, Path):
        return [src]
    if isinstance(src, (list, tuple)) and src and all(isinstance(x, Path) for x in src):
        return list(src)
    f = tmp / f"source-{k}.log"
    if isinstance(src, str):
        f.write_bytes(src.encode("utf-8", "surrogateescape"))
    elif isinstance(src, (bytes, bytearray)):
        f.write_bytes(bytes(src))
    else:
        lines = list(src)
        f.write_bytes(b"\n".join(x.encode("utf-8", "surrogateescape") if isinstance(x, str) else bytes(x)
                                 for x in lines) + (b"\n" if lines else b""))
    return [f]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect():
    import duckdb

    db = duckdb.connect()
    db.execute("SET preserve_insertion_order = true")
    db.execute("SET TimeZone = 'UTC'")
    return db


def parse_logs(sources: Mapping[str, Source], allowlist=None, sources_are_levels: bool = False,
               now: Optional[datetime] = None, db=None) -> Parsed:
    """Parse each level's log. `allowlist` (an AllowList) names the entry every connection matched; without it
    the ``entry`` column is empty. `sources_are_levels`: the keys are level names, so a record whose ``level``
    field names another level is flagged. `now`: the collection time (a later record is in the future)."""
    import pandas as pd

    now = now or datetime.now(timezone.utc)
    db = db or connect()
    with tempfile.TemporaryDirectory(prefix="layernet-audit-") as tmpdir:
        tmp = Path(tmpdir)
        scans: list[tuple[str, _FileScan, Path]] = []      # (level, scan of the original, file DuckDB reads)
        k = 0
        for level, src in sources.items():
            for f in _files_of(level, src, tmp, k):
                k += 1
                s = _scan(f)
                read = f
                if s.prefixed:
                    read = tmp / f"stripped-{k}.log"
                    _strip_prefixes(f, read)
                scans.append((level, s, read))
        total = sum(s.lines for _, s, _ in scans)
        blank = sum(len(s.blank) for _, s, _ in scans)
        files = [(i, level, s, read) for i, (level, s, read) in enumerate(scans) if s.lines > len(s.blank)]
        db.execute("CREATE OR REPLACE TABLE _files (file VARCHAR, fid INTEGER, level VARCHAR, lines BIGINT, "
                   "complete BOOLEAN)")
        if files:
            db.executemany("INSERT INTO _files VALUES (?, ?, ?, ?, ?)",
                           [[str(read), i, level, s.lines, s.ends_with_newline] for i, level, s, read in files])
        cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in RAW_KEYS) + "}"
        if files:
            paths = "[" + ", ".join(_sql_str(str(read)) for _, _, _, read in files) + "]"
            db.execute(f"""CREATE OR REPLACE TABLE _raw AS SELECT filename AS file, * EXCLUDE (filename)
                FROM read_json({paths}, format='newline_delimited', ignore_errors=true, columns={cols},
                               filename=true, maximum_object_size={MAX_LINE_BYTES})""")
        else:
            db.execute("CREATE OR REPLACE TABLE _raw AS SELECT NULL::VARCHAR AS file, "
                       + ", ".join(f"NULL::VARCHAR AS {c}" for c in RAW_KEYS) + " WHERE false")
        # line numbers: the row's place in its file, plus the blank lines DuckDB skipped before it
        db.execute("CREATE OR REPLACE TABLE _blank (fid INTEGER, before BIGINT, n BIGINT)")
        rows = []
        for i, level, s, read in files:
            for j, b in enumerate(s.blank):
                rows.append([i, b - (j + 1), j + 1])   # non-blank lines before this blank line; blanks so far
        if rows:
            db.executemany("INSERT INTO _blank VALUES (?, ?, ?)", rows)
        db.execute("""CREATE OR REPLACE TABLE _rows AS
            WITH r AS (SELECT rowid AS rid, * FROM _raw),
                 first AS (SELECT file, min(rid) AS r0 FROM r GROUP BY file)
            SELECT r.*, f.fid, f.level AS src_level, f.lines AS file_lines, f.complete, r.rid - first.r0 AS ord
            FROM r JOIN first USING (file) JOIN _files f USING (file)""")
        if rows:
            db.execute("""CREATE OR REPLACE TABLE _rows AS
                SELECT r.* , r.ord + 1 + coalesce(b.n, 0) AS line FROM _rows r
                ASOF LEFT JOIN _blank b ON r.fid = b.fid AND r.ord >= b.before""")
        else:
            db.execute("CREATE OR REPLACE TABLE _rows AS SELECT *, ord + 1 AS line FROM _rows")
        # typing; a row is a record when it has a time and a listener port of the right type
        db.execute("""CREATE OR REPLACE TABLE _typed AS SELECT *,
              try_cast(time AS TIMESTAMPTZ) AS t,
              try_cast(try_cast(listener_port AS DOUBLE) AS INTEGER) AS port,
              CASE WHEN time IS NULL AND listener_port IS NULL THEN NULL
                   WHEN time IS NULL THEN 'not an access-log record (no time)'
                   WHEN listener_port IS NULL THEN 'not an access-log record (no listener_port)'
                   WHEN try_cast(time AS TIMESTAMPTZ) IS NULL THEN 'time is not an ISO 8601 UTC time'
                   WHEN try_cast(listener_port AS DOUBLE) IS NULL
                        OR try_cast(listener_port AS DOUBLE) <> floor(try_cast(listener_port AS DOUBLE))
                        THEN 'listener_port is not a whole number'
                   ELSE '' END AS why
            FROM _rows""")
        bad = db.execute("""SELECT fid, src_level, line, why, (not complete AND line = file_lines) AS last
                            FROM _typed WHERE why IS NULL OR why <> '' ORDER BY fid, line""").fetchall()
        malformed, incomplete, other = [], 0, 0
        by_file: dict[int, list] = {}
        for fid, lvl, line, why, last in bad:
            by_file.setdefault(fid, []).append((lvl, int(line), why, bool(last)))
        for fid, items in by_file.items():
            raw = _raw_lines(scans[fid][1].path, [line for _, line, _, _ in items])
            for lvl, line, why, last in items:
                text = raw.get(line, b"")
                if last and why is None:
                    incomplete += 1          # a live log's half-written last line: held back, read next time
                    continue
                if why is None:
                    why, own = _reason(text)
                    if own:
                        other += 1
                        continue
                malformed.append((lvl, line, why, _sample(text)))
        _connections(db, allowlist)
        checks = _checks(db, sources_are_levels, now, scans)
        mal = pd.DataFrame(malformed, columns=MALFORMED_COLUMNS).sort_values(["level", "line"], ignore_index=True)
        mal["line"] = mal["line"].astype("int64")
        db.execute("DROP TABLE IF EXISTS _raw; DROP TABLE IF EXISTS _rows")
    return Parsed(db, mal, total, blank, list(sources), incomplete, other, checks,
                  {lv: [str(s.path) for l2, s, _ in scans if l2 == lv] for lv in sources})


def _connections(db, allowlist) -> None:
    """The typed connection table from `_typed`: verdicts and allow-list entries joined by key."""
    db.execute("""CREATE OR REPLACE TABLE _good AS SELECT
          t AS time, coalesce(nullif(level, ''), src_level) AS level, port AS listener_port,
          coalesce(source, '') AS source, coalesce(sni, '') AS sni, coalesce(filter_chain, '') AS filter_chain,
          coalesce(upstream_host, '') AS upstream_host, coalesce(upstream_cluster, '') AS upstream_cluster,
          coalesce(upstream_local, '') AS upstream_local,
          coalesce(try_cast(try_cast(bytes_in AS DOUBLE) AS BIGINT), 0) AS bytes_in,
          coalesce(try_cast(try_cast(bytes_out AS DOUBLE) AS BIGINT), 0) AS bytes_out,
          coalesce(try_cast(try_cast(duration_ms AS DOUBLE) AS BIGINT), 0) AS duration_ms,
          coalesce(response_flags, '') AS response_flags, coalesce(details, '') AS details,
          coalesce(transport_failure, '') AS transport_failure,
          coalesce(try_cast(try_cast(connection_id AS DOUBLE) AS BIGINT), 0) AS connection_id,
          line, fid, src_level
        FROM _typed WHERE why = ''""")
    pairs = db.execute("SELECT DISTINCT filter_chain, response_flags FROM _good").fetchall()
    db.execute("CREATE OR REPLACE TABLE _verdict (filter_chain VARCHAR, response_flags VARCHAR, verdict VARCHAR)")
    if pairs:
        db.executemany("INSERT INTO _verdict VALUES (?, ?, ?)", [[c, f, verdict_of(c, f)] for c, f in pairs])
    db.execute("CREATE OR REPLACE TABLE _entry (sni VARCHAR, listener_port INTEGER, entry VARCHAR)")
    if allowlist is not None:
        names = db.execute("SELECT DISTINCT sni, listener_port FROM _good").fetchall()
        rows = []
        for sni, port in names:
            e = allowlist.match(sni or None, int(port))
            rows.append([sni, int(port), e.host if e else ""])
        if rows:
            db.executemany("INSERT INTO _entry VALUES (?, ?, ?)", rows)
    # source "ip:port" or "[v6]:port"; anything else keeps the whole text as the address and port 0
    db.execute(f"""CREATE OR REPLACE TABLE {TABLE} AS SELECT
          g.time, g.level, g.listener_port,
          CASE WHEN regexp_matches(g.source, '^(.*):(\\d{{1,5}})$')
               THEN trim(regexp_extract(g.source, '^(.*):(\\d{{1,5}})$', 1), '[]') ELSE trim(g.source, '[]') END
               AS source_ip,
          CASE WHEN regexp_matches(g.source, '^(.*):(\\d{{1,5}})$')
               THEN CAST(regexp_extract(g.source, '^(.*):(\\d{{1,5}})$', 2) AS INTEGER) ELSE 0 END AS source_port,
          g.sni, g.filter_chain, g.upstream_host, g.upstream_cluster, g.upstream_local, g.bytes_in, g.bytes_out,
          g.duration_ms, g.response_flags, g.details, g.transport_failure, g.connection_id,
          v.verdict, coalesce(e.entry, '') AS entry, g.line
        FROM _good g JOIN _verdict v USING (filter_chain, response_flags)
        LEFT JOIN _entry e ON e.sni = g.sni AND e.listener_port = g.listener_port
        ORDER BY g.time, g.fid, g.line""")


def _checks(db, sources_are_levels: bool, now: datetime, scans) -> "pd.DataFrame":
    """Records that disagree with their file: another level's name, a time in the future, an end time that goes
    backwards (Envoy writes a line when the connection ends, so end = start + duration only grows)."""
    import pandas as pd

    future = now + FUTURE_SLACK
    parts = []
    if sources_are_levels:
        parts.append("""SELECT 'level-mismatch' AS kind, src_level AS level, fid, line,
                          'level field ' || level || ' in the log of ' || src_level AS what
                        FROM _good WHERE level <> src_level""")
    parts.append(f"""SELECT 'future-time' AS kind, src_level AS level, fid, line, 'time ' || CAST(time AS VARCHAR) AS what
                     FROM _good WHERE time > TIMESTAMPTZ '{future.isoformat()}'""")
    parts.append(f"""SELECT 'time-backwards' AS kind, src_level AS level, fid, line,
                       'ends ' || CAST(back_ms AS VARCHAR) || ' ms before an earlier line' AS what
                     FROM (SELECT src_level, fid, line,
                             max(epoch_ms(time) + duration_ms) OVER (PARTITION BY fid ORDER BY line
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                             - (epoch_ms(time) + duration_ms) AS back_ms FROM _good)
                     WHERE back_ms > {BACKWARDS_SLACK_MS}""")
    q = " UNION ALL ".join(parts)
    rows = db.execute(f"""SELECT kind, level, fid, count(*) AS lines, min(line) AS first_line, arg_min(what, line)
                          FROM ({q}) GROUP BY kind, level, fid ORDER BY kind, level, fid""").fetchall()
    out = [(c, lv, str(scans[fid][1].path), int(n), int(first), what) for c, lv, fid, n, first, what in rows]
    db.execute("DROP TABLE IF EXISTS _good; DROP TABLE IF EXISTS _typed")
    return pd.DataFrame(out, columns=CHECK_COLUMNS)
