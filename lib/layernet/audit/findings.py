"""Findings: SQL over the parser's tables, returned as pandas DataFrames.

Every function takes either a `Parsed` (the DuckDB tables the parser built: nothing is copied into pandas) or a
connection DataFrame (turned into the same tables in a throwaway DuckDB connection). Counts come from the
connection groups (`_groups`: level, source address, name, port, verdict); only what needs single connections
(paths, forwarded names, probe windows, gaps) reads the narrow per-line rows (`_rows`), joined to their group by
key. Levels, verdicts, entries and source classes are always joined by their value, never by position or
categorical code.

- `per_level`     per proxy level: connections by verdict, bytes, distinct sources and names, first/last;
- `refused`       refused attempts grouped by name, source, level and verdict, with first/last seen and count;
- `coverage`      every allow-list entry: connections that used it, last use; `unused_entries` lists the rest;
- `paths`         end-to-end: an inner level's connection joined to the one it caused at the level above;
- `anomalies`     sources outside a level's networks, names a child proxy forwarded although it should have
                  refused them, refused attempts by a child level's own workloads, no SNI / not TLS, gaps in a
                  level's log, levels that logged nothing, and the log checks of the parser; probe traffic of
                  the run is marked expected.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from layernet.audit.db import connect, release_cache
from layernet.audit.parse import Parsed
from layernet.audit.passes import tables_from_frame
from layernet.hops import DEFAULT_WINDOW_MS, VERDICTS, link

if TYPE_CHECKING:
    import pandas as pd

REFUSED = ("refused-name", "refused-source")
PER_LEVEL_COLUMNS = ["level", "connections", "allowed", "refused_name", "refused_source", "upstream_failure",
                     "bytes_in", "bytes_out", "distinct_sources", "distinct_names", "first_seen", "last_seen"]
REFUSED_COLUMNS = ["name", "source", "level", "verdict", "ports", "count", "first_seen", "last_seen"]
COVERAGE_COLUMNS = ["host", "ports", "group", "connections", "refused_source", "levels", "last_used", "used"]
ANOMALY_COLUMNS = ["kind", "level", "source", "name", "count", "first_seen", "last_seen", "expected", "detail"]
SOURCE_CLASSES = ["child proxy", "child network", "own network", "pods", "other"]
# reported, but not a failure: the proxy did its job (a refused attempt by a child level's own workloads)
INFO_KINDS = frozenset({"child-workload-refused"})
DEFAULT_GAP_MINUTES = 15


def _td(minutes: float):
    import pandas as pd

    return pd.Timedelta(minutes=minutes)


def __getattr__(name):          # DEFAULT_GAP without importing pandas at module load
    if name == "DEFAULT_GAP":
        return _td(DEFAULT_GAP_MINUTES)
    raise AttributeError(name)


@dataclass
class Expected:
    """Traffic a run caused on purpose (the probe matrix): connections in the window, with one of the names,
    from one of the sources, are expected and never an anomaly."""
    start: Optional[datetime] = None
    end: Optional[datetime] = None
    names: set = field(default_factory=set)            # lower case; "" = no server name
    sources: list = field(default_factory=list)        # ip networks

    def __bool__(self) -> bool:
        return bool(self.names and self.sources and self.start and self.end)


# ----------------------------------------------------------------------------------------------- the tables
class _Tab:
    """A DuckDB connection holding `_groups` / `_g` (groups in the window), `_rows` and the view `_conn` (one row
    per connection with its group's values; `name`)."""

    name = "_conn"

    def __init__(self, data):
        if isinstance(data, Parsed):
            self.db, self.parsed = data.db, data
            return
        self.db, self.parsed = connect(), None
        tables_from_frame(self.db, data)
        self.db.register("_frame", data)
        self.db.execute("CREATE OR REPLACE TEMP TABLE _table AS SELECT row_number() OVER () - 1 AS id, * FROM _frame")
        self.db.unregister("_frame")

    def full(self) -> str:
        """A table with every column of every connection and its ``id`` (the rowid of `_rows`)."""
        return self.parsed.table if self.parsed is not None else "_table"

    def df(self, sql: str, params=None) -> "pd.DataFrame":
        return self.db.execute(sql, params or []).df()

    def rows(self, sql: str, params=None) -> list:
        return self.db.execute(sql, params or []).fetchall()


def _tab(data) -> _Tab:
    return data if isinstance(data, _Tab) else _Tab(data)


def _levels_in(t: _Tab, site=None) -> list[str]:
    names = [lv.name for lv in site.proxy_levels(innermost_first=True)] if site is not None else []
    seen = [r[0] for r in t.rows("SELECT DISTINCT level FROM _g ORDER BY level")]
    return names + [x for x in seen if x not in names]


def _utc_ms(col: "pd.Series") -> "pd.Series":
    import pandas as pd

    if col.empty:
        return pd.Series(col.to_numpy(), dtype="datetime64[ms, UTC]", index=col.index)
    return pd.to_datetime(col, utc=True).astype("datetime64[ms, UTC]")


def _sql_list(values) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) or "''"


