"""Per-level counts are joined by level name: any level order in the log, any level names, four proxy levels."""
import random
from collections import Counter, defaultdict

import pytest

from layernet.allowlist import effective_allowlist
from layernet.audit import findings
from layernet.audit.parse import parse_logs
from layernet.site import load_site
from audit_helpers import rec, refused_name, refused_source

PLANT = """\
name: plant
description: five levels, four proxies, names that are not levelN
target: lab
egress_level: enterprise
admin: {network: 192.168.0.0/24, jump_box_ip: 192.168.0.50}
levels:
  - {name: enterprise, number: 5, network: 10.5.0.0/24, node_ip: 10.5.0.10, proxy: true, dns_override: false,
     dns_upstream: [198.51.100.53], pod_cidr: 10.105.0.0/16}
  - {name: site-ops, number: 4, parent: enterprise, network: 10.4.0.0/24, node_ip: 10.4.0.10, proxy: true,
     dns_override: true, pod_cidr: 10.104.0.0/16}
  - {name: area, number: 3, parent: site-ops, network: 10.3.0.0/24, node_ip: 10.3.0.10, proxy: true,
     dns_override: true, pod_cidr: 10.103.0.0/16}
  - {name: cell, number: 2, parent: area, network: 10.2.0.0/24, node_ip: 10.2.0.10, proxy: true,
     dns_override: true, pod_cidr: 10.102.0.0/16}
  - {name: field, number: 1, parent: cell, network: 10.1.0.0/24, node_ip: 10.1.0.10, proxy: false,
     dns_override: true, pod_cidr: 10.101.0.0/16}
azure: {cloud: public, location: eastus, resource_group: rg-plant,
        clusters: {enterprise: c5, site-ops: c4, area: c3, cell: c2, field: c1},
        eventhubs_namespace: plant-ehns, schema_registry_storage: plantsr}
allowlist: {groups: [arc-core, aio], extra_hosts: [], drop_hosts: []}
lab: {prefix: pl, cloud_network: 198.51.100.0/24, refused_hosts: [evil.example]}
"""
NET = {"enterprise": "10.5.0", "site-ops": "10.4.0", "area": "10.3.0", "cell": "10.2.0", "field": "10.1.0"}
CHILD = {"enterprise": "site-ops", "site-ops": "area", "area": "cell", "cell": "field"}


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    f = tmp_path_factory.mktemp("plant") / "plant.yaml"
    f.write_text(PLANT)
    s = load_site(f)
    return s, effective_allowlist(s)


def traffic(levels, first: str, seed: int, n: int = 400):
    """Random records for the given levels whose first record comes from `first`, and the counts a reader
    computes by hand: {level: Counter(verdict -> n, bytes_in -> sum, sources -> set)}."""
    rnd = random.Random(seed)
    lines, want = [], defaultdict(Counter)
    sources = defaultdict(set)
    order = [first] + [rnd.choice(levels) for _ in range(n - 1)]
    for i, lv in enumerate(order):
        t = f"2025-03-01T08:{i // 60000:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}Z"
        src_ip = f"{NET[CHILD[lv]]}.{rnd.randint(20, 30)}"
        b = rnd.randint(1, 1000)
        kind = rnd.choice(["allowed", "refused-name", "refused-source", "upstream-failure"])
        if kind == "allowed":
            lines.append(rec(time=t, level=lv, source=f"{src_ip}:1000", bytes_in=b))
        elif kind == "refused-name":
            lines.append(refused_name(time=t, level=lv, source=f"{src_ip}:1000", bytes_in=b))
        elif kind == "refused-source":
            src_ip = f"172.16.{rnd.randint(0, 3)}.9"
            lines.append(refused_source(time=t, level=lv, source=f"{src_ip}:1000", bytes_in=b))
        else:
            lines.append(rec(time=t, level=lv, source=f"{src_ip}:1000", flags="UF", bytes_in=b))
        want[lv][kind] += 1
        want[lv]["bytes_in"] += b
        sources[lv].add(src_ip)
    return lines, want, sources


def check(out, levels, want, sources):
    assert list(out["level"])[:len(levels)] == levels
    got = out.set_index("level")
    for lv in levels:
        r = got.loc[lv]
        assert r["allowed"] == want[lv]["allowed"], lv
        assert r["refused_name"] == want[lv]["refused-name"], lv
        assert r["refused_source"] == want[lv]["refused-source"], lv
        assert r["upstream_failure"] == want[lv]["upstream-failure"], lv
        assert r["connections"] == sum(want[lv][k] for k in ("allowed", "refused-name", "refused-source",
                                                               "upstream-failure")), lv
        assert r["bytes_in"] == want[lv]["bytes_in"], lv
        assert r["distinct_sources"] == len(sources[lv]), lv


