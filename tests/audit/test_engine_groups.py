"""The engine's groups and narrow rows: the values of a group come from one of its lines or from a full pass
(same answer), flags on both halves of the key keep groups apart, sums are exact, `since` leaves rows out but
not their checks, and the per-row checks and gaps hold across batches and buckets."""
import gzip
import random

import pandas as pd
import pytest

from layernet.audit import findings, health, passes
from layernet.audit.parse import parse_logs
from audit_helpers import L3, T, rec, refused_name, refused_source, small_log

TLS = "TLS_error:|268435612:SSL routines:OPENSSL_internal:HTTP_REQUEST:TLS_error_end"


def varied_log(n=400, seed=3):
    """Connections of every kind from many sources, names and ports, with forwarded pairs."""
    rnd = random.Random(seed)
    lines, t = [], 0.0
    for i in range(n):
        t += rnd.uniform(0.001, 0.05)
        k = rnd.random()
        port = rnd.choice([443, 8084, 9093])
        if k < 0.4:
            up = 30000 + i
            lines.append(rec(time=T(t), port=port, sni=rnd.choice(["management.azure.com", "mcr.microsoft.com"]),
                             upstream_local=f"{L3}:{up}", bytes_in=rnd.randint(1, 10**6), cid=i))
            lines.append(rec(time=T(t + 0.002), level="level4", port=port, source=f"{L3}:{up}",
                             sni="management.azure.com", cluster="dynamic_forward_proxy", cid=i))
        elif k < 0.6:
            lines.append(refused_name(time=T(t), port=port, sni=rnd.choice(["evil.example", None, "x.example"]),
                                      source=f"192.168.102.{rnd.randint(10, 40)}:{rnd.randint(1000, 60000)}",
                                      tf=TLS if rnd.random() < 0.3 else None))
        elif k < 0.8:
            lines.append(refused_source(time=T(t), port=port, source=f"10.9.{rnd.randint(0, 9)}.{rnd.randint(1, 250)}:5"))
        else:
            lines.append(rec(time=T(t), level="level4", port=port, source=f"192.168.104.{rnd.randint(20, 60)}:7",
                             sni=rnd.choice(["login.microsoftonline.com", "evil.example"]), flags=rnd.choice(["-", "UF"]),
                             bytes_out=rnd.randint(0, 10**9)))
    return lines


def everything(p, site, allowlist):
    out = findings.all_findings(p, site, allowlist)
    out["connections"] = p.connections
    out["malformed"] = p.malformed
    return out


def test_names_from_one_line_each_equal_names_from_a_full_pass(site, allowlist, monkeypatch):
    lines = varied_log()
    lines[7] = lines[7][:40]                       # a malformed line among them
    a = everything(parse_logs({"mixed": lines}, allowlist), site, allowlist)
    monkeypatch.setattr(passes, "REPS_MAX", 0)      # every group named by reading the whole file again
    b = everything(parse_logs({"mixed": lines}, allowlist), site, allowlist)
    assert a.keys() == b.keys()
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], obj=k)
    assert len(a["connections"]) == len(lines) - 1 and list(a["malformed"]["line"]) == [8]


def test_many_sources_are_named_by_a_full_pass_and_stay_exact(site, allowlist, monkeypatch):
    monkeypatch.setattr(passes, "REPS_MAX", 50)
    lines = [refused_source(time=T(i / 100), source=f"10.9.{i // 250}.{i % 250}:{1000 + i}") for i in range(600)]
    p = parse_logs({"level3": lines}, allowlist)
    per = findings.per_level(p, site).set_index("level")
    assert per.loc["level3", "refused_source"] == 600 and per.loc["level3", "distinct_sources"] == 600
    ref = findings.refused(p)
    assert len(ref) == 600 and set(ref["count"]) == {1}
    assert sorted(ref["source"]) == sorted(f"10.9.{i // 250}.{i % 250}" for i in range(600))


