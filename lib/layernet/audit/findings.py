"""Findings: DataFrames computed from the connection table (`parse.parse_logs(...).connections`).

- `per_level`     per proxy level: connections by verdict, bytes, distinct sources and names, first/last;
- `refused`       refused attempts grouped by name, source, level and verdict, with first/last seen and count;
- `coverage`      every allow-list entry: connections that used it, last use; `unused_entries` lists the rest;
- `paths`         end-to-end: an inner level's connection joined to the one it caused at the level above;
- `anomalies`     sources outside a level's networks, names an inner proxy should have refused, no SNI /
                  not TLS, gaps in a level's log and levels that logged nothing.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

import numpy as np
import pandas as pd

from layernet.audit.parse import VERDICTS, ms_ints

REFUSED = ("refused-name", "refused-source")
PER_LEVEL_COLUMNS = ["level", "connections", "allowed", "refused_name", "refused_source", "upstream_failure",
                     "bytes_in", "bytes_out", "distinct_sources", "distinct_names", "first_seen", "last_seen"]
REFUSED_COLUMNS = ["name", "source", "level", "verdict", "ports", "count", "first_seen", "last_seen"]
COVERAGE_COLUMNS = ["host", "ports", "group", "connections", "refused_source", "levels", "last_used", "used"]
ANOMALY_COLUMNS = ["kind", "level", "source", "name", "count", "first_seen", "last_seen", "detail"]
SOURCE_CLASSES = ["child proxy", "child network", "own network", "pods", "other"]
DEFAULT_GAP = pd.Timedelta(minutes=15)
DEFAULT_JOIN_WINDOW_MS = 5000   # the inner proxy's connect timeout: the upper connection starts within it


def proxy_levels(site) -> list:
    """Proxy levels from the innermost outward (e.g. level3, level4)."""
    return [lv for lv in reversed(site.chain) if lv.proxy]


def _levels_in(df: pd.DataFrame, site=None) -> list[str]:
    names = [lv.name for lv in proxy_levels(site)] if site is not None else []
    seen = [str(x) for x in df["level"].unique()] if len(df) else []
    return names + sorted(x for x in seen if x not in names)


# ----------------------------------------------------------------------------------------------- per level
def per_level(df: pd.DataFrame, site=None) -> pd.DataFrame:
    """One row per level (every proxy level of the site, also one that logged nothing)."""
    levels = _levels_in(df, site)
    if not levels:
        return pd.DataFrame(columns=PER_LEVEL_COLUMNS)
    lv = df["level"].astype(pd.CategoricalDtype(levels))
    lc = lv.cat.codes.to_numpy().astype(np.int64)
    vc = df["verdict"].cat.codes.to_numpy().astype(np.int64)
    counts = pd.DataFrame(np.bincount(lc * len(VERDICTS) + vc, minlength=len(levels) * len(VERDICTS))
                          .reshape(len(levels), len(VERDICTS)), index=levels, columns=VERDICTS)
    g = df.groupby(lv, observed=False)
    named = np.asarray(df["sni"] != "")
    out = pd.DataFrame({
        "level": levels,
        "connections": counts.sum(axis=1).to_numpy(),
        "allowed": counts["allowed"].to_numpy(),
        "refused_name": counts["refused-name"].to_numpy(),
        "refused_source": counts["refused-source"].to_numpy(),
        "upstream_failure": counts["upstream-failure"].to_numpy(),
        "bytes_in": g["bytes_in"].sum().reindex(levels, fill_value=0).to_numpy(),
        "bytes_out": g["bytes_out"].sum().reindex(levels, fill_value=0).to_numpy(),
        "distinct_sources": g["source_ip"].nunique().reindex(levels, fill_value=0).to_numpy(),
        "distinct_names": df[named].groupby(lv[named], observed=False)["sni"].nunique().reindex(levels, fill_value=0).to_numpy(),
        "first_seen": g["time"].min().reindex(levels).to_numpy(),
        "last_seen": g["time"].max().reindex(levels).to_numpy(),
    })
    for c in PER_LEVEL_COLUMNS[1:10]:
        out[c] = out[c].astype("int64")
    return out[PER_LEVEL_COLUMNS]


# ----------------------------------------------------------------------------------------------- refused
def refused(df: pd.DataFrame) -> pd.DataFrame:
    """Refused attempts by name (SNI, "" when none), source address, level and verdict; most frequent first."""
    r = df[df["verdict"].isin(REFUSED)]
    if r.empty:
        return pd.DataFrame(columns=REFUSED_COLUMNS)
    keys = ["sni", "source_ip", "level", "verdict"]
    g = r.groupby(keys, observed=True, sort=False)
    out = g.agg(count=("time", "size"), first_seen=("time", "min"), last_seen=("time", "max")).reset_index()
    ports = g["listener_port"].unique().reset_index(drop=True)
    out["ports"] = [", ".join(str(p) for p in sorted(v)) for v in ports]
    out = out.rename(columns={"sni": "name", "source_ip": "source"})
    for c in ("name", "source", "level", "verdict"):
        out[c] = out[c].astype(str)
    out = out.sort_values(["count", "name", "source", "level"], ascending=[False, True, True, True], ignore_index=True)
    return out[REFUSED_COLUMNS]


# ----------------------------------------------------------------------------------------------- coverage
def coverage(df: pd.DataFrame, allowlist) -> pd.DataFrame:
    """Every allow-list entry with the connections that used it (allowed or upstream failure), the refused-source
    attempts on it, the levels where it was used and the last use. Unused entries have `used` False."""
    rows = allowlist.rows()
    base = pd.DataFrame(rows, columns=["host", "ports", "group", "purpose"])[["host", "ports", "group"]]
    used = df[np.asarray(df["verdict"].isin(["allowed", "upstream-failure"])) & np.asarray(df["entry"] != "")]
    g = used.groupby("entry", observed=True)
    conn = g.size()
    last = g["time"].max()
    levels = g["level"].unique().map(lambda v: ", ".join(sorted(str(x) for x in v)))
    rs = df[np.asarray(df["verdict"] == "refused-source") & np.asarray(df["entry"] != "")]
    rsc = rs.groupby("entry", observed=True).size()
    base["connections"] = base["host"].map(conn).fillna(0).astype("int64")
    base["refused_source"] = base["host"].map(rsc).fillna(0).astype("int64")
    base["levels"] = [levels.get(h, "") for h in base["host"]]
    base["last_used"] = pd.Series([last.get(h, pd.NaT) for h in base["host"]], dtype="datetime64[ms, UTC]")
    base["used"] = base["connections"] > 0
    return base.sort_values(["used", "connections", "host"], ascending=[True, False, True], ignore_index=True)[COVERAGE_COLUMNS]


def unused_entries(cov: pd.DataFrame) -> pd.DataFrame:
    """Entries no connection used: candidates to remove from the site's allow list."""
    return cov[~cov["used"]][["host", "ports", "group"]].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- sources
