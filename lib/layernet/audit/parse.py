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
so a line it cannot read becomes an all-NULL row and never stops the audit. Each row is typed in the same pass
into a narrow table (what the findings need; the table lives in a temporary database file with a memory limit);
the other columns are read again only when a notebook asks for rows. A row's line number is its place in its
file: DuckDB skips blank lines, so when a file has fewer rows than lines a byte scan finds them. Only the few
rows that are not records go back to Python, which reads their raw text (beside the findings) to say why.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
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
MAX_LINE_BYTES = 32 << 20         # DuckDB's maximum_object_size: a 20 MB line is still read (its buffers grow with it)
FUTURE_SLACK = timedelta(minutes=5)
BACKWARDS_SLACK_MS = 1000         # Envoy writes a line when the connection ends: end times may jitter this much
TABLE = "connections"
MEMORY_LIMIT = os.environ.get("LAYERNET_AUDIT_MEMORY", "256MB")

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
    diagnosis: object                       # (malformed, incomplete, other), or a future of it
    lines: int = 0
    blank: int = 0
    levels: list[str] = field(default_factory=list)
    checks: Optional["pd.DataFrame"] = None
    files: dict = field(default_factory=dict)
    table: str = TABLE
    _df: Optional["pd.DataFrame"] = None
    reads: list = field(default_factory=list)      # (fid, file DuckDB read): the full columns are read again

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
    def connections(self) -> "pd.DataFrame":
        """The connection table as a DataFrame, sorted by time (built on first use)."""
        if self._df is None:
            if self.table == TABLE:
                self._df = _full_frame(self)
            else:
                self._df = to_frame(self.db, f"SELECT {', '.join(COLUMNS)} FROM {self.table} ORDER BY time, id")
        return self._df

    @connections.setter
    def connections(self, df: "pd.DataFrame") -> None:
        """Replace the rows (e.g. a filter applied in pandas): the SQL findings see the new rows too."""
        self._df = df
        table_from_frame(self.db, "_replaced_conn", df)
        self.table = "_replaced_conn"

    def since(self, when) -> None:
        """Keep only connections that started at or after `when`."""
        if when is None:
            return
        if self.table == TABLE:
            self.db.execute("DELETE FROM _conn WHERE time < ?", [when])
        else:
            self.db.execute(f"DELETE FROM {self.table} WHERE time < ?", [when])
        self._df = None

    @property
    def records(self) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {self.table}").fetchall()[0][0])

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
    blank: Optional[list] = None         # found only when DuckDB's row count says there are blank lines
    ends_with_newline: bool = True


def _scan(path: Path) -> _FileScan:
    """Lines and whether the last line is complete: one read of the file in large pieces (counting newlines is
    all the work)."""
    s = _FileScan(path)
    last = b"\n"
    with _open(path) as f:
        while True:
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                break
            s.lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        s.lines += 1
    s.ends_with_newline = last == b"\n"
    return s


def _prefixed(path: Path) -> bool:
    """Whether the file's first lines carry `kubectl logs` prefixes in front of the JSON records."""
    with _open(path) as f:
        return bool(_HAS_PREFIX.search(f.read(1 << 16)))


def _find_blank(path: Path) -> list[int]:
    """Line numbers of the whitespace-only lines of a file (DuckDB skips them)."""
    out: list[int] = []
    n = 0
    with _open(path) as f:
        rest = b""
        while True:
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                break
            chunk = rest + chunk
            cut = chunk.rfind(b"\n")
            if cut < 0:
                rest = chunk
                continue
            whole, rest = chunk[:cut + 1], chunk[cut + 1:]
            out += _blank_lines(whole, n)
            n += whole.count(b"\n")
        if rest:
            out += _blank_lines(rest, n)
    return out


def _strip_prefixes(path: Path, out: Path) -> None:
    """Copy of a `kubectl logs` file without the pod and timestamp prefixes in front of each JSON record."""
    with _open(path) as f, open(out, "wb") as w:
        for line in f:
            w.write(_PREFIX.sub(b"", line, count=1))


