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

Column types of the DataFrame: ``time`` datetime64[ms, UTC]; ``level``, ``verdict``, ``response_flags`` and the
other low-cardinality text columns are categoricals; ports int32; bytes, duration and connection id int64.
Envoy writes ``null`` for a value it does not have (no SNI, no filter chain, no upstream); the table holds
``""`` there so grouping never loses rows. ``response_flags`` keeps Envoy's ``"-"`` for "no flag".

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
"""
from __future__ import annotations

import bisect
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

from layernet import clock
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
BLOCK_BITS = 14
BLOCK = 1 << BLOCK_BITS           # the line index counts newlines per block of this many bytes
# DuckDB's read buffer per object; a longer line is still read whole (the reader grows its buffer for it)
OBJECT_BYTES = 1 << 16
FUTURE_SLACK = timedelta(minutes=5)
BACKWARDS_SLACK_MS = 1000         # Envoy writes a line when the connection ends: end times may jitter this much
BATCH_ROWS = 1 << 20             # rows per batch of the end-time check
# DuckDB's memory: a fifth of the logs' size, at least 192 MB and at most 768 MB (ten million lines), so a million
# lines stay near 0.3 GB and ten million under 1 GB; beyond it DuckDB spills to the audit's temporary folder.
# LAYERNET_AUDIT_MEMORY (e.g. "512MB") sets it instead.
MEMORY_MIN, MEMORY_MAX = 192 << 20, 768 << 20
FINDINGS_MEMORY_MIN = 128 << 20

# kubectl logs output: optional "[pod/NAME/CONTAINER] " and "--timestamps" prefixes before the JSON record
_PREFIX = re.compile(rb"^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?(?=\{)")
_HAS_PREFIX = re.compile(rb"(?m)^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?(?<= )\{")
# the proxy's own log lines (Envoy: "[2025-03-01 08:00:00.000][1][info][main] ..."), also behind those prefixes
_PROXY_LINE = re.compile(r"^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?"
                         r"\[\d{4}-\d\d-\d\d[ T][0-9:.]+\]\[\d+\]\[\w+\]")

Source = Union[Path, str, bytes, Iterable[str], list]


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
            _full_table(self)
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


# ----------------------------------------------------------------------------------------------- bytes
MALFORMED_INPUT = "malformed-input"       # the check of a log file that cannot be read (a damaged .gz)


def gzip_damage(path: Path) -> Optional[str]:
    """Why a .gz log cannot be read to its end (truncated, corrupt), or None (also for files that are not .gz)."""
    import zlib

    if not Path(path).name.endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as f:
            while f.read(SCAN_BYTES):
                pass
    except (OSError, EOFError, zlib.error) as exc:        # BadGzipFile is an OSError
        return (str(exc) or type(exc).__name__)[:200]
    return None


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
    """A file's lines: how many, whether the last one is complete, and (plain files) the newlines before each
    block of `BLOCK` bytes, so the raw text of a given line is found without counting from the start."""
    path: Path
    lines: int = 0
    blank: Optional[list] = None         # found only when DuckDB's row count says there are blank lines
    ends_with_newline: bool = True
    before: Optional[object] = None      # numpy int64: newlines before block k (plain files)


def _scan(path: Path) -> _FileScan:
    """One pass over the file's bytes (numpy over a memory map: no copy) counting newlines per block."""
    import numpy as np

    s = _FileScan(path)
    if path.name.endswith(".gz"):
        last = b"\n"
        with _open(path) as f:
            while True:
                chunk = f.read(SCAN_BYTES)
                if not chunk:
                    break
                s.lines += chunk.count(b"\n")
                last = chunk[-1:]
    else:
        # read into one reused buffer (a memory map would count the whole file as this process's memory)
        buf = bytearray(BLOCK << 8)
        view = np.frombuffer(buf, dtype=np.uint8)
        counts, last = [], b"\n"
        with open(path, "rb") as f:
            while True:
                got = f.readinto(buf)
                if not got:
                    break
                nl = np.flatnonzero(view[:got] == 10)
                counts.append(np.bincount(nl >> BLOCK_BITS, minlength=(got + BLOCK - 1) >> BLOCK_BITS))
                last = bytes(buf[got - 1:got])
        if not counts:
            return s
        s.before = np.concatenate(([0], np.cumsum(np.concatenate(counts))))
        s.lines = int(s.before[-1])
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


