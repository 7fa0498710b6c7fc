"""Envoy JSON access-log lines -> one typed DataFrame row per connection.

`parse_logs({level: text_or_bytes_or_lines, ...}, allowlist)` returns a `Parsed` with:

- ``connections``: the connection table (columns `COLUMNS`, sorted by time);
- ``malformed``: every line that is not a valid access-log record (level, line number, reason, sample text),
  so nothing is ever dropped silently;
- ``lines`` / ``blank``: how many lines were read and how many were empty.

Column types: ``time`` datetime64[ms, UTC]; ``level``, ``verdict``, ``response_flags`` and the other
low-cardinality text columns are categoricals; ports int32; bytes, duration and connection id int64.
Envoy writes ``null`` for a value it does not have (no SNI, no filter chain, no upstream); the table holds
``""`` there so grouping never loses rows. ``response_flags`` keeps Envoy's ``"-"`` for "no flag".

Speed: each source is cut into blocks of whole lines; a block whose lines all look like JSON objects goes to
pyarrow's JSON reader in one call. Lines that do not look like objects, and blocks pyarrow rejects (found
by halving), take the slow road through `json.loads`, where each line becomes a row or a malformed entry.
"""
from __future__ import annotations

import io
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from layernet.render.envoy import CHAIN_REFUSED_SOURCE

VERDICTS = ["allowed", "refused-name", "refused-source", "upstream-failure"]
# Envoy response flags that mean the proxy accepted the connection but could not reach the upstream
UPSTREAM_FAILURE_FLAGS = frozenset({"UH", "UF", "UO", "URX", "UT", "NC", "DF", "UMSDR", "DO"})
NO_CHAIN_FLAG = "NR"

# keys of the access-log record (render/envoy.py ACCESS_LOG_FORMAT) and how the reader types them;
# `upstream_local` is optional: when the format carries %UPSTREAM_LOCAL_ADDRESS% the path join is exact
_STR = pa.string()
_INT = pa.int64()
RAW_SCHEMA = pa.schema([
    ("time", _STR), ("level", _STR), ("listener_port", _INT), ("source", _STR), ("sni", _STR),
    ("filter_chain", _STR), ("upstream_host", _STR), ("upstream_cluster", _STR), ("bytes_in", _INT),
    ("bytes_out", _INT), ("duration_ms", _INT), ("response_flags", _STR), ("details", _STR),
    ("transport_failure", _STR), ("connection_id", _INT), ("upstream_local", _STR),
])
_INT_KEYS = {f.name for f in RAW_SCHEMA if f.type == _INT}
_REQUIRED = ("time", "listener_port")

COLUMNS = ["time", "level", "listener_port", "source_ip", "source_port", "sni", "filter_chain", "upstream_host",
           "upstream_cluster", "upstream_local", "bytes_in", "bytes_out", "duration_ms", "response_flags",
           "details", "transport_failure", "connection_id", "verdict", "entry", "line"]
CATEGORY_COLUMNS = ["level", "source_ip", "sni", "filter_chain", "upstream_host", "upstream_cluster",
                    "response_flags", "details", "transport_failure", "entry"]
MALFORMED_COLUMNS = ["level", "line", "reason", "text"]
SAMPLE_CHARS = 300
BLOCK_BYTES = 16 << 20     # bytes of whole lines per reading step
ARROW_BLOCK = 16 << 20
WORKERS = max(1, min(4, os.cpu_count() or 1))
SLOW_BELOW = 256          # a rejected block of at most this many lines is read line by line

Source = Union[Path, str, bytes, Iterable[str]]


@dataclass
class Parsed:
    connections: pd.DataFrame
    malformed: pd.DataFrame
    lines: int = 0
    blank: int = 0
    levels: list[str] = field(default_factory=list)

    def malformed_summary(self) -> pd.DataFrame:
        """Per level and reason: how many lines, the first line number and a sample."""
        m = self.malformed
        if m.empty:
            return pd.DataFrame(columns=["level", "reason", "lines", "first_line", "sample"])
        g = m.groupby(["level", "reason"], sort=True)
        out = g.agg(lines=("line", "size"), first_line=("line", "min"), sample=("text", "first")).reset_index()
        return out[["level", "reason", "lines", "first_line", "sample"]]

    def report(self) -> dict:
        return {"lines": self.lines, "records": int(len(self.connections)), "malformed": int(len(self.malformed)),
                "blank": self.blank}


