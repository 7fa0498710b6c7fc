import numpy as np
import pandas as pd

from layernet.audit import findings
from layernet.audit.parse import parse_logs
from audit_helpers import L3, T, rec, refused_name, small_log

def table(lines, allowlist):
    return parse_logs({"mixed": lines}, allowlist).connections


def test_per_level(site, allowlist):
    out = findings.per_level(table(small_log(), allowlist), site)
    assert list(out.columns) == findings.PER_LEVEL_COLUMNS
    r3, r4 = out.set_index("level").loc["level3"], out.set_index("level").loc["level4"]
    assert list(out["level"]) == ["level3", "level4"]
    assert (r3.connections, r3.allowed, r3.refused_name, r3.refused_source, r3.upstream_failure) == (6, 2, 3, 1, 0)
    assert (r4.connections, r4.allowed, r4.refused_name, r4.refused_source, r4.upstream_failure) == (3, 2, 0, 0, 1)
    assert (r3.bytes_in, r3.bytes_out) == (10 + 5 + 900 + 517, 27)
    assert r3.distinct_sources == 3 and r3.distinct_names == 3
    assert r4.distinct_sources == 2 and r4.distinct_names == 3
    assert r3.first_seen == pd.Timestamp(T(1)) and r3.last_seen == pd.Timestamp(T(6))


def test_per_level_lists_a_silent_level(site, allowlist):
    out = findings.per_level(table([rec()], allowlist), site)
    assert list(out["level"]) == ["level3", "level4"]
    assert out.set_index("level").loc["level4", "connections"] == 0


def test_refused_grouped_by_name_and_source(allowlist):
    out = findings.refused(table(small_log(), allowlist))
    assert list(out.columns) == findings.REFUSED_COLUMNS
    rows = [tuple(r) for r in out[["name", "source", "level", "verdict", "ports", "count"]].itertuples(index=False)]
    assert rows == [
        ("evil.example", "192.168.102.10", "level3", "refused-name", "443, 8084", 2),
        ("evil.example", "192.168.102.11", "level3", "refused-name", "443", 1),
        ("management.azure.com", "10.9.0.5", "level3", "refused-source", "443", 1),
    ]
    first = out.iloc[0]
    assert first.first_seen == pd.Timestamp(T(3)) and first.last_seen == pd.Timestamp(T(4))


def test_coverage_and_unused_entries(allowlist):
    cov = findings.coverage(table(small_log(), allowlist), allowlist)
    assert list(cov.columns) == findings.COVERAGE_COLUMNS
    assert len(cov) == len(allowlist.entries)
    c = cov.set_index("host")
    assert c.loc["management.azure.com", "connections"] == 2
    assert c.loc["management.azure.com", "refused_source"] == 1
    assert c.loc["management.azure.com", "levels"] == "level3, level4"
    assert c.loc["mcr.microsoft.com", "connections"] == 2
    assert c.loc["login.microsoftonline.com", "connections"] == 1          # upstream failure still used it
    assert c.loc["login.microsoftonline.com", "last_used"] == pd.Timestamp(T(7))
    unused = findings.unused_entries(cov)
    assert set(unused["host"]) == {e.host for e in allowlist.entries} - {
        "management.azure.com", "mcr.microsoft.com", "login.microsoftonline.com"}
    assert not cov.loc[cov["host"].isin(unused["host"]), "used"].any()


def test_paths_join_inner_to_upper_with_hop_latency(site, allowlist):
    p = findings.paths(table(small_log(), allowlist), site)
    assert list(p.columns)[:12] == ["start", "origin", "origin_level", "name", "port", "path", "verdict",
                                    "refused_at", "destination", "duration_ms", "bytes_in", "bytes_out"]
    assert "hop_ms_level3_level4" in p.columns
    got = [(str(r.name), str(r.path), str(r.verdict), str(r.refused_at), str(r.destination), r.hop_ms_level3_level4)
           for r in p.itertuples()]
    nan = got[2][5]
    assert got[0] == ("management.azure.com", "level3 > level4", "allowed", "", "198.51.100.10:443", 1.0)
    assert got[1] == ("mcr.microsoft.com", "level3 > level4", "allowed", "", "198.51.100.10:443", 3.0)
    assert got[2][:5] == ("evil.example", "level3", "refused-name", "level3", "") and np.isnan(nan)
    assert len(p) == 7      # 2 joined + 3 refused-name + 1 refused-source at level3 + 1 level4-only
    last = p.iloc[-1]
    assert (str(last["origin_level"]), str(last["path"]), str(last["verdict"])) == ("level4", "level4", "upstream-failure")
    assert str(p.iloc[0]["origin"]) == "192.168.102.10"
    lat = findings.hop_latency(p)
    assert lat.to_dict("records") == [{"hop": "level3 > level4", "paths": 2, "p50_ms": 2.0, "p95_ms": 2.9, "max_ms": 3.0}]


def test_paths_are_one_to_one_with_concurrent_connections(site, allowlist):
    lines = []
    for i in range(4):      # four connections with the same name within one millisecond window
        lines.append(rec(time=T(1 + i * 0.001), source=f"192.168.102.10:{4000 + i}", cid=i))
        lines.append(rec(time=T(1.002 + i * 0.001), level="level4", source=f"{L3}:{5000 + i}", cid=10 + i,
                         upstream_host="198.51.100.10:443"))
    p = findings.paths(table(lines, allowlist), site)
    assert len(p) == 4 and (p["path"] == "level3 > level4").all()
    assert list(p["hop_ms_level3_level4"]) == [2.0, 2.0, 2.0, 2.0]