# ----------------------------------------------------------------------------------------------- per level
def per_level(data, site=None) -> "pd.DataFrame":
    """One row per level (every proxy level of the site, also one that logged nothing), joined by level name."""
    import pandas as pd

    t = _tab(data)
    levels = _levels_in(t, site)
    if not levels:
        return pd.DataFrame(columns=PER_LEVEL_COLUMNS)
    agg = t.df("""SELECT level, sum(n) AS connections,
            sum(n) FILTER (WHERE verdict = 'allowed') AS allowed,
            sum(n) FILTER (WHERE verdict = 'refused-name') AS refused_name,
            sum(n) FILTER (WHERE verdict = 'refused-source') AS refused_source,
            sum(n) FILTER (WHERE verdict = 'upstream-failure') AS upstream_failure,
            sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out,
            count(DISTINCT source_ip) AS distinct_sources,
            count(DISTINCT sni) FILTER (WHERE sni <> '') AS distinct_names,
            min(first_seen) AS first_seen, max(last_seen) AS last_seen
        FROM _g GROUP BY level""")
    return per_level_frame(levels, agg)


def per_level_frame(levels: list[str], agg: "pd.DataFrame") -> "pd.DataFrame":
    """The per-level table from the aggregates of any engine (DuckDB here, KQL in `monitor`): one row per level
    of `levels` in that order, joined by level name (a level without rows gets zeros)."""
    import pandas as pd

    out = pd.DataFrame({"level": pd.Series(levels, dtype="str")}).merge(agg, on="level", how="left")
    for c in PER_LEVEL_COLUMNS[1:10]:
        out[c] = out[c].fillna(0).astype("int64")
    for c in ("first_seen", "last_seen"):
        out[c] = _utc_ms(out[c])
    return out[PER_LEVEL_COLUMNS]


# ----------------------------------------------------------------------------------------------- refused
def refused(data) -> "pd.DataFrame":
    """Refused attempts by name (SNI, "" when none), source address, level and verdict; most frequent first."""
    t = _tab(data)
    out = t.df("""SELECT sni AS name, source_ip AS source, level, CAST(verdict AS VARCHAR) AS verdict,
            array_to_string(list_sort(list(DISTINCT listener_port)), ', ') AS ports,
            sum(n) AS count, min(first_seen) AS first_seen, max(last_seen) AS last_seen
        FROM _g WHERE verdict IN ('refused-name', 'refused-source')
        GROUP BY sni, source_ip, level, verdict ORDER BY count DESC, name, source, level, verdict""")
    return refused_frame(out)


def refused_frame(out: "pd.DataFrame") -> "pd.DataFrame":
    """The refused table's types and order from the rows of any engine (DuckDB here, KQL in `monitor`)."""
    import pandas as pd

    out = out.copy()
    out["count"] = out["count"].astype("int64")
    out["verdict"] = pd.Categorical(out["verdict"].astype(str), categories=VERDICTS)
    for c in ("name", "source", "level", "ports"):
        out[c] = out[c].astype("str")
    for c in ("first_seen", "last_seen"):
        out[c] = _utc_ms(out[c])
    out = out.sort_values(["count", "name", "source", "level", "verdict"], ascending=[False, True, True, True, True],
                          ignore_index=True, kind="stable")
    return out[REFUSED_COLUMNS]