def _raw_lines(scan: _FileScan, wanted: list[int]) -> dict[int, bytes]:
    """The raw bytes (without the line end) of the given 1-based line numbers."""
    want = sorted(set(wanted))
    if not want:
        return {}
    if scan.before is None:
        return _raw_lines_streamed(scan.path, want)
    import numpy as np

    out: dict[int, bytes] = {}
    with open(scan.path, "rb") as f:
        for n in want:
            k = n - 1                                    # newlines before the line
            if k == 0:
                start = 0
            else:
                b = int(np.searchsorted(scan.before, k, side="left")) - 1     # block holding the k-th newline
                f.seek(b * BLOCK)
                nl = np.flatnonzero(np.frombuffer(f.read(BLOCK), dtype=np.uint8) == 10)
                start = b * BLOCK + int(nl[k - int(scan.before[b]) - 1]) + 1
            f.seek(start)
            parts = []
            while True:
                piece = f.read(BLOCK)
                cut = piece.find(b"\n")
                if cut >= 0 or not piece:
                    parts.append(piece[:cut] if cut >= 0 else piece)
                    break
                parts.append(piece)
            out[n] = b"".join(parts).rstrip(b"\r")
    return out


def _raw_lines_streamed(path: Path, want: list[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    k, n, rest = 0, 0, b""
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
            if want[k] <= n + c:
                lines = chunk.split(b"\n")
                while k < len(want) and want[k] <= n + c:
                    out[want[k]] = lines[want[k] - n - 1].rstrip(b"\r")
                    k += 1
            n += c
    return out


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


# ----------------------------------------------------------------------------------------------- SQL
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


_MALLOC_TUNED = False


def _return_freed_memory() -> None:
    """DuckDB allocates through the C library's malloc. By default freed blocks of a few hundred KB stay in the
    process (malloc raises its mmap threshold after the first free, and keeps an arena per thread), so a million-
    line audit would hold on to memory it no longer uses. Ask malloc (glibc) to map such blocks on their own,
    returned when freed, and to keep two arenas. Once per process; nothing happens on another C library."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 << 10)          # M_MMAP_THRESHOLD: fixed at the default (no longer raised)
        libc.mallopt(-8, 2)                  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def memory_limit_for(log_bytes: int) -> str:
    """DuckDB's memory limit for logs of this many bytes (uncompressed)."""
    if os.environ.get("LAYERNET_AUDIT_MEMORY"):
        return os.environ["LAYERNET_AUDIT_MEMORY"]
    return f"{min(MEMORY_MAX, max(MEMORY_MIN, log_bytes // 5)) >> 20}MB"


def release_cache(db) -> None:
    """Hand back the buffers DuckDB keeps for reuse after a large query (up to its memory limit): lower the limit to
    what its tables use, then restore it."""
    limit = db.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    used = db.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0] or 0
    db.execute(f"SET memory_limit = '{(int(used) >> 20) + 16}MB'")
    db.execute(f"SET memory_limit = '{limit}'")


def connect(path: Optional[Path] = None, memory_limit: str = ""):
    """A DuckDB connection for the audit (in memory). With `path` (a folder) DuckDB keeps at most `memory_limit`
    (default: `memory_limit_for` small logs) in memory and spills the rest there: ten million lines fit in a
    bounded footprint."""
    import duckdb

    _return_freed_memory()
    db = duckdb.connect()
    if path is not None:
        db.execute(f"SET memory_limit = '{memory_limit or memory_limit_for(0)}'")
        db.execute(f"SET temp_directory = {_sql_str(str(path))}")
    db.execute("SET preserve_insertion_order = true")
    db.execute("SET TimeZone = 'UTC'")
    db.execute("CREATE TYPE verdict_t AS ENUM (" + ", ".join(_sql_str(v) for v in VERDICTS) + ")")
    return db


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


_PORT_RE = ":(\\d{1,5})$"
_V6 = "(prefix(source, '[') OR source LIKE '%:%:%')"
# the source address without the port: "a.b.c.d:port" (one colon, c_ its place) the cheap way; "[v6]:port",
# bare v6 and odd text through a regular expression
_SOURCE_IP = f"""CASE WHEN source IS NULL THEN ''
       WHEN NOT {_V6} THEN CASE WHEN c_ = 0 THEN source ELSE left(source, c_ - 1) END
       ELSE trim(CASE WHEN regexp_extract(source, '{_PORT_RE}', 1) <> ''
                      THEN left(source, length(source) - length(regexp_extract(source, '{_PORT_RE}', 1)) - 1)
                      ELSE source END, '[]') END"""
_SOURCE_PORT = f"""CASE WHEN source IS NULL THEN 0
       WHEN NOT {_V6} THEN CASE WHEN c_ = 0 THEN 0 ELSE coalesce(try_cast(source[c_ + 1:] AS INTEGER), 0) END
       ELSE coalesce(try_cast(nullif(regexp_extract(source, '{_PORT_RE}', 1), '') AS INTEGER), 0) END"""


def _typed(source: str, since_ms: Optional[int]) -> str:
    """The raw rows with what every pass computes per line: the typed time, the source address and the two halves
    of the group key: `a` (file, level, source address, whether the time is missing, whether it is before
    `since`) and `b` (name, port text, chain, flags, TLS error). Few lines are needed to name every `a` and every
    `b` (a few hundred sources, a few dozen names), even when their combinations are many."""
    early = f"(t_ < make_timestamptz({since_ms * 1000}))" if since_ms is not None else "false"
    return f"""(SELECT *, hash(fid_, level, ip_, t_ IS NULL, {early}) AS a,
                   hash(sni, listener_port, filter_chain, response_flags, coalesce(transport_failure, '') <> '') AS b
               FROM (SELECT *, {early} AS early_, {_SOURCE_IP} AS ip_ FROM (
                     SELECT *, try_cast(time AS TIMESTAMPTZ) AS t_, instr(source, ':') AS c_ FROM {source})))"""


# read as numbers by the reader (a value that is not one becomes NULL, the rest of the line stays); the others are
# text, typed in SQL so a bad value can be named
NUMBER_KEYS = ("bytes_in", "bytes_out", "duration_ms", "connection_id")


def _read_json(path: str, fid: int) -> str:
    cols = "{" + ", ".join(f"'{c}': '{'BIGINT' if c in NUMBER_KEYS else 'VARCHAR'}'" for c in RAW_KEYS) + "}"
    return (f"(SELECT {int(fid)}::USMALLINT AS fid_, * FROM read_json({_sql_str(path)}, format='newline_delimited', "
            f"ignore_errors=true, columns={cols}, maximum_object_size={OBJECT_BYTES}))")


_ROWS = """CREATE TABLE _rows (t BIGINT, sk UBIGINT, uk UBIGINT, dur INTEGER, a UBIGINT, b UBIGINT, bi BIGINT,
                               bo BIGINT)"""
_REPS = """CREATE OR REPLACE TABLE _reps (a UBIGINT, b UBIGINT, fid USMALLINT, level VARCHAR, source_ip VARCHAR,
    no_time BOOLEAN, early BOOLEAN, sni VARCHAR, listener_port VARCHAR, filter_chain VARCHAR, response_flags VARCHAR,
    tls_error BOOLEAN)"""
_REP_COLUMNS = """a, b, fid_, level, ip_, t_ IS NULL, early_, sni, listener_port, filter_chain, response_flags,
    coalesce(transport_failure, '') <> ''"""
REPS_MAX = 10_000      # more distinct sources and names than this: one more pass names them (faster than lines)


def _pass_rows(db, path: str, fid: int, since_ms: Optional[int]) -> None:
    """One narrow row per line, in file order."""
    db.execute(f"""INSERT INTO _rows SELECT epoch_ms(t_), hash(source),
          CASE WHEN upstream_local <> '' THEN hash(upstream_local) END, coalesce(try_cast(duration_ms AS INTEGER), 0),
          a, b, coalesce(bytes_in, 0), coalesce(bytes_out, 0)
        FROM {_typed(_read_json(path, fid), since_ms)}""")


def _pass_names(db, path: str, fid: int, since_ms: Optional[int]) -> None:
    """The values of every `a` and of every `b` of a file by reading it all again (when representative lines will
    not do): one row per half (the other half's key NULL), not per combination."""
    db.execute(f"""INSERT INTO _reps SELECT
          CASE WHEN grouping(a) = 0 THEN a END, CASE WHEN grouping(b) = 0 THEN b END,
          any_value(fid_), any_value(level), any_value(ip_), any_value(t_ IS NULL), any_value(early_),
          any_value(sni), any_value(listener_port), any_value(filter_chain), any_value(response_flags),
          any_value(coalesce(transport_failure, '') <> '')
        FROM {_typed(_read_json(path, fid), since_ms)} GROUP BY GROUPING SETS ((a), (b))""")


def _names_from_files(db, reads: list, since_ms: Optional[int]) -> None:
    """`_pass_names` for every file, with DuckDB's memory raised for it: a log whose every line comes from another
    source holds as many names as lines."""
    limit = db.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if not os.environ.get("LAYERNET_AUDIT_MEMORY"):
        db.execute(f"SET memory_limit = '{MEMORY_MAX >> 20}MB'")
    try:
        for fid, path, _ in reads:
            _pass_names(db, path, fid, since_ms)
    finally:
        db.execute(f"SET memory_limit = '{limit}'")


def _name_groups(db, reads: list, scans: list, lines_of, tmp: Path, since_ms: Optional[int]) -> None:
    """`_reps`: the values behind every `a` and `b` of `_gstat`, read from one line of each (its first line, taken
    from the file by line number and typed by the same SQL), or by one more pass when they are too many or a file
    is compressed."""
    db.execute(_REPS)
    few = db.execute("SELECT count(DISTINCT a) + count(DISTINCT b) FROM _gstat").fetchall()[0][0] <= REPS_MAX
    by_file: dict[int, list] = {}
    if few:
        for rid, in db.execute("""SELECT DISTINCT rep FROM (SELECT min(rep) AS rep FROM _gstat GROUP BY a UNION ALL
                                  SELECT min(rep) FROM _gstat GROUP BY b) ORDER BY rep""").fetchall():
            fid, line = lines_of.at(rid)
            by_file.setdefault(fid, []).append(line)
    if not few:
        _names_from_files(db, reads, since_ms)
    for fid, path, _ in reads if few else []:
        scan = scans[fid][1]
        if by_file.get(fid) and scan.before is None:
            _names_from_files(db, [(fid, path, None)], since_ms)
        elif by_file.get(fid):
            raw = _raw_lines(scan, by_file[fid])
            rep = tmp / f"reps-{fid}.log"
            rep.write_bytes(b"".join(raw[n] + b"\n" for n in by_file[fid]))
            db.execute(f"INSERT INTO _reps SELECT {_REP_COLUMNS} FROM {_typed(_read_json(str(rep), fid), since_ms)}")
    missing = db.execute("""SELECT count(*) FROM _gstat s WHERE s.a NOT IN (SELECT a FROM _reps WHERE a IS NOT NULL)
                            OR s.b NOT IN (SELECT b FROM _reps WHERE b IS NOT NULL)""").fetchall()[0][0]
    if missing and few:            # a line read differently on its own: name everything from the files
        db.execute(_REPS)
        _names_from_files(db, reads, since_ms)


def _build_groups(db, levels_by_fid: dict[int, str], allowlist) -> None:
    """`_groups`: the typed groups (level, source address, name, port, verdict, TLS error, whether the lines are
    records, allow-list entry) with their connections, bytes and first/last time; `_g` the groups of records in
    the window; `_r` the narrow rows with their group key; `_conn` the rows with their group's values."""
    db.execute("CREATE OR REPLACE TABLE _flevel (fid USMALLINT, level VARCHAR)")
    if levels_by_fid:
        db.executemany("INSERT INTO _flevel VALUES (?, ?)", [[k, v] for k, v in levels_by_fid.items()])
    db.execute("""CREATE OR REPLACE TEMP TABLE _adict AS SELECT a, any_value(fid) AS fid, any_value(level) AS level,
                    any_value(source_ip) AS source_ip, any_value(no_time) AS no_time, any_value(early) AS early
                  FROM _reps WHERE a IS NOT NULL GROUP BY a""")
    db.execute("""CREATE OR REPLACE TEMP TABLE _bdict AS SELECT b, any_value(sni) AS sni,
                    any_value(listener_port) AS listener_port, any_value(filter_chain) AS filter_chain,
                    any_value(response_flags) AS response_flags, any_value(tls_error) AS tls_error
                  FROM _reps WHERE b IS NOT NULL GROUP BY b""")
    p_ = "coalesce(try_cast(y.listener_port AS INTEGER), try_cast(y.listener_port AS DOUBLE))"
    verdict = _verdict_sql().replace("filter_chain", "y.filter_chain").replace("response_flags", "y.response_flags")
    db.execute(f"""CREATE OR REPLACE TABLE _groups AS SELECT hash(s.a, s.b) AS g, s.a, s.b, x.fid,
          coalesce(nullif(x.level, ''), f.level) AS level, x.source_ip, coalesce(y.sni, '') AS sni,
          try_cast({p_} AS INTEGER) AS listener_port, CAST({verdict} AS verdict_t) AS verdict, y.tls_error,
          (x.no_time OR {p_} IS NULL OR {p_} <> floor({p_}) OR try_cast({p_} AS INTEGER) IS NULL) AS bad,
          coalesce(x.early, false) AS early, s.n, CAST(s.bytes_in AS BIGINT) AS bytes_in,
          CAST(s.bytes_out AS BIGINT) AS bytes_out, make_timestamptz(s.t0 * 1000) AS first_seen,
          make_timestamptz(s.t1 * 1000) AS last_seen, '' AS entry
        FROM _gstat s JOIN _adict x ON x.a = s.a JOIN _bdict y ON y.b = s.b JOIN _flevel f ON f.fid = x.fid""")
    n, distinct = db.execute("SELECT count(*), count(DISTINCT g) FROM _groups").fetchall()[0]
    if n != distinct:
        raise RuntimeError("audit: two connection groups share a key (a hash collision); report this log")
    _entries(db, allowlist)
    _views(db)


def _entries(db, allowlist) -> None:
    """Each group's allow-list entry: AllowList.match (the one matching function) per distinct name and port."""
    if allowlist is None:
        return
    pairs = db.execute("SELECT DISTINCT sni, listener_port FROM _groups WHERE NOT bad").fetchall()
    rows = [[sni, port, host] for (sni, port), host in allowlist.match_many((sni, int(p)) for sni, p in pairs).items()]
    if rows:
        db.execute("CREATE OR REPLACE TEMP TABLE _entry (sni VARCHAR, listener_port INTEGER, entry VARCHAR)")
        db.executemany("INSERT INTO _entry VALUES (?, ?, ?)", rows)
        db.execute("""UPDATE _groups SET entry = e.entry FROM _entry e
                      WHERE e.sni = _groups.sni AND e.listener_port = _groups.listener_port""")


def _views(db) -> None:
    db.execute("CREATE OR REPLACE VIEW _g AS SELECT * FROM _groups WHERE NOT bad AND NOT early")
    # while parsing the rows carry the two halves of the key (and durations); then only the key
    has_g = bool(db.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = '_rows' AND column_name = 'g'"
                            ).fetchall()[0][0])
    db.execute(f"CREATE OR REPLACE VIEW _r AS SELECT rowid AS id, t, {'g' if has_g else 'hash(a, b) AS g'}, sk, uk "
               "FROM _rows")
    db.execute("""CREATE OR REPLACE VIEW _conn AS SELECT r.id, make_timestamptz(r.t * 1000) AS time, r.t, gr.level, gr.source_ip, gr.sni, gr.listener_port, gr.verdict, gr.entry, gr.tls_error, r.g, r.sk,
          r.uk FROM _r r JOIN _g gr ON gr.g = r.g""")


