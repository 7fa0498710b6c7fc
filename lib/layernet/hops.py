"""Hops: what a proxy did with a connection (its verdict) and which connection it caused at the proxy above.

`verdict_of` reads one access-log record's filter chain and response flags. `link` is THE hop join: each
connection that a proxy passed on (allowed, or accepted with an upstream failure) is joined to the one it caused
at the parent level. Exact on the inner proxy's upstream local address (Envoy's "ip:port" text, hashed) when the
log has it, matched against the upper connection's source; otherwise the first unused upper connection with the
same name and port that starts within `window_ms` after the inner one. An address the inner proxy reuses (a busy
proxy cycles its ports, or a port comes back later) is only compared with its neighbours in time, and where a
connection still meets two partners the nearest in time wins, one to one.

Both the audit (a million rows, in its own DuckDB tables) and the stages' crossings (a stage's records) call
`link`: they hand it two relations of a DuckDB connection,

    rows    (id, t, g, sk, uk): one row per connection: its id, start time (epoch ms), its group, the hash of its
            source "ip:port" text and of its upstream local address (NULL when the record has none);
    groups  (g, level, source_ip, sni, listener_port, verdict): the values of each group (records with the same
            values may share one group; the crossings give every record its own);

and read the links from the temporary table `_next(id, next_id, hop_ms, exact, g, next_g)`.
"""
from __future__ import annotations

from typing import Callable, Optional

from layernet.render.envoy import CHAIN_REFUSED_SOURCE

VERDICTS = ["allowed", "refused-name", "refused-source", "upstream-failure"]
# Envoy response flags that mean the proxy accepted the connection but could not reach the upstream
UPSTREAM_FAILURE_FLAGS = frozenset({"UH", "UF", "UO", "URX", "UT", "NC", "DF", "UMSDR", "DO"})
NO_CHAIN_FLAG = "NR"
DEFAULT_WINDOW_MS = 5000        # the inner proxy's connect timeout: the upper connection starts within it
_PASSED = "('allowed', 'upstream-failure')"
# the join takes the addresses in slices of about this many rows (at most SLICES_MAX slices)
SLICE_ROWS, SLICES_MAX = 600_000, 8


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


def _greedy(inner: list, outer: list, window_ms: int) -> list[tuple[int, int]]:
    """(inner id, outer id) pairs: each inner connection takes the earliest unused outer connection with the same
    key that starts no earlier than it and within the window. Rows are (key, time ms, id), sorted."""
    out, j, nr = [], 0, len(outer)
    for k, tt, i in inner:
        while j < nr and (outer[j][0] < k or (outer[j][0] == k and outer[j][1] < tt)):
            j += 1
        if j < nr and outer[j][0] == k and outer[j][1] - tt <= window_ms:
            out.append((i, outer[j][2]))
            j += 1
    return out