# ----------------------------------------------------------------------------------------------- coverage
def coverage(data, allowlist) -> "pd.DataFrame":
    """Every allow-list entry with the connections that used it (allowed or upstream failure), the refused-source
    attempts on it, the levels where it was used and the last use. Unused entries have `used` False."""
    import pandas as pd

    t = _tab(data)
    base = pd.DataFrame(allowlist.rows(), columns=["host", "ports", "group", "purpose"])[["host", "ports", "group"]]
    used = t.df("""SELECT entry AS host,
            coalesce(sum(n) FILTER (WHERE verdict IN ('allowed', 'upstream-failure')), 0) AS connections,
            coalesce(sum(n) FILTER (WHERE verdict = 'refused-source'), 0) AS refused_source,
            array_to_string(list_sort(list(DISTINCT level) FILTER (WHERE verdict IN ('allowed', 'upstream-failure'))),
                            ', ') AS levels,
            max(last_seen) FILTER (WHERE verdict IN ('allowed', 'upstream-failure')) AS last_used
        FROM _g WHERE entry <> '' GROUP BY entry""")
    out = base.merge(used, on="host", how="left")
    for c in ("connections", "refused_source"):
        out[c] = out[c].fillna(0).astype("int64")
    out["levels"] = out["levels"].fillna("").astype(str)
    out["last_used"] = _utc_ms(out["last_used"])
    out["used"] = out["connections"] > 0
    return out.sort_values(["used", "connections", "host"], ascending=[True, False, True],
                           ignore_index=True)[COVERAGE_COLUMNS]


def unused_entries(cov: "pd.DataFrame") -> "pd.DataFrame":
    """Entries no connection used: candidates to remove from the site's allow list."""
    return cov[~cov["used"]][["host", "ports", "group"]].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- sources
def _classify(site, level: str, ip: str, cache: Optional[dict] = None) -> str:
    cache = {} if cache is None else cache
    if level not in cache:
        try:
            cache[level] = site.served_networks(level)
        except KeyError:
            cache[level] = None
    nets = cache[level]
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "other"
    if nets is None:
        return "other"
    for name, ns in nets.items():
        if any(addr in n for n in ns):
            return name
    return "other"


_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = f"^{_OCTET}\\.{_OCTET}\\.{_OCTET}\\.{_OCTET}$"


def _source_classes(t: _Tab, site) -> str:
    """A table `_cls(level, source_ip, cls)`, one row per distinct pair, joined by key. Dotted-quad addresses are
    classed in SQL against each level's IPv4 networks as integer ranges (a scan from a million addresses stays
    quick); every other text goes through `_classify` in Python."""
    t.db.execute("CREATE OR REPLACE TEMP TABLE _cls (level VARCHAR, source_ip VARCHAR, cls VARCHAR)")
    cases = []
    for lv in site.proxy_levels(innermost_first=True) if site is not None else []:
        for cls, nets in site.served_networks(lv).items():
            for n in nets:
                if n.version == 4:
                    lo, hi = int(n.network_address), int(n.broadcast_address)
                    cases.append(f"WHEN level = '{lv.name}' AND v4 BETWEEN {lo} AND {hi} THEN '{cls}'")
    known = ", ".join(f"'{lv.name}'" for lv in site.proxy_levels(innermost_first=True)) if site is not None else ""
    v4 = ("CAST(split_part(source_ip, '.', 1) AS BIGINT) * 16777216 + CAST(split_part(source_ip, '.', 2) AS BIGINT)"
          " * 65536 + CAST(split_part(source_ip, '.', 3) AS BIGINT) * 256 + CAST(split_part(source_ip, '.', 4) AS "
          "BIGINT)")
    t.db.execute(f"""INSERT INTO _cls SELECT level, source_ip,
            CASE {' '.join(cases)} ELSE 'other' END FROM (
              SELECT DISTINCT level, source_ip, {v4} AS v4 FROM _g
              WHERE regexp_full_match(source_ip, '{_IPV4}') AND level IN ({known or "''"}))""")
    rest = t.rows("""SELECT DISTINCT level, source_ip FROM _g g WHERE NOT EXISTS (
                       SELECT 1 FROM _cls c WHERE c.level = g.level AND c.source_ip = g.source_ip)""")
    if rest:
        cache: dict = {}
        t.db.executemany("INSERT INTO _cls VALUES (?, ?, ?)", [[lv, ip, _classify(site, lv, ip, cache)]
                                                               for lv, ip in rest])
    return "_cls"