def tables_from_frame(db, df) -> None:
    """A connection DataFrame as `_rows` and `_groups` (the tables the findings read), in the frame's order."""
    db.register("_df", df)
    cast = {c: f"CAST({c} AS VARCHAR)" for c in df.columns
            if str(df[c].dtype) in ("category", "object", "string", "str")}

    def col(c: str, default: str = "''") -> str:
        return f"coalesce({cast.get(c, c)}, {default})" if c in df.columns else default

    src = (f"CASE WHEN {col('source_ip')} LIKE '%:%' THEN '[' || {col('source_ip')} || ']' ELSE {col('source_ip')} END"
           f" || ':' || CAST({col('source_port', '0')} AS VARCHAR)")
    db.execute(f"""CREATE OR REPLACE TEMP TABLE _src AS SELECT row_number() OVER () - 1 AS i,
          CAST(time AS TIMESTAMPTZ) AS time, {col('level')} AS level, {col('source_ip')} AS source_ip,
          {col('sni')} AS sni, CAST({col('listener_port', '0')} AS INTEGER) AS listener_port,
          CAST({col('verdict')} AS verdict_t) AS verdict, {col('transport_failure')} <> '' AS tls_error,
          {col('entry')} AS entry, CAST({col('bytes_in', '0')} AS BIGINT) AS bytes_in,
          CAST({col('bytes_out', '0')} AS BIGINT) AS bytes_out, CAST({col('duration_ms', '0')} AS BIGINT) AS dur,
          hash({src}) AS sk, CASE WHEN {col('upstream_local')} <> '' THEN hash({col('upstream_local')}) END AS uk
        FROM _df""")
    db.unregister("_df")
    a, b = "hash(level, source_ip)", "hash(sni, listener_port, verdict, tls_error, entry)"
    db.execute(f"""CREATE OR REPLACE TABLE _groups AS SELECT hash({a}, {b}) AS g, {a} AS a, {b} AS b, 0::USMALLINT AS fid,
          level, source_ip, sni, listener_port, verdict, tls_error, false AS bad, false AS early, count(*) AS n,
          sum(bytes_in)::BIGINT AS bytes_in, sum(bytes_out)::BIGINT AS bytes_out, min(time) AS first_seen,
          max(time) AS last_seen, entry
        FROM _src GROUP BY ALL""")
    db.execute(f"""CREATE OR REPLACE TABLE _rows AS SELECT epoch_ms(time) AS t, hash({a}, {b}) AS g, sk, uk
        FROM _src ORDER BY i""")
    db.execute("DROP TABLE _src")
    _views(db)