# ----------------------------------------------------------------------------------------------- input
def _blocks(src: Source) -> Iterator[bytes]:
    """The source in pieces of about BLOCK_BYTES that end at a line boundary (a file is read piece by piece)."""
    if isinstance(src, Path):
        with open(src, "rb") as f:
            rest = b""
            while True:
                chunk = f.read(BLOCK_BYTES)
                if not chunk:
                    break
                chunk = rest + chunk
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    rest = chunk
                    continue
                rest = chunk[cut + 1:]
                yield chunk[:cut + 1]
            if rest:
                yield rest
        return
    if isinstance(src, str):
        data = src.encode("utf-8", "replace")
    elif isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    else:
        data = "\n".join(src).encode("utf-8", "replace")
    lo = 0
    while lo < len(data):
        cut = data.find(b"\n", min(lo + BLOCK_BYTES, len(data)) - 1)
        hi = len(data) if cut < 0 else cut + 1
        yield data[lo:hi]
        lo = hi


def _line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without '\\r') of every line of a block."""
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    if len(arr) and arr[-1] == 10:        # the final newline ends the last line; no empty line after it
        starts, ends = starts[:-1], ends[:-1]
    if len(arr):
        has = ends > starts
        cr = np.zeros(len(ends), dtype=bool)
        cr[has] = arr[ends[has] - 1] == 13
        ends = ends - cr
    return starts.astype(np.int64), ends.astype(np.int64)


# ----------------------------------------------------------------------------------------------- reading
def _read_arrow(buf: bytes) -> pa.Table:
    return pj.read_json(io.BytesIO(buf), read_options=pj.ReadOptions(block_size=ARROW_BLOCK),
                        parse_options=pj.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore",
                                                      newlines_in_values=False))


def _sample(raw: bytes) -> str:
    return raw[:SAMPLE_CHARS].decode("utf-8", "replace")


def _coerce(rec) -> tuple[Optional[dict], str]:
    """A json.loads result as a RAW_SCHEMA row, or (None, reason)."""
    if not isinstance(rec, dict):
        return None, f"a JSON {type(rec).__name__}, not an object"
    row = {}
    for f in RAW_SCHEMA:
        v = rec.get(f.name)
        if v is None:
            row[f.name] = None
        elif f.name in _INT_KEYS:
            if isinstance(v, bool):
                return None, f"{f.name} is not a number"
            if isinstance(v, int):
                row[f.name] = v
            elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
                row[f.name] = int(v)
            elif isinstance(v, float) and v.is_integer():
                row[f.name] = int(v)
            else:
                return None, f"{f.name} is not a whole number"
        else:
            row[f.name] = v if isinstance(v, str) else json.dumps(v)
    return row, ""


def _slow(lines: list[bytes], idx: np.ndarray, ctx: "_Ctx") -> None:
    """Line by line with json.loads: each line becomes a row or a malformed entry."""
    rows, keep = [], []
    for raw, i in zip(lines, idx):
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            reason = "invalid or truncated JSON" if raw.lstrip().startswith(b"{") else "not JSON (another format or garbage)"
            ctx.bad(int(i), reason, raw)
            continue
        row, why = _coerce(rec)
        if row is None:
            ctx.bad(int(i), why, raw)
            continue
        rows.append(row)
        keep.append(i)
    if rows:
        ctx.add(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), np.asarray(keep, dtype=np.int64),
                dict(zip(keep, lines)))


def _read_lines(lines: list[bytes], idx: np.ndarray, ctx: "_Ctx") -> None:
    """Whole lines that look like JSON objects; a block pyarrow rejects is halved until it is small."""
    if not lines:
        return
    if len(lines) <= SLOW_BELOW:
        _slow(lines, idx, ctx)
        return
    try:
        t = _read_arrow(b"\n".join(lines))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        mid = len(lines) // 2
        _read_lines(lines[:mid], idx[:mid], ctx)
        _read_lines(lines[mid:], idx[mid:], ctx)
        return
    if t.num_rows != len(lines):            # never expected; do not guess which line went missing
        _slow(lines, idx, ctx)
        return
    ctx.add(t, idx, dict(zip(idx.tolist(), lines)))


def _read_block(data: bytes, first: int, ctx: "_Ctx") -> int:
    """One block whose first line is line `first` + 1. Returns the number of lines in it."""
    starts, ends = _line_bounds(data)
    n = len(starts)
    if not n:
        return 0
    arr = np.frombuffer(data, dtype=np.uint8)
    nonempty = ends > starts
    looks = np.zeros(n, dtype=bool)
    looks[nonempty] = (arr[starts[nonempty]] == 0x7B) & (arr[ends[nonempty] - 1] == 0x7D)   # '{' ... '}'
    idx = np.arange(first + 1, first + n + 1, dtype=np.int64)
    ctx.blank += int(n - nonempty.sum())
    text = lambda ln: data[starts[ln - first - 1]:ends[ln - first - 1]]   # noqa: E731
    if looks.all():
        try:
            t = _read_arrow(data)
            if t.num_rows == n:
                ctx.add(t, idx, text)
                return n
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    odd = np.flatnonzero(nonempty & ~looks)
    good = np.flatnonzero(looks)
    if len(odd) * 20 < n:     # few odd lines: read the runs of good lines between them as one buffer
        edges = np.concatenate(([-1], odd, np.flatnonzero(~nonempty), [n]))
        edges = np.unique(edges)
        pieces = [data[starts[a + 1]:ends[b - 1]] for a, b in zip(edges[:-1], edges[1:]) if b - a > 1]
        buf = b"\n".join(pieces)
        try:
            t = _read_arrow(buf)
            if t.num_rows == len(good):
                ctx.add(t, idx[good], text)
                good = good[:0]
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    if len(good):
        _read_lines([data[starts[i]:ends[i]] for i in good], idx[good], ctx)
    if len(odd):
        _slow([data[starts[i]:ends[i]] for i in odd], idx[odd], ctx)
    return n


def _read_one(block: bytes, first: int, level: str) -> "_Ctx":
    ctx = _Ctx(level)
    _read_block(block, first, ctx)
    return ctx


# ----------------------------------------------------------------------------------------------- typing
class _Ctx:
    """What one source collects: typed tables and malformed lines."""

    def __init__(self, level: str):
        self.level = level
        self.tables: list[pa.Table] = []
        self.malformed: list[tuple] = []
        self.blank = 0

    def bad(self, line: int, reason: str, raw: bytes) -> None:
        self.malformed.append((self.level, line, reason, _sample(raw)))

    def add(self, t: pa.Table, idx: np.ndarray, text) -> None:
        """Type a raw table (rows = lines `idx`); records without time or port go to malformed."""
        get = text.__getitem__ if isinstance(text, dict) else text
        bad = pc.or_(pc.is_null(t["time"]), pc.is_null(t["listener_port"]))
        try:
            ts = pc.cast(t["time"], pa.timestamp("ms", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parsed = pd.to_datetime(t["time"].to_pandas(), format="ISO8601", utc=True, errors="coerce")
            ts = pa.chunked_array([pa.array(parsed.dt.tz_convert("UTC").astype("datetime64[ms, UTC]"),
                                            type=pa.timestamp("ms", tz="UTC"))])
            bad = pc.or_(bad, pc.and_(pc.is_null(ts), pc.is_valid(t["time"])))
        bad_np = np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
        if bad_np.any():
            times = t["time"].to_pylist()
            ports = t["listener_port"].to_pylist()
            for k in np.flatnonzero(bad_np):
                missing = [name for name, v in (("time", times[k]), ("listener_port", ports[k])) if v is None]
                reason = (f"not an access-log record (no {' or '.join(missing)})" if missing
                          else "time is not an ISO 8601 UTC time")
                self.bad(int(idx[k]), reason, get(int(idx[k])))
            keep = pa.array(~bad_np)
            t, ts, idx = t.filter(keep), ts.filter(keep), idx[~bad_np]
        if not t.num_rows:
            return
        lvl = pc.fill_null(pc.if_else(pc.equal(t["level"], ""), pa.scalar(None, _STR), t["level"]), self.level)
        src = pc.fill_null(t["source"], "")
        parts = pc.split_pattern(src, ":", max_splits=1, reverse=True)
        two = pc.equal(pc.list_value_length(parts), 2)
        ip = pc.if_else(two, pc.list_element(parts, 0), src)
        ip = pc.utf8_trim(ip, "[]")
        port = pc.if_else(two, pc.list_element(parts, 1), "0")
        port = pc.cast(pc.if_else(pc.match_substring_regex(port, r"^\d{1,5}$"), port, "0"), pa.int32())

        def num(name, typ=pa.int64()):
            return pc.cast(pc.fill_null(t[name], 0), typ)

        def cat(name):
            return pc.dictionary_encode(pc.fill_null(t[name], ""))

        self.tables.append(pa.table({
            "time": ts, "level": pc.dictionary_encode(lvl), "listener_port": num("listener_port", pa.int32()),
            "source_ip": pc.dictionary_encode(ip), "source_port": port,
            "sni": cat("sni"), "filter_chain": cat("filter_chain"),
            "upstream_host": cat("upstream_host"), "upstream_cluster": cat("upstream_cluster"),
            "upstream_local": pc.fill_null(t["upstream_local"], ""),
            "bytes_in": num("bytes_in"), "bytes_out": num("bytes_out"), "duration_ms": num("duration_ms"),
            "response_flags": pc.dictionary_encode(pc.fill_null(t["response_flags"], "-")),
            "details": cat("details"), "transport_failure": cat("transport_failure"),
            "connection_id": num("connection_id"), "line": pa.array(idx, type=pa.int64()),
        }))


def ms_ints(times: pd.Series) -> np.ndarray:
    """UTC milliseconds since the epoch as int64 (no per-element conversion)."""
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(times.dt, "tz", None) is not None else times
    return naive.to_numpy().astype("datetime64[ms]").view(np.int64)


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


def _verdicts(df: pd.DataFrame) -> pd.Categorical:
    fc, rf = df["filter_chain"].cat, df["response_flags"].cat
    nrf = len(rf.categories)
    table = np.array([VERDICTS.index(verdict_of(c, f)) for c in fc.categories for f in rf.categories] or [0],
                     dtype=np.int8)
    codes = table[fc.codes.astype(np.int64) * nrf + rf.codes.astype(np.int64)] if len(df) else np.array([], np.int8)
    return pd.Categorical.from_codes(codes, categories=VERDICTS)


def _entries(df: pd.DataFrame, allowlist) -> pd.Categorical:
    """The allow-list entry each connection's name matched (AllowList.match, name and listener port)."""
    if allowlist is None or df.empty:
        return pd.Categorical([""] * len(df))
    key = df["sni"].cat.codes.astype(np.int64) * 65536 + df["listener_port"].to_numpy(np.int64)
    codes, uniques = pd.factorize(key)
    names = df["sni"].cat.categories
    hosts = []
    for k in uniques:
        e = allowlist.match(names[int(k) // 65536] or None, int(k) % 65536)
        hosts.append(e.host if e else "")
    cats = sorted(set(hosts))
    lookup = np.array([cats.index(h) for h in hosts], dtype=np.int32)
    return pd.Categorical.from_codes(lookup[codes], categories=cats)


def empty_connections() -> pd.DataFrame:
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


# ----------------------------------------------------------------------------------------------- entry point
def parse_logs(sources: Mapping[str, Source], allowlist=None) -> Parsed:
    """Parse each level's log: a Path (read piece by piece), text, bytes or a list of lines. `allowlist` (an
    AllowList) names the entry every connection matched; without it the ``entry`` column is empty."""
    malformed: list[tuple] = []
    tables: list[pa.Table] = []
    total = blank = 0
    # blocks are read on WORKERS threads (pyarrow and numpy release the GIL), in order, few in flight
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for level, src in sources.items():
            first = 0
            pending: deque = deque()

            def drain(limit: int) -> None:
                nonlocal blank
                while len(pending) > limit:
                    ctx = pending.popleft().result()
                    blank += ctx.blank
                    malformed.extend(ctx.malformed)
                    tables.extend(ctx.tables)

            for block in _blocks(src):
                pending.append(pool.submit(_read_one, block, first, level))
                first += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                drain(WORKERS)
            drain(0)
            total += first
    mal = pd.DataFrame(malformed, columns=MALFORMED_COLUMNS).sort_values(["level", "line"], ignore_index=True)
    if not tables:
        return Parsed(empty_connections(), mal, total, blank, list(sources))
    table = pa.concat_tables(tables).unify_dictionaries()
    del tables
    df = table.to_pandas()
    del table
    for c in CATEGORY_COLUMNS:
        if c in df and not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype("category")
    df["verdict"] = _verdicts(df)
    df["entry"] = _entries(df, allowlist)
    order = np.argsort(ms_ints(df["time"]), kind="stable")
    if not (order[1:] > order[:-1]).all():
        df = df.take(order).reset_index(drop=True)
    return Parsed(df[COLUMNS], mal, total, blank, list(sources))