def source_class(data, site):
    """Per connection (in table order): where its source sits relative to its level (child proxy, child
    network, own network, pods, other)."""
    import pandas as pd

    t = _tab(data)
    _source_classes(t, site)
    rows = t.rows("SELECT k.cls FROM _conn c JOIN _cls k USING (level, source_ip) ORDER BY c.id")
    return pd.Categorical([r[0] for r in rows], categories=SOURCE_CLASSES)


# ----------------------------------------------------------------------------------------------- paths
def _links(t: _Tab, site, window_ms: int) -> list[str]:
    """The table `_next(id, next_id, hop_ms, exact, g, next_g)` of the hop join (`hops.link`) over the narrow rows
    and the groups in the window, built once per site and window."""
    if getattr(t, "_links_key", None) == (id(site), window_ms):
        return [lv.name for lv in site.proxy_levels(innermost_first=True)]
    t._links_key = (id(site), window_ms)
    return link(t.db, site, "_r", "_g", window_ms, each_slice=release_cache)


def _walk(steps: int, first: int, start: str = "") -> tuple[str, str]:
    """SQL that follows a chain of links: (LEFT JOINs, the path text). Link k is the link of the connection that
    link k-1 led to (link `first` is `start`'s; with `first` 2, `n1` is already in the query and carries the start
    `level`); `x{k}` is the group of link k's upper connection, which names its level."""
    joins = "".join((f" LEFT JOIN _next n{k} ON n{k}.id = {start if k == first else f'n{k - 1}.next_id'}"
                     if k >= first else "") + f" LEFT JOIN _groups x{k} ON x{k}.g = n{k}.next_g"
                    for k in range(1, steps + 1))
    origin = "s.level" if first == 1 else "n1.level"
    return joins, "concat_ws(' > ', " + ", ".join([origin] + [f"x{k}.level" for k in range(1, steps + 1)]) + ")"


def path_summary(data, site, window_ms: int = DEFAULT_WINDOW_MS) -> "pd.DataFrame":
    """Paths by path and outcome. A path starts at a connection no link points to and ends at the last link of its
    chain. Chains are followed through the links alone; a connection with no link in or out is a path of one
    level, counted from the groups (its count minus the linked connections of the group)."""
    import pandas as pd

    t = _tab(data)
    names = _links(t, site, window_ms)
    steps = max(0, len(names) - 1)
    joins, path = _walk(steps, 2)
    last_g = "coalesce(" + ", ".join(f"n{k}.next_g" for k in range(steps, 0, -1)) + ")"
    levels_in = _sql_list(names)
    middle_in = _sql_list(names[1:-1])      # levels both above and below a proxy: where chains go on
    parts = []
    if steps:
        # chains start at a link whose inner connection no link points to
        parts.append(f"""SELECT {path} AS path, e.verdict, e.level AS last_level, count(*) AS paths
            FROM (SELECT n.*, gs.level FROM _next n JOIN _groups gs ON gs.g = n.g
                  WHERE n.id NOT IN (SELECT next_id FROM _next WHERE next_g IN (
                                       SELECT g FROM _groups WHERE level IN ({middle_in})))) n1{joins}
            JOIN _groups e ON e.g = {last_g}
            WHERE n1.level IN ({levels_in}) GROUP BY ALL""")
    # connections on a chain, per group: inner ends plus outer ends, less those that are both (middle of a chain)
    middle = ("" if steps < 2 else
              " UNION ALL SELECT a.next_g AS g, -count(*) FROM _next a JOIN _next b ON b.id = a.next_id GROUP BY a.next_g")
    parts.append(f"""SELECT gr.level AS path, gr.verdict, gr.level AS last_level,
            sum(gr.n) - coalesce(sum(m.linked), 0) AS paths
        FROM _g gr LEFT JOIN (SELECT g, sum(c) AS linked FROM (
                SELECT g, count(*) AS c FROM _next GROUP BY g UNION ALL
                SELECT next_g, count(*) FROM _next GROUP BY next_g{middle}) GROUP BY g) m ON m.g = gr.g
        WHERE gr.level IN ({levels_in}) GROUP BY ALL""")
    out = t.df(f"""SELECT path, CAST(verdict AS VARCHAR) AS verdict,
            CASE WHEN verdict IN ('refused-name', 'refused-source') THEN last_level ELSE '' END AS refused_at,
            CAST(sum(paths) AS BIGINT) AS paths
        FROM ({' UNION ALL '.join(parts)}) WHERE paths > 0 GROUP BY ALL ORDER BY paths DESC, path, verdict""")
    if out.empty:
        return pd.DataFrame(columns=["path", "verdict", "refused_at", "paths"])
    return out


