"""Items 1-3 of the hardening evidence on a lab of their own (prefix h1), and `layernet harden`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from layernet.harden import checks
from layernet.lab import netns

import labs
from harden_helpers import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow]
PREFIX = labs.plan(__file__).prefix


@pytest.fixture(scope="module")
def site():
    return labs.site(__file__)


@pytest.fixture(scope="module")
def lab(site):
    with labs.running(site) as target:
        yield target


def test_every_name_gets_the_allow_list_verdict_from_real_envoy(lab, site):
    df = checks.differential(site)
    assert df[["mode", "name"]].astype(str).drop_duplicates().shape[0] >= 300
    assert set(df["level"]) == {"level3", "level4"} and set(df["port"]) == {443, 8084, 9093}
    assert (df["envoy"] != "no log line").all(), df[df["envoy"] == "no log line"].head()
    bad = df[~df["ok"]]
    assert bad.empty, bad.head(20).to_string()
    # both verdicts really occur, also among the tricks
    assert {"forwarded", "reset"} <= set(df["envoy"])
    # forwarded connections mostly get the cloud's ServerHello: 338 of 416 (0.81) on this lab every time; the other
    # 78 are reset by the cloud, and a loaded machine adds a few more, so the floor leaves room below 0.81
    assert (df[df["envoy"] == "forwarded"]["client"] == "server-hello").mean() > 0.75
    assert not ((df["envoy"] == "reset") & (df["client"] == "server-hello")).any()


def test_outside_sources_are_refused_and_logged(lab, site):
    df = checks.source_enforcement(site)
    assert len(df) == 6 and df["ok"].all(), df.to_string()
    assert (df[df["expected"] == "refused-source"]["chain"] == "refused-source").sum() == 4
    assert not [n for n in netns.list_namespaces() if n == f"{PREFIX}-rogue"]


def test_non_adjacent_levels_and_the_cloud_are_unreachable(lab, site):
    df = checks.isolation(site)
    assert df["ok"].all(), df[~df["ok"]].to_string()
    assert set(df["proto"]) == {"tcp", "udp", "icmp"}
    # exactly the paths the site opens on purpose (worked out here by hand, not from the flows model): TLS and the
    # brokers' MQTT to the parent's node, and from the egress level the cloud on the proxied ports and its DNS
    topo = netns.topology(site)
    node = {lv.name: str(lv.node_ip) for lv in site.levels}
    tls, dns = str(topo.cloud_tls_ip), str(topo.cloud_dns_ip)
    want = {(src, node[dst], "tcp", p) for src, dst in (("level2", "level3"), ("level3", "level4"))
            for p in (443, 8084, 9093, 8883)}      # 8883: the MQTT hops with X.509 (the lab site)
    want |= {("level4", ip, "tcp", p) for ip in (tls, dns) for p in (443, 8084, 9093)}
    want |= {("level4", dns, "tcp", 53), ("level4", dns, "udp", 53)}
    got = {(r.level, r.ip, r.proto, int(r.port)) for r in df[df["expected"] == "reachable"].itertuples()}
    assert got == want                                         # and every one was seen open (df["ok"] above)


def test_inner_dns_never_forwards_names_outside_the_allow_list(lab, site):
    df = checks.dns_forwarding(site)
    assert df["ok"].astype(bool).all(), df[~df["ok"].astype(bool)].to_string()
    assert set(df["level"]) == {"level3", "level2", "cloud (upstream DNS)"}
    assert (df["allowed"] == False).sum() >= 200  # noqa: E712


def test_harden_cli(lab, site, tmp_path: Path):
    args = [str(Path(sys.executable).parent / "layernet"), "harden", "--site", "params/lab.yaml"]
    for a in labs.site_args(__file__):
        args += ["-p", a]
    proc = subprocess.run(args + ["--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "FAIL" not in proc.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"harden-differential.csv", "harden-summary.csv"}