def _raw_lines(path: Path, wanted: list[int]) -> dict[int, bytes]:
    """The raw bytes (without the line end) of the given 1-based line numbers; pieces of the file without a
    wanted line are only counted."""
    want = sorted(set(wanted))
    out: dict[int, bytes] = {}
    if not want:
        return out
    k, n, rest = 0, 0, b""          # n: lines before `rest`
    with _open(path) as f:
        while k < len(want):
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                if rest:
                    chunk, rest = rest + b"\n", b""
                else:
                    break
            else:
                chunk, rest = rest + chunk, b""
                cut = chunk.rfind(b"\n")
                chunk, rest = chunk[:cut + 1], chunk[cut + 1:]
            c = chunk.count(b"\n")
            if want[k] > n + c:                          # no wanted line here: only counted
                n += c
                continue
            import numpy as np

            nl = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            while k < len(want) and want[k] <= n + c:
                i = want[k] - n - 1                      # 0-based line within the chunk
                a = int(nl[i - 1]) + 1 if i else 0
                out[want[k]] = chunk[a:int(nl[i])].rstrip(b"\r")
                k += 1
            n += c
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
    if len(raw) > MAX_LINE_BYTES:
        return f"a line longer than {MAX_LINE_BYTES >> 20} MB", False
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


def connect(path: Optional[Path] = None, memory_limit: str = ""):
    """A DuckDB connection for the audit. With `path` the tables live in that database file and DuckDB keeps at
    most `memory_limit` (default MEMORY_LIMIT) in memory, spilling the rest to the file's folder: ten million
    lines fit in a bounded footprint."""
    import duckdb

    if path is None:
        db = duckdb.connect()
    else:
        db = duckdb.connect(str(path))
        db.execute(f"SET memory_limit = '{memory_limit or MEMORY_LIMIT}'")
        db.execute(f"SET temp_directory = {_sql_str(str(Path(path).parent))}")
    db.execute("SET preserve_insertion_order = true")
    db.execute("SET TimeZone = 'UTC'")
    db.execute("CREATE TYPE verdict_t AS ENUM (" + ", ".join(_sql_str(v) for v in VERDICTS) + ")")
    return db


def table_from_frame(db, name: str, df) -> None:
    """A connection DataFrame as the table `name`, with the id and the join keys the findings use."""
    db.register("_df", df)
    cast = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in df.columns
                     if str(df[c].dtype) in ("category", "object", "string", "str"))
    db.execute(f"""CREATE OR REPLACE TABLE {name} AS SELECT row_number() OVER () - 1 AS id, *
                       {'REPLACE (' + cast + ')' if cast else ''},
                     hash(CASE WHEN CAST(source_ip AS VARCHAR) LIKE '%:%' THEN '[' || source_ip || ']'
                               ELSE CAST(source_ip AS VARCHAR) END || ':' || CAST(source_port AS VARCHAR)) AS src_key,
                     CASE WHEN upstream_local <> '' THEN hash(CAST(upstream_local AS VARCHAR)) END AS ul_key,
                     CAST(transport_failure AS VARCHAR) <> '' AS tls_error
                   FROM _df""")
    db.unregister("_df")


def _verdict_sql() -> str:
    """`verdict_of` as a SQL expression over the raw text columns (built from the same constants); the common
    case (a chain and no flag) is decided without splitting the flags."""
    flags = "string_split(response_flags, ',')"
    upstream = "[" + ", ".join(f"'{f}'" for f in sorted(UPSTREAM_FAILURE_FLAGS)) + "]"
    return (f"CASE WHEN filter_chain = '{CHAIN_REFUSED_SOURCE}' THEN 'refused-source' "
            f"WHEN filter_chain IS NULL OR filter_chain = '' THEN 'refused-name' "
            f"WHEN response_flags IS NULL OR response_flags = '-' OR response_flags = '' THEN 'allowed' "
            f"WHEN list_contains({flags}, '{NO_CHAIN_FLAG}') THEN 'refused-name' "
            f"WHEN list_has_any({flags}, {upstream}) THEN 'upstream-failure' ELSE 'allowed' END")