PATH_COLUMNS = ["start", "origin", "origin_level", "name", "port", "path", "verdict", "refused_at", "destination",
                "duration_ms", "bytes_in", "bytes_out"]


def paths(data, site, window_ms: int = DEFAULT_WINDOW_MS) -> "pd.DataFrame":
    """One row per end-to-end path: it starts at the innermost level that saw it (origin = the source there)
    and follows each connection to the one it caused at the level above. Hop latency = the upper connection's
    start minus the inner one's (ms resolution, as Envoy logs START_TIME)."""
    import pandas as pd

    t = _tab(data)
    names = _links(t, site, window_ms)
    full = t.full()
    hops = list(zip(names, names[1:]))
    steps = max(0, len(names) - 1)
    joins, path = _walk(steps, 1, "s.id")
    last = "coalesce(" + ", ".join([f"n{k}.next_id" for k in range(steps, 0, -1)] + ["s.id"]) + ")"
    hop_cols = []
    for a, b in hops:
        cases = " ".join(f"WHEN x{k}.level = '{b}' THEN n{k}.hop_ms" for k in range(1, steps + 1))
        hop_cols.append(f"CAST(CASE {cases} END AS DOUBLE) AS \"hop_ms_{a}_{b}\"")
    hop_names = [f"hop_ms_{a}_{b}" for a, b in hops]
    out = t.df(f"""SELECT s.time AS start, s.source_ip AS origin, s.level AS origin_level, s.sni AS name,
            s.listener_port AS port, {path} AS path, CAST(l.verdict AS VARCHAR) AS verdict,
            CASE WHEN l.verdict IN ('refused-name', 'refused-source') THEN l.level ELSE '' END AS refused_at,
            l.upstream_host AS destination, s.duration_ms, l.bytes_in, l.bytes_out
            {''.join(', ' + h for h in hop_cols)}
        FROM (SELECT * FROM {full} WHERE level IN ({_sql_list(names)})
              AND id NOT IN (SELECT next_id FROM _next)) s {joins}
        JOIN {full} l ON l.id = {last}
        ORDER BY s.time, s.id""")
    out["start"] = _utc_ms(out["start"])
    for c in ("origin", "name", "destination"):
        out[c] = out[c].astype(str).astype("category")
    out["origin_level"] = pd.Categorical(out["origin_level"].astype(str), categories=names)
    out["path"] = out["path"].astype("category")
    out["verdict"] = pd.Categorical(out["verdict"], categories=VERDICTS)
    out["refused_at"] = pd.Categorical(out["refused_at"], categories=[""] + names)
    out["port"] = out["port"].astype("int32")
    for c in ("duration_ms", "bytes_in", "bytes_out"):
        out[c] = out[c].astype("int64")
    return out[PATH_COLUMNS + hop_names]


def hop_latency(p) -> "pd.DataFrame":
    """Per hop: how many paths crossed it and the median / 95th percentile / max of its latency (ms)."""
    import numpy as np
    import pandas as pd

    rows = []
    for c in [c for c in p.columns if c.startswith("hop_ms_")]:
        s = p[c].dropna()
        rows.append({"hop": c[len("hop_ms_"):].replace("_", " > ", 1), "paths": int(len(s)),
                     "p50_ms": float(s.median()) if len(s) else np.nan,
                     "p95_ms": float(s.quantile(0.95)) if len(s) else np.nan,
                     "max_ms": float(s.max()) if len(s) else np.nan})
    return pd.DataFrame(rows, columns=["hop", "paths", "p50_ms", "p95_ms", "max_ms"])