@pytest.mark.parametrize("first", ["cell", "area", "site-ops", "enterprise"])
def test_four_proxy_levels_any_first_record(plant, first):
    site, al = plant
    levels = [lv.name for lv in site.proxy_levels(innermost_first=True)]
    assert levels == ["cell", "area", "site-ops", "enterprise"]
    lines, want, sources = traffic(levels, first, seed=len(first))
    parsed = parse_logs({"mixed": lines}, al)
    check(findings.per_level(parsed, site), levels, want, sources)                 # SQL on the DuckDB table
    check(findings.per_level(parsed.connections, site), levels, want, sources)     # and on the DataFrame


@pytest.mark.parametrize("first", ["level4", "level3"])
def test_lab_levels_any_first_record_one_file_per_level(site, allowlist, first, tmp_path):
    levels = ["level3", "level4"]
    NET.update({"level4": "192.168.104", "level3": "192.168.103", "level2": "192.168.102"})
    CHILD.update({"level4": "level3", "level3": "level2"})
    lines, want, sources = traffic(levels, first, seed=3)
    files = {}
    for lv in (first, *[x for x in levels if x != first]):          # the dict (and the files) start with `first`
        f = tmp_path / f"{lv}.log"
        f.write_text("\n".join(l for l in lines if f'"level": "{lv}"' in l) + "\n")
        files[lv] = f
    parsed = parse_logs(files, allowlist, sources_are_levels=True)
    check(findings.per_level(parsed, site), levels, want, sources)
    # the bytes and the verdict counts of a row belong to the same level: the table agrees with itself
    out = findings.per_level(parsed, site).set_index("level")
    df = parsed.connections
    for lv in levels:
        mine = df[df["level"].astype(str) == lv]
        assert out.loc[lv, "bytes_in"] == mine["bytes_in"].sum()
        assert out.loc[lv, "allowed"] == (mine["verdict"].astype(str) == "allowed").sum()


def test_paths_through_four_proxies(plant):
    site, al = plant
    lines = []
    chain = ["cell", "area", "site-ops", "enterprise"]
    for k in range(3):
        port = 41000 + k
        for j, lv in enumerate(chain):
            src = f"10.1.0.20:{port}" if j == 0 else f"{NET[chain[j - 1]]}.10:{port + 100 * j}"
            local = f"{NET[lv]}.10:{port + 100 * (j + 1)}" if j < 3 else ""
            lines.append(rec(time=f"2025-03-01T08:00:0{k}.00{j}Z", level=lv, source=src, upstream_local=local,
                             sni="management.azure.com", cid=k * 10 + j))
    random.Random(1).shuffle(lines)
    p = findings.paths(parse_logs({"mixed": lines}, al), site)
    assert len(p) == 3
    assert set(p["path"].astype(str)) == {"cell > area > site-ops > enterprise"}
    assert list(p["hop_ms_cell_area"]) == [1.0, 1.0, 1.0]
    assert list(p["hop_ms_site-ops_enterprise"]) == [1.0, 1.0, 1.0]
    assert set(p["origin"].astype(str)) == {"10.1.0.20"}


def test_the_audit_reads_one_list_of_proxy_levels(tmp_path):
    """Proxy levels are one fact (Site.proxy_levels): log collection, the per-level findings order, the probe
    comparison and the KQL records block all follow it, on a plant whose levels are not our example's."""

    import pandas as pd
    from plants import plant_site, write

    from layernet.audit import collect, compare, kql

    site = load_site(write(plant_site(levels=4), tmp_path))
    outward = [lv.name for lv in site.proxy_levels(innermost_first=True)]
    assert outward == ["area", "plant", "dmz"]              # dmz -> plant -> area -> cell: the lowest runs none
    assert collect.proxy_level_names(site) == outward[::-1]
    assert list(compare.expected_counts(pd.DataFrame(), site)["level"]) == outward
    block = kql.records_block(site)
    assert all(name in block for name in outward) and "'cell'" not in block


def test_envoy_and_the_audit_read_one_set_of_served_networks(tmp_path):
    """The networks a level serves are one fact (Site.served_networks): the addresses Envoy lets in are exactly
    those the audit classes as the level's own, its child's or its pods'."""
    import ipaddress
    from plants import plant_site, write

    from layernet.render.envoy import source_ranges

    site = load_site(write(plant_site(levels=4), tmp_path))
    for lv in site.proxy_levels():
        ranges = source_ranges(site, lv)
        served = site.served_networks(lv)
        assert set(ranges) == {n for k in ("own network", "child network", "pods") for n in served[k]}
        child = site.child(lv)
        assert findings._classify(site, lv.name, str(lv.network.network_address + 5)) == "own network"
        assert findings._classify(site, lv.name, str(lv.pod_cidr.network_address + 5)) == "pods"
        if child is not None:
            want = "child proxy" if child.proxy else "child network"
            assert findings._classify(site, lv.name, str(child.node_ip)) == want
        outside = ipaddress.ip_address("198.51.100.77")
        assert not any(outside in n for n in ranges)
        assert findings._classify(site, lv.name, str(outside)) not in served