def _int(col: str, typ: str = "BIGINT") -> str:
    return f"coalesce(try_cast({col} AS {typ}), try_cast(try_cast({col} AS DOUBLE) AS {typ}), 0)"


# over the inner select of `_select`: t_ (the typed time) and p_ (the listener port as a number)
_WHY = """CASE WHEN t_ IS NOT NULL AND p_ IS NOT NULL AND p_ = floor(p_) THEN ''
     WHEN time IS NULL AND listener_port IS NULL THEN '?'
     WHEN time IS NULL THEN 'not an access-log record (no time)'
     WHEN listener_port IS NULL THEN 'not an access-log record (no listener_port)'
     WHEN t_ IS NULL THEN 'time is not an ISO 8601 UTC time'
     ELSE 'listener_port is not a whole number' END"""

_PORT_RE = ":(\\d{1,5})$"


def _select(src_level: str, fid: int) -> str:
    """The typed row of one raw record as the findings need it, with the reason it is not a record ('' when it
    is; '?' when DuckDB could not read the line at all: Python reads it to say why). Join keys are hashes of
    Envoy's own "ip:port" texts (the source here, the upstream local address at the child proxy)."""
    lvl = _sql_str(src_level)
    # "a.b.c.d:port" (one colon: c_ is its place) the cheap way; "[v6]:port", bare v6 and odd text (v6_) through
    # a regular expression
    port = f"regexp_extract(source, '{_PORT_RE}', 1)"
    return f"""t_ AS time, coalesce(nullif(level, ''), {lvl}) AS level, try_cast(p_ AS INTEGER) AS listener_port,
      CASE WHEN source IS NULL THEN ''
           WHEN NOT v6_ THEN CASE WHEN c_ = 0 THEN source ELSE left(source, c_ - 1) END
           ELSE trim(CASE WHEN {port} <> '' THEN left(source, length(source) - length({port}) - 1)
                          ELSE source END, '[]') END AS source_ip,
      CASE WHEN source IS NULL THEN 0
           WHEN NOT v6_ THEN CASE WHEN c_ = 0 THEN 0 ELSE coalesce(try_cast(source[c_ + 1:] AS INTEGER), 0) END
           ELSE coalesce(try_cast(nullif({port}, '') AS INTEGER), 0) END AS source_port,
      hash(source) AS src_key, CASE WHEN upstream_local <> '' THEN hash(upstream_local) END AS ul_key,
      coalesce(sni, '') AS sni, coalesce(upstream_host, '') AS upstream_host,
      {_int('bytes_in')} AS bytes_in, {_int('bytes_out')} AS bytes_out, {_int('duration_ms')} AS duration_ms,
      coalesce(transport_failure, '') <> '' AS tls_error,
      CAST({_verdict_sql()} AS verdict_t) AS verdict, {_WHY} AS why, {int(fid)}::USMALLINT AS fid"""


_FULL = """coalesce(filter_chain, '') AS filter_chain, coalesce(upstream_cluster, '') AS upstream_cluster,
      coalesce(upstream_local, '') AS upstream_local, coalesce(response_flags, '') AS response_flags,
      coalesce(details, '') AS details, coalesce(transport_failure, '') AS transport_failure,
      """ + _int("connection_id") + " AS connection_id"


def _typed(source: str) -> str:
    """The raw rows with the typed time and port computed once (`_select` and the reason both use them)."""
    return (f"(SELECT *, try_cast(time AS TIMESTAMPTZ) AS t_, "
            f"coalesce(try_cast(listener_port AS INTEGER), try_cast(listener_port AS DOUBLE)) AS p_, "
            f"instr(source, ':') AS c_, (source[1] = '[' OR instr(source[instr(source, ':') + 1:], ':') > 0) AS v6_ "
            f"FROM {source})")