def hop_latency_sql(data, site, window_ms: int = DEFAULT_WINDOW_MS) -> "pd.DataFrame":
    """`hop_latency` of the paths, computed in SQL."""
    import pandas as pd

    t = _tab(data)
    names = _links(t, site, window_ms)
    hops = list(zip(names, names[1:]))
    if not hops:
        return pd.DataFrame(columns=["hop", "paths", "p50_ms", "p95_ms", "max_ms"])
    # every link is one hop of exactly one path (links are one to one and only go outward), so the hops of the
    # paths are the links by upper level
    parts = [f"""SELECT '{a} > {b}' AS hop, count(hop_ms) AS paths, quantile_cont(CAST(hop_ms AS DOUBLE), 0.5) AS p50_ms,
                   quantile_cont(CAST(hop_ms AS DOUBLE), 0.95) AS p95_ms, CAST(max(hop_ms) AS DOUBLE) AS max_ms
                 FROM _next n JOIN _groups x ON x.g = n.next_g WHERE x.level = '{b}'""" for a, b in hops]
    out = t.df(" UNION ALL ".join(parts))
    out["paths"] = out["paths"].astype("int64")
    return out


# ----------------------------------------------------------------------------------------------- anomalies
def _probe_groups(t: _Tab, expected: Optional[Expected]) -> bool:
    """`_probe_g(g)`: the groups whose name and source a probe of the run used (their connections in the run's
    window are expected). False when the run sent no probes."""
    t.db.execute("CREATE OR REPLACE TEMP TABLE _probe_g (g UBIGINT)")
    if not expected:
        return False
    keep = []
    for g, ip, sni in t.rows("SELECT g, source_ip, lower(sni) FROM _g"):
        if sni not in expected.names:
            continue
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if any(a in n for n in expected.sources):
            keep.append([g])
    if keep:
        t.db.executemany("INSERT INTO _probe_g VALUES (?)", keep)
    return bool(keep)