def link(db, site, rows: str, groups: str, window_ms: int = DEFAULT_WINDOW_MS,
         each_slice: Optional[Callable] = None) -> list[str]:
    """Fill `_next(id, next_id, hop_ms, exact, g, next_g)`: each inner connection and the one it caused at the
    level above (ids from `rows`; g and next_g their groups, which name their levels). Returns the proxy levels,
    innermost first. `each_slice(db)` runs after each slice of the exact join (the audit hands back DuckDB's
    buffers there)."""
    levels = site.proxy_levels(innermost_first=True)
    names = [lv.name for lv in levels]
    conn = f"(SELECT r.id, r.t, r.uk, gr.level, gr.source_ip, gr.sni, gr.listener_port, gr.verdict " \
           f"FROM {rows} r JOIN {groups} gr ON gr.g = r.g)"
    db.execute("""CREATE OR REPLACE TEMP TABLE _next (id BIGINT, next_id BIGINT, hop_ms INTEGER, exact BOOLEAN,
                  g UBIGINT, next_g UBIGINT)""")
    for inner, outer in zip(levels, levels[1:]):
        parent = site.parent(inner)
        if parent is None or parent.name != outer.name:
            continue
        # equal address keys in the same time bucket (as wide as the window): an address reused all day (a busy
        # proxy cycles its ports) is compared only with its near neighbours in time. Each inner row is tried in
        # its bucket and the next, the outer row in the bucket of its time + 1 s: every pair within the window
        # meets exactly once.
        width = window_ms + 1000
        n = int(db.execute(f"SELECT count(*) FROM {rows}").fetchall()[0][0])
        slices = max(1, min(SLICES_MAX, -(-n // SLICE_ROWS)))
        for k in range(slices):            # a slice of the addresses at a time: a smaller hash table
            db.execute(f"""INSERT INTO _next
                WITH i AS (SELECT id, t, uk, g, unnest([t // {width}, t // {width} + 1]) AS b FROM {rows}
                             WHERE uk IS NOT NULL AND uk % {slices} = {k}
                               AND g IN (SELECT g FROM {groups} WHERE level = ? AND verdict IN {_PASSED})),
                     o AS (SELECT id, t, sk, g, (t + 1000) // {width} AS b FROM {rows} WHERE sk % {slices} = {k}
                             AND g IN (SELECT g FROM {groups} WHERE level = ? AND source_ip = ?))
                SELECT i.id, o.id, o.t - i.t, true, i.g, o.g FROM i JOIN o ON i.uk = o.sk AND i.b = o.b
                WHERE o.t - i.t BETWEEN -1000 AND ?""", [inner.name, outer.name, str(inner.node_ip), window_ms])
            if each_slice is not None:
                each_slice(db)
        # an address reused within the window gives one connection two partners: among the links that share a
        # connection, the nearest in time, one to one (a connection is inner or outer of one pair of levels only)
        if _shared(db):
            db.execute("""CREATE OR REPLACE TEMP TABLE _dup AS SELECT * FROM _next
                          WHERE id IN (SELECT id FROM _shared_id) OR next_id IN (SELECT next_id FROM _shared_next)""")
            db.execute("DELETE FROM _next WHERE id IN (SELECT id FROM _dup) OR next_id IN (SELECT next_id FROM _dup)")
            # each inner connection its nearest partner, then each upper connection the nearest of those left
            db.execute("""INSERT INTO _next SELECT id, next_id, hop_ms, exact, g, next_g FROM (
                  SELECT * FROM _dup QUALIFY row_number() OVER (PARTITION BY id ORDER BY abs(hop_ms), next_id) = 1)
                QUALIFY row_number() OVER (PARTITION BY next_id ORDER BY abs(hop_ms), id) = 1""")
            db.execute("DROP TABLE _dup")
        # without the upstream local address: by name, port and time
        inner_rows = db.execute(f"""SELECT sni || ':' || CAST(listener_port AS VARCHAR), t, id FROM {conn}
            WHERE level = ? AND uk IS NULL AND verdict IN {_PASSED} ORDER BY 1, 2, 3""", [inner.name]).fetchall()
        if not inner_rows:
            continue
        outer_rows = db.execute(f"""SELECT sni || ':' || CAST(listener_port AS VARCHAR), t, id FROM {conn}
            WHERE level = ? AND source_ip = ? AND id NOT IN (SELECT next_id FROM _next)
            ORDER BY 1, 2, 3""", [outer.name, str(inner.node_ip)]).fetchall()
        pairs = _greedy(inner_rows, outer_rows, window_ms)
        if pairs:
            db.execute("CREATE OR REPLACE TEMP TABLE _greedy (id BIGINT, next_id BIGINT)")
            db.executemany("INSERT INTO _greedy VALUES (?, ?)", [[i, o] for i, o in pairs])
            db.execute(f"""INSERT INTO _next SELECT p.id, p.next_id, o.t - i.t, false, i.g, o.g
                FROM _greedy p JOIN {rows} i ON i.id = p.id JOIN {rows} o ON o.id = p.next_id""")
    return names


def _shared(db) -> bool:
    """Whether a connection occurs in more than one link; if so `_shared_id(id)` and `_shared_next(next_id)` list
    them. Counted in numpy over the two columns (a sort each), lighter than two hash aggregates over every link."""
    import numpy as np
    import pyarrow as pa

    found = False
    for c, name in (("id", "_shared_id"), ("next_id", "_shared_next")):
        v = np.asarray(db.sql(f"SELECT {c} FROM _next").fetchnumpy()[c], dtype=np.int64)
        v.sort()                                                   # in place: one column at a time
        rep = np.unique(v[1:][v[1:] == v[:-1]])
        del v
        found |= bool(len(rep))
        db.register("_arrow", pa.table({c: rep}))
        db.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _arrow")
        db.unregister("_arrow")
    return found