_FULL = f"""t_ AS time, {_SOURCE_PORT} AS source_port, coalesce(filter_chain, '') AS filter_chain,
      coalesce(upstream_host, '') AS upstream_host, coalesce(upstream_cluster, '') AS upstream_cluster,
      coalesce(upstream_local, '') AS upstream_local, coalesce(bytes_in, 0) AS bytes_in,
      coalesce(bytes_out, 0) AS bytes_out, coalesce(duration_ms, 0) AS duration_ms,
      coalesce(response_flags, '') AS response_flags, coalesce(details, '') AS details,
      coalesce(transport_failure, '') AS transport_failure, coalesce(connection_id, 0) AS connection_id"""


def _full_table(p: Parsed) -> None:
    """`_table`: every column of every connection in the window. The columns the findings do not need are read
    from the files again (same reader, same order: rowid meets rowid); level, address, name, port, verdict and
    entry come from the row's group, so they are typed in one place."""
    db = p.db
    db.execute(f"CREATE OR REPLACE TEMP TABLE _full AS SELECT {_FULL} FROM (SELECT NULL::TIMESTAMPTZ AS t_, "
               + ", ".join(f"NULL::{'BIGINT' if c in NUMBER_KEYS else 'VARCHAR'} AS {c}" for c in RAW_KEYS)
               + ", 0 AS c_) WHERE false")
    for fid, path, _ in p.reads:
        db.execute(f"""INSERT INTO _full SELECT {_FULL} FROM (SELECT *, try_cast(time AS TIMESTAMPTZ) AS t_,
                         instr(source, ':') AS c_ FROM {_read_json(path, fid)})""")
    blanks = bool(db.execute("SELECT count(*) FROM _blank").fetchall()[0][0])
    line = "r.id - f.r0 + 1" + (" + coalesce(b.n, 0)" if blanks else "")
    asof = " ASOF LEFT JOIN _blank b ON f.fid = b.fid AND r.id - f.r0 >= b.before" if blanks else ""
    db.execute(f"""CREATE OR REPLACE TEMP TABLE _table AS SELECT r.id, x.time, gr.level, gr.listener_port,
          gr.source_ip, x.source_port, gr.sni, x.filter_chain, x.upstream_host, x.upstream_cluster, x.upstream_local,
          x.bytes_in, x.bytes_out, x.duration_ms, x.response_flags, x.details, x.transport_failure, x.connection_id,
          gr.verdict, gr.entry, {line} AS line
        FROM _r r JOIN _full x ON x.rowid = r.id JOIN _g gr ON gr.g = r.g
        JOIN _files f ON f.fid = gr.fid{asof}""")
    db.execute("DROP TABLE _full")


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
        for f in _files_of(level, src, tmp, k):
            k += 1
            why = gzip_damage(f)
            if why:                      # one malformed-input finding; the rest of the logs are read as usual
                damaged.append((MALFORMED_INPUT, level, str(f), 1, 1, f"damaged gzip file, not read: {why}"))
                continue
            read = f
            if _prefixed(f):
                read = tmp / f"stripped-{k}.log"
                _strip_prefixes(f, read)
            pending.append((level, f, read))
    size = sum(read.stat().st_size * (8 if read.name.endswith(".gz") else 1) for _, _, read in pending)
    db.execute(f"SET memory_limit = '{memory_limit_for(size)}'")
    # the byte scans (line counts) run beside DuckDB's reading, which releases the GIL
    pool = ThreadPoolExecutor(max_workers=1)
    futures = [pool.submit(_scan, read) for _, _, read in pending]
    pool.shutdown(wait=False)
    db.execute(_ROWS)
    reads, files, r0 = [], [], 0
    for fid, (level, f, read) in enumerate(pending):
        if read.stat().st_size:
            reads.append((fid, str(read), level))
            _pass_rows(db, str(read), fid, since_ms)
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
            s.blank = _find_blank(read)
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
    lines_of = _LineNumbers(files, scans)
    _name_groups(db, reads, scans, lines_of, tmp, since_ms)
    _build_groups(db, {fid: level for fid, (level, _, _) in enumerate(pending)}, allowlist)
    bad = db.execute("""SELECT r.id, gr.fid FROM _r r JOIN _groups gr ON gr.g = r.g WHERE gr.bad
                        ORDER BY r.id""").fetchall()
    diag = ThreadPoolExecutor(max_workers=1)
    diagnosis = diag.submit(_diagnose, [(fid, lines_of(fid, rid)) for rid, fid in bad], scans)
    diag.shutdown(wait=False)
    checks = _checks(db, sources_are_levels, now, scans, files, lines_of, damaged)
    # the end-time check is done and the groups are named: time, key and addresses are all the findings read
    for name in ("_gstat", "_reps", "_adict", "_bdict"):
        db.execute(f"DROP TABLE IF EXISTS {name}")
    db.execute("CREATE TABLE _rows_g AS SELECT t, hash(a, b) AS g, sk, uk FROM _rows")      # same order
    db.execute("DROP TABLE _rows")
    db.execute("ALTER TABLE _rows_g RENAME TO _rows")
    _views(db)
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