def _ms(when) -> int:
    import pandas as pd

    return int(pd.Timestamp(when).value // 1_000_000)


def anomalies(data, site, allowlist=None, gap=None, since=None, until=None, expected: Optional[Expected] = None,
              checks: Optional["pd.DataFrame"] = None, window_ms: int = DEFAULT_WINDOW_MS) -> "pd.DataFrame":
    """Every anomaly, grouped (kind, level, source, name, expected) with count and first/last seen:

    - ``unexpected-source``: a source that is neither the level's child network, its own network nor its pods;
    - ``forwarded-unallowed``: a name without an allow-list entry that the child proxy forwarded (its own log
      has the connection whose upstream local address is this connection's source): it should have refused it;
    - ``child-workload-refused``: the same from the child's node address without such proof: the child level's
      own workloads (agents, pods SNATed to the node address) tried it and this proxy refused it (not a failure);
    - ``no-sni`` / ``non-tls``: a connection without a server name; non-TLS when Envoy names a TLS error;
    - ``log-gap``: no record in a level's log for longer than `gap` (also from `since` and up to `until`);
    - ``no-records``: a proxy level whose log holds nothing;
    - the parser's log checks (``level-mismatch``, ``future-time``, ``time-backwards``) when `checks` is given.

    Connections of `expected` (the run's probe traffic) are grouped apart with ``expected`` True.
    """
    import pandas as pd

    t = _tab(data)
    gap = _td(DEFAULT_GAP_MINUTES) if gap is None else gap
    _source_classes(t, site)
    probes = _probe_groups(t, expected)
    nets = {lv.name: site.served_networks(lv) for lv in site.proxy_levels(innermost_first=True)}
    child_of = {lv.name: site.child(lv) for lv in site.proxy_levels(innermost_first=True)}
    _links(t, site, window_ms)
    allow = "true" if allowlist is not None else "false"
    # the groups that hold anomalies, and their kind ("child": a child proxy's connection without an entry, split
    # below by whether the child's log proves it forwarded it)
    t.db.execute(f"""CREATE OR REPLACE TEMP TABLE _cand AS
        WITH c AS (SELECT x.g, x.level, x.source_ip, x.sni, x.entry, x.tls_error, k.cls
                   FROM _g x JOIN _cls k USING (level, source_ip))
        SELECT g, level, source_ip, sni, 'unexpected-source' AS kind FROM c WHERE cls = 'other'
        UNION ALL SELECT g, level, source_ip, sni, 'child' FROM c WHERE {allow} AND cls = 'child proxy' AND entry = ''
        UNION ALL SELECT g, level, source_ip, sni, 'non-tls' FROM c WHERE sni = '' AND tls_error
        UNION ALL SELECT g, level, source_ip, sni, 'no-sni' FROM c WHERE sni = '' AND NOT tls_error""")
    exp = "false"
    if probes:
        exp = (f"(r.g IN (SELECT g FROM _probe_g) AND r.t BETWEEN {_ms(expected.start)} AND {_ms(expected.end)})")
    rows = t.df(f"""WITH r AS (SELECT id AS rid, g, t FROM _r WHERE g IN (SELECT g FROM _cand)),
             a AS (SELECT r.g, r.rid IN (SELECT next_id FROM _next WHERE exact
                                         AND next_g IN (SELECT g FROM _cand WHERE kind = 'child')) AS fwd,
                          {exp} AS expected,
                          count(*) AS n, min(r.t) AS t0, max(r.t) AS t1 FROM r GROUP BY ALL)
        SELECT CASE WHEN c.kind <> 'child' THEN c.kind WHEN a.fwd THEN 'forwarded-unallowed'
                    ELSE 'child-workload-refused' END AS kind,
               c.level, c.source_ip AS source, c.sni AS name, sum(a.n) AS count,
               make_timestamptz(min(a.t0) * 1000) AS first_seen, make_timestamptz(max(a.t1) * 1000) AS last_seen,
               a.expected
        FROM _cand c JOIN a USING (g) GROUP BY ALL ORDER BY kind, level, source, name, expected""")

    served = {lv: ", ".join(str(x) for k in ("own network", "child network", "pods") for x in n.get(k, []))
              for lv, n in nets.items()}

    def detail(r) -> str:
        child = child_of.get(r.level)
        if r.kind == "unexpected-source":
            return f"{r.source} is outside the networks {r.level} serves ({served.get(r.level, '')})"
        if r.kind == "forwarded-unallowed":
            return (f"{r.name or '(no name)'} came through the child proxy {r.source} ({child.name if child else '?'}'s "
                    f"log shows it forwarded the connection), which should have refused it (no allow-list entry)")
        if r.kind == "child-workload-refused":
            return (f"{r.name or '(no name)'} from {r.source}, {child.name if child else 'the child level'}'s node "
                    f"address, has no allow-list entry and was refused here; the child proxy's log shows no "
                    f"connection it forwarded as this one, so it is a refused attempt by that level's own "
                    f"workloads (agents, or pods whose traffic is SNATed to the node address)")
        if r.kind == "non-tls":
            return "bytes that are not a TLS ClientHello"
        return "a TLS ClientHello without a server name"

    from types import SimpleNamespace

    cols = {c: rows[c].tolist() for c in ("kind", "level", "source", "name")}     # plain lists: fast to walk
    rows["detail"] = [detail(SimpleNamespace(kind=k, level=lv, source=src, name=nm))
                      for k, lv, src, nm in zip(cols["kind"], cols["level"], cols["source"], cols["name"])]
    parts = [rows, _gaps(t, site, nets, gap, since, until)]
    if checks is not None and len(checks):
        parts.append(pd.DataFrame({"kind": checks["check"], "level": checks["level"], "source": checks["file"],
                                   "name": "", "count": checks["lines"], "first_seen": pd.NaT, "last_seen": pd.NaT,
                                   "expected": False,
                                   "detail": [f"{n} line(s) from line {f}: {s}" for n, f, s in
                                              zip(checks["lines"], checks["first_line"], checks["sample"])]}))
    parts = [p for p in parts if not p.empty]
    if not parts:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in ANOMALY_COLUMNS})
        out["count"] = out["count"].astype("int64")
        out["expected"] = out["expected"].astype(bool)
        return out
    out = pd.concat([p[ANOMALY_COLUMNS] for p in parts], ignore_index=True)
    out["count"] = out["count"].astype("int64")
    out["expected"] = out["expected"].astype(bool)
    for c in ("first_seen", "last_seen"):
        out[c] = _utc_ms(out[c])
    return out[ANOMALY_COLUMNS]