def _networks(site, level) -> dict[str, list]:
    child = site.child(level)
    return {
        "child proxy": [ipaddress.ip_network(f"{child.node_ip}/32")] if child is not None and child.proxy else [],
        "child network": [child.network] if child is not None else [],
        "own network": [level.network],
        "pods": [level.pod_cidr],
    }


def source_class(df: pd.DataFrame, site) -> pd.Categorical:
    """Per connection: where its source sits relative to its level (child proxy, child network, own network,
    pods, other). Computed once per distinct (level, source address)."""
    if df.empty:
        return pd.Categorical([], categories=SOURCE_CLASSES)
    lv, src = df["level"].cat, df["source_ip"].cat
    key = lv.codes.to_numpy().astype(np.int64) * (len(src.categories) + 1) + src.codes.to_numpy()
    codes, uniques = pd.factorize(key)
    nets_by_level = {}
    out = []
    for u in uniques:
        lvname = str(lv.categories[int(u) // (len(src.categories) + 1)])
        ip = str(src.categories[int(u) % (len(src.categories) + 1)])
        if lvname not in nets_by_level:
            try:
                nets_by_level[lvname] = _networks(site, site.level(lvname))
            except KeyError:
                nets_by_level[lvname] = {}
        cls = "other"
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            addr = None
        if addr is not None:
            for name, nets in nets_by_level[lvname].items():
                if any(addr in net for net in nets):
                    cls = name
                    break
        out.append(SOURCE_CLASSES.index(cls))
    return pd.Categorical.from_codes(np.asarray(out, dtype=np.int8)[codes], categories=SOURCE_CLASSES)


# ----------------------------------------------------------------------------------------------- paths
def _ms(df: pd.DataFrame) -> np.ndarray:
    return ms_ints(df["time"])


def _take(col: pd.Series, idx: np.ndarray) -> pd.Categorical:
    """Categorical values of `col` at positions `idx` (-1 gives "")."""
    cat = col.cat
    codes = cat.codes.to_numpy()
    cats = list(cat.categories)
    if "" not in cats:
        cats.append("")
    empty = cats.index("")
    out = np.where(idx >= 0, codes[np.maximum(idx, 0)], empty)
    out = np.where(out < 0, empty, out)
    return pd.Categorical.from_codes(out, categories=cats)


def _link(df: pd.DataFrame, inner: np.ndarray, outer: np.ndarray, window_ms: int) -> np.ndarray:
    """Positions: for each inner row (positions `inner`) the outer row it caused, -1 when none; one to one.
    Exact on the inner proxy's upstream local address when the log has it; otherwise the first unused outer
    connection with the same name and port that starts within `window_ms` after the inner one."""
    res = np.full(len(inner), -1, dtype=np.int64)
    if not len(inner) or not len(outer):
        return res
    local = df["upstream_local"].to_numpy(dtype=object)
    has_local = local[inner] != ""
    if has_local.any():
        key_out = pd.Series(outer, index=(df["source_ip"].astype(str).to_numpy()[outer] + ":"
                                          + df["source_port"].to_numpy()[outer].astype(str)))
        key_out = key_out[~key_out.index.duplicated()]
        hit = key_out.reindex(local[inner][has_local]).to_numpy()
        res[np.flatnonzero(has_local)] = np.where(pd.isna(hit), -1, hit).astype(np.int64)
        used = set(res[res >= 0].tolist())
        outer = np.array([o for o in outer if o not in used], dtype=np.int64)
    todo = np.flatnonzero(~has_local)
    if not len(todo) or not len(outer):
        return res
    t = _ms(df)
    key = df["sni"].cat.codes.to_numpy().astype(np.int64) * 65536 + df["listener_port"].to_numpy(np.int64)
    lo = np.lexsort((t[inner[todo]], key[inner[todo]]))
    ro = np.lexsort((t[outer], key[outer]))
    lk, lt, li = key[inner[todo]][lo].tolist(), t[inner[todo]][lo].tolist(), todo[lo].tolist()
    rk, rt, rj = key[outer][ro].tolist(), t[outer][ro].tolist(), outer[ro].tolist()
    # first come, first served: each inner connection takes the earliest unused upper connection with the same
    # key that starts no earlier than it and within the window (optimal for equal-width windows)
    j, nr = 0, len(rk)
    for k, tt, i in zip(lk, lt, li):
        while j < nr and (rk[j] < k or (rk[j] == k and rt[j] < tt)):
            j += 1
        if j < nr and rk[j] == k and rt[j] - tt <= window_ms:
            res[i] = rj[j]
            j += 1
    return res


def paths(df: pd.DataFrame, site, window_ms: int = DEFAULT_JOIN_WINDOW_MS) -> pd.DataFrame:
    """One row per end-to-end path: it starts at the innermost level that saw it (origin = the source there)
    and follows each connection to the one it caused at the level above (same name and port, from the inner
    proxy's node IP, starting within `window_ms`). Hop latency = the upper connection's start minus the inner
    one's (ms resolution, as Envoy logs START_TIME)."""
    levels = proxy_levels(site)
    names = [lv.name for lv in levels]
    hop_names = [f"hop_ms_{a}_{b}" for a, b in zip(names, names[1:])]
    columns = ["start", "origin", "origin_level", "name", "port", "path", "verdict", "refused_at", "destination",
               "duration_ms", "bytes_in", "bytes_out"] + hop_names
    n = len(df)
    if not n or not names:
        return pd.DataFrame(columns=columns)
    df = df.reset_index(drop=True)
    t = _ms(df)
    vcodes = df["verdict"].cat.codes.to_numpy()
    refused_codes = [VERDICTS.index(v) for v in REFUSED]
    passing = np.isin(vcodes, [VERDICTS.index("allowed"), VERDICTS.index("upstream-failure")])
    at = {lv: np.asarray(df["level"] == lv) for lv in names}
    nxt = {}
    continued = np.zeros(n, dtype=bool)
    for inner, outer in zip(levels, levels[1:]):
        parent = site.parent(inner)
        if parent is None or parent.name != outer.name:
            continue
        a = np.flatnonzero(at[inner.name] & passing)
        b = np.flatnonzero(at[outer.name] & np.asarray(df["source_ip"] == str(inner.node_ip)))
        link = np.full(n, -1, dtype=np.int64)
        link[a] = _link(df, a, b, window_ms)
        nxt[inner.name] = link
        continued[link[link >= 0]] = True
    frames = []
    for pos, lv in enumerate(names):
        start = np.flatnonzero(at[lv] & ~continued)
        if not len(start):
            continue
        cur, last = start.copy(), start.copy()
        hops = np.ones(len(start), dtype=np.int64)
        verdict = vcodes[start].copy()
        refused_at = np.where(np.isin(verdict, refused_codes), pos, -1)
        hop_cols = {}
        for k in range(pos + 1, len(names)):
            link = nxt.get(names[k - 1])
            if link is None:
                break
            up = np.where(cur >= 0, link[np.maximum(cur, 0)], -1)
            has = up >= 0
            hop_cols[f"hop_ms_{names[k - 1]}_{names[k]}"] = np.where(has, t[np.maximum(up, 0)] - t[np.maximum(cur, 0)],
                                                                      np.nan)
            v_up = vcodes[np.maximum(up, 0)]
            verdict = np.where(has, v_up, verdict)
            refused_at = np.where(has & np.isin(v_up, refused_codes) & (refused_at < 0), k, refused_at)
            hops += has
            last = np.where(has, up, last)
            cur = up
        path_names = [" > ".join(names[pos:pos + h]) for h in range(1, len(names) - pos + 1)]
        at_names = [""] + names
        frame = {
            "start": t[start], "origin": _take(df["source_ip"], start),
            "origin_level": pd.Categorical([lv] * len(start), categories=names),
            "name": _take(df["sni"], start), "port": df["listener_port"].to_numpy()[start],
            "path": pd.Categorical.from_codes(hops - 1, categories=path_names),
            "verdict": pd.Categorical.from_codes(verdict, categories=VERDICTS),
            "refused_at": pd.Categorical.from_codes(refused_at + 1, categories=at_names),
            "destination": _take(df["upstream_host"], last),
            "duration_ms": df["duration_ms"].to_numpy()[start],
            "bytes_in": df["bytes_in"].to_numpy()[last], "bytes_out": df["bytes_out"].to_numpy()[last],
        }
        frame.update(hop_cols)
        frames.append(pd.DataFrame(frame))
    out = pd.concat(frames, ignore_index=True)
    for c in ("origin", "name", "destination", "path", "origin_level", "refused_at"):
        out[c] = out[c].astype("category")
    for c in hop_names:
        if c not in out:
            out[c] = np.nan
    order = np.argsort(out["start"].to_numpy(), kind="stable")
    out = out.take(order).reset_index(drop=True)
    out["start"] = pd.to_datetime(out["start"].to_numpy(), unit="ms", utc=True).astype("datetime64[ms, UTC]")
    return out[columns]


def hop_latency(p: pd.DataFrame) -> pd.DataFrame:
    """Per hop: how many paths crossed it and the median / 95th percentile / max of its latency (ms)."""
    rows = []
    for c in [c for c in p.columns if c.startswith("hop_ms_")]:
        s = p[c].dropna()
        rows.append({"hop": c[len("hop_ms_"):].replace("_", " > ", 1), "paths": int(len(s)),
                     "p50_ms": float(s.median()) if len(s) else np.nan,
                     "p95_ms": float(s.quantile(0.95)) if len(s) else np.nan,
                     "max_ms": float(s.max()) if len(s) else np.nan})
    return pd.DataFrame(rows, columns=["hop", "paths", "p50_ms", "p95_ms", "max_ms"])


# ----------------------------------------------------------------------------------------------- anomalies
def _grouped(rows: pd.DataFrame, kind: str, detail) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    g = rows.groupby(["level", "source_ip", "sni"], observed=True, sort=True)
    out = g.agg(count=("time", "size"), first_seen=("time", "min"), last_seen=("time", "max")).reset_index()
    out = out.rename(columns={"source_ip": "source", "sni": "name"})
    for c in ("level", "source", "name"):
        out[c] = out[c].astype(str)
    out.insert(0, "kind", kind)
    out["detail"] = [detail(r) for r in out.itertuples()]
    return out[ANOMALY_COLUMNS]


def anomalies(df: pd.DataFrame, site, allowlist=None, gap: pd.Timedelta = DEFAULT_GAP,
              since: Optional[pd.Timestamp] = None, until: Optional[pd.Timestamp] = None) -> pd.DataFrame:
    """Every anomaly, grouped (kind, level, source, name) with count and first/last seen:

    - ``unexpected-source``: a source that is neither the level's child network, its own network nor its pods;
    - ``forwarded-unallowed``: a name that reached a level from its child proxy although the allow list (which
      the child proxy enforces) has no entry for it: the child should have refused it;
    - ``no-sni`` / ``non-tls``: a connection without a server name; non-TLS when Envoy names a TLS error;
    - ``log-gap``: no record in a level's log for longer than `gap` (also from `since` and up to `until`);
    - ``no-records``: a proxy level whose log holds nothing.
    """
    parts = []
    cls = source_class(df, site)
    nets = {lv.name: _networks(site, lv) for lv in proxy_levels(site)}

    def where(r):
        n = nets.get(r.level, {})
        own = ", ".join(str(x) for k in ("own network", "child network", "pods") for x in n.get(k, []))
        return f"{r.source} is outside the networks {r.level} serves ({own})"
    parts.append(_grouped(df[np.asarray(cls == "other")], "unexpected-source", where))
    if allowlist is not None:
        fwd = df[np.asarray(cls == "child proxy") & np.asarray(df["entry"] == "")]
        parts.append(_grouped(fwd, "forwarded-unallowed",
                              lambda r: f"{r.name or '(no name)'} came from the child proxy {r.source}, which should "
                                        f"have refused it (no allow-list entry for it on this port)"))
    no_name = np.asarray(df["sni"] == "")
    tls_err = np.asarray(df["transport_failure"] != "")
    parts.append(_grouped(df[no_name & tls_err], "non-tls", lambda r: "bytes that are not a TLS ClientHello"))
    parts.append(_grouped(df[no_name & ~tls_err], "no-sni", lambda r: "a TLS ClientHello without a server name"))
    gaps = []
    for lv in _levels_in(df, site):
        t = df.loc[np.asarray(df["level"] == lv), "time"]
        if t.empty:
            gaps.append({"kind": "no-records", "level": lv, "source": "", "name": "", "count": 0,
                         "first_seen": since, "last_seen": until, "detail": f"{lv}'s proxy log holds no record"})
            continue
        e = np.sort(ms_ints(t))
        if since is not None:
            e = np.concatenate(([pd.Timestamp(since).value // 1_000_000], e))
        if until is not None:
            e = np.concatenate((e, [pd.Timestamp(until).value // 1_000_000]))
        d = np.diff(e)
        limit = gap // pd.Timedelta(milliseconds=1)
        for k in np.flatnonzero(d > limit):
            gaps.append({"kind": "log-gap", "level": lv, "source": "", "name": "", "count": 0,
                         "first_seen": pd.Timestamp(int(e[k]), unit="ms", tz="UTC"),
                         "last_seen": pd.Timestamp(int(e[k + 1]), unit="ms", tz="UTC"),
                         "detail": f"no record for {pd.Timedelta(milliseconds=int(d[k]))} (threshold {gap})"})
    if gaps:
        parts.append(pd.DataFrame(gaps, columns=ANOMALY_COLUMNS))
    parts = [p for p in parts if not p.empty]
    if not parts:
        out = pd.DataFrame(columns=ANOMALY_COLUMNS)
        out["count"] = out["count"].astype("int64")
        return out
    out = pd.concat(parts, ignore_index=True)
    out["count"] = out["count"].astype("int64")
    return out[ANOMALY_COLUMNS]


def anomaly_summary(a: pd.DataFrame) -> pd.DataFrame:
    if a.empty:
        return pd.DataFrame(columns=["kind", "level", "groups", "connections"])
    return (a.groupby(["kind", "level"], sort=True).agg(groups=("kind", "size"), connections=("count", "sum"))
            .reset_index())


# ----------------------------------------------------------------------------------------------- all
def all_findings(df: pd.DataFrame, site, allowlist, gap: pd.Timedelta = DEFAULT_GAP) -> dict[str, pd.DataFrame]:
    cov = coverage(df, allowlist)
    p = paths(df, site)
    return {"per_level": per_level(df, site), "refused": refused(df), "coverage": cov,
            "unused_entries": unused_entries(cov), "paths": p, "hop_latency": hop_latency(p),
            "anomalies": anomalies(df, site, allowlist, gap)}