def test_paths_join_exactly_on_upstream_local_address(site, allowlist):
    lines = [
        rec(time=T(1), upstream_local=f"{L3}:6001", cid=1),
        rec(time=T(1), upstream_local=f"{L3}:6000", cid=2),
        rec(time=T(1.004), level="level4", source=f"{L3}:6000", cid=11, bytes_out=999),
        rec(time=T(1.005), level="level4", source=f"{L3}:6001", cid=12, bytes_out=111),
    ]
    df = table(lines, allowlist)
    p = findings.paths(df, site)
    assert len(p) == 2
    by_origin_cid = dict(zip(df.loc[df["level"] == "level3", "connection_id"], p["bytes_out"]))
    assert by_origin_cid == {1: 111, 2: 999}
    assert sorted(p["hop_ms_level3_level4"]) == [4.0, 5.0]


def test_anomalies(site, allowlist):
    lines = small_log() + [
        rec(time=T(8), source="172.16.0.9:1", sni="management.azure.com"),                      # allowed, odd source
        rec(time=T(9), sni="exfil.example.net", upstream_local=f"{L3}:2"),                      # L3 forwarded it
        refused_name(time=T(9), level="level4", source=f"{L3}:2", sni="exfil.example.net"),      # ... proven
        refused_name(time=T(8.5), level="level4", source=f"{L3}:3", sni="exfil.example.net"),    # L3's own workload
        refused_name(time=T(10), sni=None),                                                      # no SNI
        refused_name(time=T(11), sni=None, tf="TLS_error:|HTTP_REQUEST"),                         # not TLS
        rec(time="2025-03-01T09:00:00.000Z", sni="mcr.microsoft.com"),                           # after a gap
    ]
    a = findings.anomalies(table(lines, allowlist), site, allowlist, gap=pd.Timedelta(minutes=15),
                           until=pd.Timestamp("2025-03-01T09:00:00Z"))
    assert list(a.columns) == findings.ANOMALY_COLUMNS
    got = sorted((r.kind, r.level, r.source, r.name, r.count) for r in a.itertuples())
    assert got == sorted([
        ("unexpected-source", "level3", "10.9.0.5", "management.azure.com", 1),
        ("unexpected-source", "level3", "172.16.0.9", "management.azure.com", 1),
        ("forwarded-unallowed", "level4", L3, "exfil.example.net", 1),
        ("child-workload-refused", "level4", L3, "exfil.example.net", 1),
        ("no-sni", "level3", "192.168.102.10", "", 1),
        ("non-tls", "level3", "192.168.102.10", "", 1),
        ("log-gap", "level3", "", "", 0),
        ("log-gap", "level4", "", "", 0),
    ])
    gap3 = a[(a["kind"] == "log-gap") & (a["level"] == "level3")].iloc[0]
    assert gap3.first_seen == pd.Timestamp(T(11)) and gap3.last_seen == pd.Timestamp("2025-03-01T09:00:00Z")
    gap4 = a[(a["kind"] == "log-gap") & (a["level"] == "level4")].iloc[0]
    assert gap4.first_seen == pd.Timestamp(T(9)) and "0 days 00:59:51" in gap4.detail
    summary = findings.anomaly_summary(a)
    assert summary["groups"].sum() == len(a)


def test_a_level_that_logged_nothing_is_an_anomaly(site, allowlist):
    a = findings.anomalies(table([rec()], allowlist), site, allowlist)
    assert [(r.kind, r.level) for r in a.itertuples()] == [("no-records", "level4")]


def test_source_class(site, allowlist):
    df = table([rec(source="192.168.102.10:1"), rec(source="192.168.103.7:1"), rec(source="10.42.3.4:1"),
                rec(source="8.8.8.8:1"), rec(level="level4", source=f"{L3}:1"),
                rec(level="level4", source="192.168.103.99:1")], allowlist)
    assert list(findings.source_class(df, site)) == ["child network", "own network", "pods", "other", "child proxy",
                                                     "child network"]


def test_all_findings_on_an_empty_table(site, allowlist):
    out = findings.all_findings(table([], allowlist), site, allowlist)
    assert out["per_level"]["connections"].tolist() == [0, 0]
    assert out["refused"].empty and out["paths"].empty
    assert out["unused_entries"].shape[0] == len(allowlist.entries)
    assert set(out["anomalies"]["kind"]) == {"no-records"}


def test_stage_flags_a_level_quiet_until_collection(site, allowlist):
    from layernet.stages import audit as stage

    parsed = parse_logs({"mixed": small_log()}, allowlist)
    saved = stage.Audit(site, allowlist, parsed, "folder x")                       # saved logs: no end known
    assert not (stage.anomalies(saved, gap_minutes=15)["kind"] == "log-gap").any()
    live = stage.Audit(site, allowlist, parsed, "target lab", until=pd.Timestamp("2025-03-01T09:00:00Z").to_pydatetime())
    gaps = stage.anomalies(live, gap_minutes=15)
    assert set(gaps[gaps["kind"] == "log-gap"]["level"]) == {"level3", "level4"}
