"""The audit's SQL passes over the logs: DuckDB reads each file once into narrow rows, the groups are named from
a few representative lines (or one more pass), typed, given their allow-list entry, and the full table is read
again on demand.

One narrow row per line in file order (`_rows`, rowid = place in the files): start time, duration, bytes, two
halves of a group key (`a`: file, level, source address; `b`: name, port, chain, flags, TLS error) and the hashes
of Envoy's own "ip:port" texts (the source, and the upstream local address a child proxy logs). `_groups`: the
rows summed per (a, b); `_g` the groups of records in the window; `_r` the rows with their group key; `_conn` the
rows with their group's values.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from layernet.audit.db import MEMORY_MAX, NUMBER_KEYS, RAW_KEYS, sql_str
from layernet.audit.scan import raw_lines
from layernet.hops import NO_CHAIN_FLAG, UPSTREAM_FAILURE_FLAGS
from layernet.render.envoy import CHAIN_REFUSED_SOURCE

# DuckDB's read buffer per object; a longer line is still read whole (the reader grows its buffer for it)
OBJECT_BYTES = 1 << 16


def _verdict_sql() -> str:
    """`hops.verdict_of` as a SQL expression over the raw text columns (built from the same constants); the common
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



def _read_json(path: str, fid: int) -> str:
    cols = "{" + ", ".join(f"'{c}': '{'BIGINT' if c in NUMBER_KEYS else 'VARCHAR'}'" for c in RAW_KEYS) + "}"
    return (f"(SELECT {int(fid)}::USMALLINT AS fid_, * FROM read_json({sql_str(path)}, format='newline_delimited', "
            f"ignore_errors=true, columns={cols}, maximum_object_size={OBJECT_BYTES}))")


ROWS = """CREATE TABLE _rows (t BIGINT, sk UBIGINT, uk UBIGINT, dur INTEGER, a UBIGINT, b UBIGINT, bi BIGINT,
                               bo BIGINT)"""
_REPS = """CREATE OR REPLACE TABLE _reps (a UBIGINT, b UBIGINT, fid USMALLINT, level VARCHAR, source_ip VARCHAR,
    no_time BOOLEAN, early BOOLEAN, sni VARCHAR, listener_port VARCHAR, filter_chain VARCHAR, response_flags VARCHAR,
    tls_error BOOLEAN)"""
_REP_COLUMNS = """a, b, fid_, level, ip_, t_ IS NULL, early_, sni, listener_port, filter_chain, response_flags,
    coalesce(transport_failure, '') <> ''"""
REPS_MAX = 10_000      # more distinct sources and names than this: one more pass names them (faster than lines)


def pass_rows(db, path: str, fid: int, since_ms: Optional[int]) -> None:
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


def name_groups(db, reads: list, scans: list, lines_of, tmp: Path, since_ms: Optional[int]) -> None:
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
            raw = raw_lines(scan, by_file[fid])
            rep = tmp / f"reps-{fid}.log"
            rep.write_bytes(b"".join(raw[n] + b"\n" for n in by_file[fid]))
            db.execute(f"INSERT INTO _reps SELECT {_REP_COLUMNS} FROM {_typed(_read_json(str(rep), fid), since_ms)}")
    missing = db.execute("""SELECT count(*) FROM _gstat s WHERE s.a NOT IN (SELECT a FROM _reps WHERE a IS NOT NULL)
                            OR s.b NOT IN (SELECT b FROM _reps WHERE b IS NOT NULL)""").fetchall()[0][0]
    if missing and few:            # a line read differently on its own: name everything from the files
        db.execute(_REPS)
        _names_from_files(db, reads, since_ms)


def build_groups(db, levels_by_fid: dict[int, str], allowlist) -> None:
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
    views(db)


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


def views(db) -> None:
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
    views(db)


_FULL = f"""t_ AS time, {_SOURCE_PORT} AS source_port, coalesce(filter_chain, '') AS filter_chain,
      coalesce(upstream_host, '') AS upstream_host, coalesce(upstream_cluster, '') AS upstream_cluster,
      coalesce(upstream_local, '') AS upstream_local, coalesce(bytes_in, 0) AS bytes_in,
      coalesce(bytes_out, 0) AS bytes_out, coalesce(duration_ms, 0) AS duration_ms,
      coalesce(response_flags, '') AS response_flags, coalesce(details, '') AS details,
      coalesce(transport_failure, '') AS transport_failure, coalesce(connection_id, 0) AS connection_id"""


def full_table(db, reads: list) -> None:
    """`_table`: every column of every connection in the window. The columns the findings do not need are read
    from the files again (`reads`: the same files, reader and order: rowid meets rowid); level, address, name,
    port, verdict and entry come from the row's group, so they are typed in one place."""
    db.execute(f"CREATE OR REPLACE TEMP TABLE _full AS SELECT {_FULL} FROM (SELECT NULL::TIMESTAMPTZ AS t_, "
               + ", ".join(f"NULL::{'BIGINT' if c in NUMBER_KEYS else 'VARCHAR'} AS {c}" for c in RAW_KEYS)
               + ", 0 AS c_) WHERE false")
    for fid, path, _ in reads:
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