def _gaps(t: _Tab, site, nets: dict, gap, since, until) -> "pd.DataFrame":
    """``log-gap`` and ``no-records`` rows. Times are put in buckets as wide as the gap: no gap longer than that
    fits inside a bucket, so the gaps are exactly those between one non-empty bucket's last time and the next
    one's first (also from `since` and up to `until`)."""
    import pandas as pd

    out = []
    limit_ms = int(gap / _td(1) * 60_000)
    width = max(1, limit_ms)
    have = {r[0] for r in t.rows("SELECT DISTINCT level FROM _g")}
    for lv in _levels_in(t, site):
        if lv not in have and site is not None and lv in nets:
            out.append({"kind": "no-records", "level": lv, "source": "", "name": "", "count": 0,
                        "first_seen": since, "last_seen": until, "expected": False,
                        "detail": f"{lv}'s proxy log holds no record"})
    if have:
        edges = [_ms(x) for x in (since, until) if x is not None]
        extra = "".join(f" UNION ALL SELECT level, {e} // {width}, {e}, {e} FROM (SELECT DISTINCT level FROM _g)"
                        for e in edges)
        for lv, a, b in t.rows(f"""WITH k AS (SELECT level, t // {width} AS k, min(t) AS lo, max(t) AS hi FROM _conn
                                             GROUP BY ALL{extra}),
                                 s AS (SELECT level, min(lo) AS lo, max(hi) AS hi, k FROM k GROUP BY level, k)
                                 SELECT level, p, lo FROM (SELECT level, lo, lag(hi) OVER (PARTITION BY level ORDER BY k)
                                                           AS p FROM s) WHERE lo - p > ? ORDER BY level, p""",
                               [limit_ms]):
            out.append({"kind": "log-gap", "level": lv, "source": "", "name": "", "count": 0,
                        "first_seen": pd.Timestamp(int(a), unit="ms", tz="UTC"),
                        "last_seen": pd.Timestamp(int(b), unit="ms", tz="UTC"), "expected": False,
                        "detail": f"no record for {pd.Timedelta(milliseconds=int(b - a))} (threshold {gap})"})
    return pd.DataFrame(out, columns=ANOMALY_COLUMNS)


def problems(a: "pd.DataFrame") -> "pd.DataFrame":
    """The anomalies that fail an audit: not expected (probe traffic) and not informational."""
    if a.empty:
        return a
    return a[~a["expected"].astype(bool) & ~a["kind"].isin(INFO_KINDS)]


def anomaly_summary(a: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    if a.empty:
        return pd.DataFrame(columns=["kind", "level", "expected", "groups", "connections"])
    return (a.groupby(["kind", "level", "expected"], sort=True).agg(groups=("kind", "size"),
                                                                   connections=("count", "sum")).reset_index())


# ----------------------------------------------------------------------------------------------- all
def all_findings(data, site, allowlist, gap=None, rows: bool = True) -> dict:
    """Every finding. With `rows` False no per-path table is built (its summary and hop latency come back)."""
    t = _tab(data)
    cov = coverage(t, allowlist)
    out = {"per_level": per_level(t, site), "refused": refused(t), "coverage": cov,
           "unused_entries": unused_entries(cov)}
    if rows:
        p = paths(t, site)
        out.update(paths=p, hop_latency=hop_latency(p))
    else:
        out.update(path_summary=path_summary(t, site), hop_latency=hop_latency_sql(t, site))
    out["anomalies"] = anomalies(t, site, allowlist, gap)
    return out