class _LineNumbers:
    """A row's line number in its file: its place among the file's rows plus the blank lines before it."""

    def __init__(self, files: list, scans: list):
        self.r0 = {f[0]: f[3] for f in files}
        self.before = {fid: [b - (j + 1) for j, b in enumerate(s.blank or [])] for fid, (_, s, _) in enumerate(scans)}
        # files in row order (an empty file shares its first row id with the next: the later one holds the rows)
        self._starts = sorted((r0, fid) for fid, r0 in self.r0.items())

    def at(self, rowid: int) -> tuple[int, int]:
        """(file, line number) of a row id."""
        fid = self._starts[bisect.bisect_right(self._starts, (int(rowid), float("inf"))) - 1][1]
        return fid, self(fid, rowid)

    def __call__(self, fid: int, rowid: int) -> int:
        p = int(rowid) - self.r0[fid]
        return p + 1 + bisect.bisect_right(self.before[fid], p)


def _diagnose(bad: list, scans: list) -> tuple:
    """(malformed lines with reason and sample, incomplete last lines, the proxy's own log lines) from the rows
    DuckDB could not type: their raw text is read from the files by line number."""
    import pandas as pd

    malformed, incomplete, other = [], 0, 0
    by_file: dict[int, list] = {}
    for fid, line in bad:
        by_file.setdefault(fid, []).append(line)
    for fid, lines in by_file.items():
        level, scan, _ = scans[fid]
        raw = _raw_lines(scan, lines)
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


def _checks(db, sources_are_levels: bool, now: datetime, scans, files, lines_of, damaged=()) -> "pd.DataFrame":
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
