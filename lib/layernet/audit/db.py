"""The audit's DuckDB: the connection (memory limit, spill folder, UTC, the verdict type), its memory handed back,
the access-log record's keys and the connection table's columns, and a query as a typed DataFrame (the verdicts
are `hops.VERDICTS`).

Column types of the DataFrame (`to_frame`): ``time`` datetime64[ms, UTC]; ``level``, ``verdict``,
``response_flags`` and the other low-cardinality text columns are categoricals; ports int32; bytes, duration and
connection id int64.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from layernet.hops import VERDICTS

if TYPE_CHECKING:     # imported lazily: the CLI must start fast
    import pandas as pd

# keys of the access-log record (render/envoy.py ACCESS_LOG_FORMAT); read as text, typed in SQL
RAW_KEYS = ["time", "level", "listener_port", "source", "sni", "filter_chain", "upstream_host", "upstream_cluster",
            "upstream_local", "bytes_in", "bytes_out", "duration_ms", "response_flags", "details",
            "transport_failure", "connection_id"]
COLUMNS = ["time", "level", "listener_port", "source_ip", "source_port", "sni", "filter_chain", "upstream_host",
           "upstream_cluster", "upstream_local", "bytes_in", "bytes_out", "duration_ms", "response_flags",
           "details", "transport_failure", "connection_id", "verdict", "entry", "line"]
CATEGORY_COLUMNS = ["level", "source_ip", "sni", "filter_chain", "upstream_host", "upstream_cluster",
                    "response_flags", "details", "transport_failure", "entry"]
# DuckDB's memory: a fifth of the logs' size, at least 192 MB and at most 768 MB (ten million lines), so a million
# lines stay near 0.3 GB and ten million under 1 GB; beyond it DuckDB spills to the audit's temporary folder.
# LAYERNET_AUDIT_MEMORY (e.g. "512MB") sets it instead.
MEMORY_MIN, MEMORY_MAX = 192 << 20, 768 << 20
FINDINGS_MEMORY_MIN = 128 << 20
# read as numbers by the reader (a value that is not one becomes NULL, the rest of the line stays); the others are
# text, typed in SQL so a bad value can be named
NUMBER_KEYS = ("bytes_in", "bytes_out", "duration_ms", "connection_id")


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


def sql_str(s: str) -> str:
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
        db.execute(f"SET temp_directory = {sql_str(str(path))}")
    db.execute("SET preserve_insertion_order = true")
    db.execute("SET TimeZone = 'UTC'")
    db.execute("CREATE TYPE verdict_t AS ENUM (" + ", ".join(sql_str(v) for v in VERDICTS) + ")")
    return db