def _read_json(path: str) -> str:
    cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in RAW_KEYS) + "}"
    return (f"read_json({_sql_str(path)}, format='newline_delimited', ignore_errors=true, columns={cols}, "
            f"maximum_object_size={MAX_LINE_BYTES})")


def _full_frame(p: "Parsed") -> "pd.DataFrame":
    """Every column of the connection table: the columns the findings do not need are read from the files again
    (same reader, same row order), only when rows are asked for."""
    db = p.db
    db.execute("CREATE OR REPLACE TEMP TABLE _full AS SELECT " + _FULL + " FROM (SELECT "
               + ", ".join(f"NULL::VARCHAR AS {c}" for c in RAW_KEYS) + ") WHERE false")
    for fid, path in p.reads:
        db.execute(f"INSERT INTO _full SELECT {_FULL} FROM {_read_json(path)}")
    try:
        cols = ", ".join(f"f.{c}" if c in ("filter_chain", "upstream_cluster", "upstream_local", "response_flags",
                                           "details", "transport_failure", "connection_id") else f"c.{c}"
                         for c in COLUMNS)
        return to_frame(db, f"SELECT {cols} FROM {p.table} c JOIN _full f ON f.rowid = c.id ORDER BY c.time, c.id")
    finally:
        db.execute("DROP TABLE IF EXISTS _full")