def test_gzip_logs_name_their_groups_from_a_full_pass(site, allowlist, tmp_path):
    lines = varied_log(200, seed=5)
    plain, gz = tmp_path / "level3.log", tmp_path / "level3.log.gz"
    plain.write_text("\n".join(lines) + "\n")
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = parse_logs({"x": plain}, allowlist), parse_logs({"x": gz}, allowlist)
    for k in ("per_level", "refused", "coverage", "anomalies"):
        pd.testing.assert_frame_equal(everything(a, site, allowlist)[k], everything(b, site, allowlist)[k], obj=k)


def test_a_flag_on_each_half_of_the_key_keeps_groups_apart(site, allowlist):
    """Two groups that differ in one flag on each half (before `since` or not; a TLS error or not) are two groups
    with their own counts (a key built by combining the halves linearly would merge them)."""
    since = pd.Timestamp(T(10)).to_pydatetime()
    lines = []
    for port in (443, 8084, 9093):
        lines += [refused_name(time=T(1), port=port, sni=None, tf=TLS),          # before, TLS error
                  refused_name(time=T(2), port=port, sni=None),                  # before, no TLS error
                  refused_name(time=T(11), port=port, sni=None, tf=TLS),         # after, TLS error
                  refused_name(time=T(12), port=port, sni=None),                 # after, no TLS error
                  refused_name(time=T(13), port=port, sni=None)]
    p = parse_logs({"level3": lines}, allowlist, since=since)
    a = findings.anomalies(p, site, allowlist)
    got = {(r.kind, r.count) for r in a[a["kind"].isin(["no-sni", "non-tls"])].itertuples()}
    assert got == {("non-tls", 3), ("no-sni", 6)}
    assert findings.per_level(p, site).set_index("level").loc["level3", "refused_name"] == 9


def test_bytes_are_summed_exactly_past_32_bits(site, allowlist):
    big = [5_000_000_000, 7_123_456_789_012, 1]
    p = parse_logs({"level3": [rec(time=T(i), bytes_in=b, bytes_out=b * 2) for i, b in enumerate(big)]}, allowlist)
    r = findings.per_level(p, site).set_index("level").loc["level3"]
    assert (r.bytes_in, r.bytes_out) == (sum(big), 2 * sum(big))


def test_since_leaves_rows_out_but_every_line_is_still_read_and_checked(site, allowlist):
    lines = [rec(time=T(1), cid=1), "garbage", rec(time=T(3), cid=3), rec(time=T(1.5), duration=0, cid=4),
             rec(time=T(20), cid=5), rec(time=T(21), level="level4", cid=6)]
    since = pd.Timestamp(T(10)).to_pydatetime()
    p = parse_logs({"level3": lines}, allowlist, sources_are_levels=True, since=since)
    assert list(p.connections["connection_id"]) == [5, 6] and list(p.connections["line"]) == [5, 6]
    assert p.records == 2 and p.lines == 6 and list(p.malformed["line"]) == [2]
    got = {r.check: (r.lines, r.first_line) for r in p.checks.itertuples()}
    assert got == {"time-backwards": (1, 4), "level-mismatch": (1, 6)}
    assert p.levels_with_records() == {"level3", "level4"}


def test_end_times_going_backwards_are_found_across_batches(allowlist, monkeypatch):
    monkeypatch.setattr(health, "BATCH_ROWS", 7)
    lines = [rec(time=T(10 + i / 10), duration=0, cid=i) for i in range(60)]
    for i in (9, 23, 41):                         # each ends 2.4 s before the line before it
        lines[i] = rec(time=T(10 + i / 10 - 2.5), duration=0, cid=i)
    p = parse_logs({"level3": lines + ["", rec(time=T(0), duration=0)]}, allowlist)
    r = p.checks.set_index("check").loc["time-backwards"]
    assert (r.lines, r.first_line) == (4, 10)      # and line 62 (after a blank line) ends 15.9 s back
    assert r["sample"] == "ends 2400 ms before an earlier line"