def parse_logs(sources: Mapping[str, Source], allowlist=None, sources_are_levels: bool = False,
               now: Optional[datetime] = None, db=None) -> Parsed:
    """Parse each level's log. `allowlist` (an AllowList) names the entry every connection matched; without it
    the ``entry`` column is empty. `sources_are_levels`: the keys are level names, so a record whose ``level``
    field names another level is flagged. `now`: the collection time (a later record is in the future)."""
    import shutil
    import weakref

    import pandas  # noqa: F401  (loaded here, before the line diagnosis thread uses it)

    now = now or datetime.now(timezone.utc)
    # text sources, stripped copies and the database file: kept while the Parsed lives (rows are read again)
    tmpdir = tempfile.mkdtemp(prefix="layernet-audit-")
    tmp = Path(tmpdir)
    db = db or connect(tmp / "audit.duckdb")
    if tmp.is_dir():
        scans: list[tuple[str, _FileScan, Path]] = []      # (level, scan of the original, file DuckDB reads)
        k = 0
        pending = []
        for level, src in sources.items():
            for f in _files_of(level, src, tmp, k):
                k += 1
                read = f
                if _prefixed(f):
                    read = tmp / f"stripped-{k}.log"
                    _strip_prefixes(f, read)
                pending.append((level, f, read))
        # the byte scans (line counts) run beside DuckDB's reading, which releases the GIL
        pool = ThreadPoolExecutor(max_workers=1)
        futures = [pool.submit(_scan, f) for _, f, _ in pending]
        pool.shutdown(wait=False)
        db.execute("CREATE OR REPLACE TABLE _conn AS SELECT " + _select("", 0) + " FROM " + _typed(
            "(SELECT " + ", ".join(f"NULL::VARCHAR AS {c}" for c in RAW_KEYS) + ")") + " WHERE false")
        files, reads = [], []
        r0 = 0
        for fid, (level, f, read) in enumerate(pending):
            if read.stat().st_size:
                db.execute(f"INSERT INTO _conn SELECT {_select(level, fid)} FROM {_typed(_read_json(str(read)))}")
                reads.append((fid, str(read)))
            s = futures[fid].result()
            scans.append((level, s, read))
            r1 = int(db.execute("SELECT count(*) FROM _conn").fetchall()[0][0])
            if r1 - r0 < s.lines:              # DuckDB skips blank lines: find where they are
                s.blank = _find_blank(s.path)
            files.append([fid, level, str(s.path), r0, r1, s.lines, s.ends_with_newline])
            r0 = r1
        db.execute("CREATE OR REPLACE TABLE _files (fid INTEGER, level VARCHAR, path VARCHAR, r0 BIGINT, r1 BIGINT, "
                   "lines BIGINT, complete BOOLEAN)")
        if files:
            db.executemany("INSERT INTO _files VALUES (?, ?, ?, ?, ?, ?, ?)", files)
        # line numbers: the row's place in its file, plus the blank lines DuckDB skipped before it
        blanks = [[fid, b - (j + 1), j + 1] for fid, (_, s, _) in enumerate(scans) for j, b in enumerate(s.blank or [])]
        db.execute("CREATE OR REPLACE TABLE _blank (fid INTEGER, before BIGINT, n BIGINT)")
        if blanks:
            db.executemany("INSERT INTO _blank VALUES (?, ?, ?)", blanks)
        _entries(db, allowlist)
        line = "c.rowid - f.r0 + 1" + (" + coalesce(b.n, 0)" if blanks else "")
        asof = " ASOF LEFT JOIN _blank b ON c.fid = b.fid AND c.rowid - f.r0 >= b.before" if blanks else ""
        db.execute(f"""CREATE OR REPLACE VIEW {TABLE} AS SELECT c.rowid AS id, c.time, c.level, c.listener_port,
              c.source_ip, c.source_port, c.sni, c.upstream_host, c.bytes_in, c.bytes_out, c.duration_ms, c.verdict,
              coalesce(e.entry, '') AS entry, {line} AS line, c.fid, c.src_key, c.ul_key, c.tls_error
            FROM _conn c JOIN _files f ON f.fid = c.fid{asof}
            LEFT JOIN _entry e ON e.sni = c.sni AND e.listener_port = c.listener_port
            WHERE c.why = ''""")
        db.execute("""CREATE OR REPLACE VIEW _core AS SELECT rowid AS id, time, level, listener_port, source_ip,
              source_port, sni, upstream_host, bytes_in, bytes_out, duration_ms, verdict, src_key, ul_key, tls_error
            FROM _conn WHERE why = ''""")
        db.execute("""CREATE OR REPLACE VIEW _core_e AS SELECT c.*, coalesce(e.entry, '') AS entry FROM _core c
            LEFT JOIN _entry e ON e.sni = c.sni AND e.listener_port = c.listener_port""")
        bad = db.execute(f"""SELECT c.fid, f.level, {line} AS line, c.why, (NOT f.complete AND {line} = f.lines)
                             FROM _conn c JOIN _files f ON f.fid = c.fid{asof}
                             WHERE c.why <> '' ORDER BY c.fid, line""").fetchall()
        diag = ThreadPoolExecutor(max_workers=1)
        diagnosis = diag.submit(_diagnose, bad, [s.path for _, s, _ in scans])
        diag.shutdown(wait=False)
        checks = _checks(db, sources_are_levels, now, scans)
    total = sum(s.lines for _, s, _ in scans)
    blank = sum(len(s.blank or []) for _, s, _ in scans)
    parsed = Parsed(db, diagnosis, total, blank, list(sources), checks,
                    {lv: [str(s.path) for l2, s, _ in scans if l2 == lv] for lv in sources}, reads=reads)
    weakref.finalize(parsed, shutil.rmtree, tmpdir, True)
    return parsed


def _diagnose(bad: list, paths: list[Path]) -> tuple:
    """(malformed lines with reason and sample, incomplete last lines, the proxy's own log lines) from the rows
    DuckDB could not type: their raw text is read from the files by line number."""
    import pandas as pd

    malformed, incomplete, other = [], 0, 0
    by_file: dict[int, list] = {}
    for fid, lvl, line, why, last in bad:
        by_file.setdefault(fid, []).append((lvl, int(line), why, bool(last)))
    for fid, items in by_file.items():
        raw = _raw_lines(paths[fid], [line for _, line, _, _ in items])
        for lvl, line, why, last in items:
            text = raw.get(line, b"")
            if last and why == "?":
                incomplete += 1          # a live log's half-written last line: held back, read next time
                continue
            if why == "?":
                why, own = _reason(text)
                if own:
                    other += 1
                    continue
            malformed.append((lvl, line, why, _sample(text)))
    mal = pd.DataFrame(malformed, columns=MALFORMED_COLUMNS).sort_values(["level", "line"], ignore_index=True)
    mal["line"] = mal["line"].astype("int64")
    return mal, incomplete, other


def _entries(db, allowlist) -> None:
    """`_entry(sni, listener_port, entry)`: the allow-list entry of every distinct name and port (AllowList.match,
    the one matching function), joined by key."""
    db.execute("CREATE OR REPLACE TABLE _entry (sni VARCHAR, listener_port INTEGER, entry VARCHAR)")
    if allowlist is None:
        return
    names = db.execute("SELECT DISTINCT sni, listener_port FROM _conn WHERE why = ''").fetchall()
    rows = []
    for sni, port in names:
        e = allowlist.match(sni or None, int(port))
        rows.append([sni, int(port), e.host if e else ""])
    if rows:
        db.executemany("INSERT INTO _entry VALUES (?, ?, ?)", rows)


def _checks(db, sources_are_levels: bool, now: datetime, scans) -> "pd.DataFrame":
    """Records that disagree with their file: another level's name, a time in the future, an end time that goes
    backwards (Envoy writes a line when the connection ends, so end = start + duration only grows)."""
    import numpy as np
    import pandas as pd

    future = now + FUTURE_SLACK
    out = []
    q = [f"""SELECT 'future-time', fid, count(*), min(line), arg_min('time ' || CAST(time AS VARCHAR), line)
             FROM {TABLE} WHERE time > ? GROUP BY fid"""]
    params = [future]
    if sources_are_levels:
        q.append(f"""SELECT 'level-mismatch', c.fid, count(*), min(c.line),
                       arg_min('level field ' || c.level || ' in the log of ' || f.level, c.line)
                     FROM {TABLE} c JOIN _files f ON f.fid = c.fid WHERE c.level <> f.level GROUP BY c.fid""")
    for sql in q:
        for kind, fid, n, first, what in db.execute(sql, params if "time >" in sql else []).fetchall():
            out.append((kind, scans[fid][0], str(scans[fid][1].path), int(n), int(first), what))
    # end times going backwards, per file in line order (numpy: a running maximum)
    arr = db.execute("SELECT fid, rowid AS id, epoch_ms(time) + duration_ms AS e FROM _conn WHERE why = ''"
                     ).fetchnumpy()                        # a table scan keeps the insertion (line) order
    fid, ids, end = (np.asarray(arr[k]) for k in ("fid", "id", "e"))
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        fid, ids, end = fid[order], ids[order], end[order]
    for f in np.unique(fid):
        m = fid == f
        e = end[m].astype(np.int64)
        if len(e) < 2:
            continue
        prev = np.maximum.accumulate(e)[:-1]
        back = np.flatnonzero(prev - e[1:] > BACKWARDS_SLACK_MS) + 1
        if len(back):
            hit = ids[m][back]
            first_id = int(hit[0])
            line, = db.execute(f"SELECT line FROM {TABLE} WHERE id = ?", [first_id]).fetchall()[0]
            out.append(("time-backwards", scans[int(f)][0], str(scans[int(f)][1].path), int(len(back)), int(line),
                        f"ends {int(prev[back[0] - 1] - e[back[0]])} ms before an earlier line"))
    out.sort(key=lambda r: (r[0], r[1], r[2]))
    return pd.DataFrame(out, columns=CHECK_COLUMNS)