@pytest.mark.parametrize("gap_s", [0.5, 3, 60])
def test_gaps_equal_a_direct_computation(site, allowlist, gap_s):
    rnd = random.Random(int(gap_s * 10))
    times = sorted(rnd.uniform(0, 300) for _ in range(300))
    p = parse_logs({"level3": [rec(time=T(0), cid=0)] + [rec(time=f"2025-03-01T08:{int(x // 60):02d}:"
                                                                   f"{x % 60:06.3f}Z") for x in times]}, allowlist)
    ms = sorted({0} | {int(round(x * 1000)) for x in times})
    want = [(a, b) for a, b in zip(ms, ms[1:]) if b - a > gap_s * 1000]
    an = findings.anomalies(p, site, allowlist, gap=pd.Timedelta(seconds=gap_s))
    gaps = an[(an["kind"] == "log-gap") & (an["level"] == "level3")]
    base = pd.Timestamp(T(0))
    got = [(int((r.first_seen - base) / pd.Timedelta(milliseconds=1)),
            int((r.last_seen - base) / pd.Timedelta(milliseconds=1))) for r in gaps.itertuples()]
    assert got == want and (gap_s < 60 or not want)


def test_findings_of_a_frame_equal_findings_of_the_parse(site, allowlist):
    p = parse_logs({"mixed": small_log() + varied_log(120, seed=9)}, allowlist)
    a, b = findings.all_findings(p, site, allowlist), findings.all_findings(p.connections, site, allowlist)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], obj=k)


def test_an_address_reused_all_day_links_each_use_to_its_own_partner(site, allowlist):
    """A busy proxy cycles its ports: the same upstream local address comes back every 0.7 s here (inside the
    join window) and at every offset of the time buckets; each inner connection still meets the upper connection
    it caused (2 ms later) and no other."""
    lines = []
    for i in range(70):
        t0 = 1 + i * 0.7 + (i % 7) * 0.013
        lines.append(rec(time=T(t0), upstream_local=f"{L3}:40000", cid=i))
        lines.append(rec(time=T(t0 + 0.002), level="level4", source=f"{L3}:40000", cid=1000 + i,
                         cluster="dynamic_forward_proxy"))
    p = parse_logs({"mixed": lines}, allowlist)
    paths = findings.paths(p, site)
    assert len(paths) == 70 and (paths["path"] == "level3 > level4").all()
    assert (paths["hop_ms_level3_level4"] == 2).all()
    s = findings.path_summary(p, site)
    assert s.to_dict("records") == [{"path": "level3 > level4", "verdict": "allowed", "refused_at": "", "paths": 70}]
    lat = findings.hop_latency_sql(p, site).iloc[0]
    assert (lat.paths, lat.p50_ms, lat.max_ms) == (70, 2.0, 2.0)


def test_source_classes_in_sql_equal_the_python_rule(site, allowlist):
    """Dotted-quad sources are classed in SQL against integer ranges; the answer equals `_classify` for every
    address, also at the networks' edges and for text that is not a canonical IPv4 address."""
    import ipaddress

    sources = ["192.168.102.10", "192.168.102.0", "192.168.102.255", "192.168.101.255", "192.168.103.10",
               "192.168.103.11", "10.9.0.5", "0.0.0.0", "255.255.255.255", "01.2.3.4", "256.1.1.1", "1.2.3",
               "fd00::1", "[fd00::1]", "garbage", ""]
    for lv in site.levels:
        for net in (lv.network, lv.pod_cidr):
            sources += [str(net.network_address), str(net.broadcast_address),
                        str(ipaddress.ip_address(int(net.network_address) - 1)) if int(net.network_address) else "0.0.0.0"]
    lines = [rec(time=T(i / 100), level=lv, source=f"{ip}:1000" if ip else "")
             for i, (lv, ip) in enumerate((lv, ip) for lv in ("level3", "level4", "mixed") for ip in sources)]
    p = parse_logs({"x": lines}, allowlist)
    t = findings._tab(p)
    findings._source_classes(t, site)
    got = {(lv, ip): c for lv, ip, c in t.rows("SELECT level, source_ip, cls FROM _cls")}
    want = {(lv, ip): findings._classify(site, lv, ip) for lv, ip in got}
    assert got == want and len(got) >= 3 * len(set(sources)) - 3
    assert {"child proxy", "child network", "own network", "pods", "other"} <= set(got.values())
