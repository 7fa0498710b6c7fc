"""nftables rulesets (checked by the real `nft -c`) and the IP allow list table."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from layernet.render import firewall_rows
from layernet.render.firewall import render_allow_list_md, render_nftables

NFT = shutil.which("nft") or "/usr/sbin/nft"
needs_nft = pytest.mark.skipif(not os.path.exists(NFT) or os.geteuid() != 0, reason="nft -c needs nftables and root")


@needs_nft
@pytest.mark.parametrize("level", ["level4", "level3", "level2"])
def test_nft_check_accepts_ruleset(site, allowlist, level, tmp_path):
    path = tmp_path / "nftables.nft"
    path.write_text(render_nftables(site, site.level(level), allowlist))
    res = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


@needs_nft
def test_nft_check_rejects_a_broken_ruleset(tmp_path):
    path = tmp_path / "bad.nft"
    path.write_text("table inet layernet {\n\tchain input {\n\t\tip saddr nonsense accept\n\t}\n}\n")
    assert subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True).returncode != 0


def test_level3_rules(site, allowlist):
    text = render_nftables(site, site.level("level3"), allowlist)
    assert "table inet layernet {" in text
    assert text.count("policy drop;") == 2
    assert "ct state established,related accept" in text
    assert 'iifname "lo" accept' in text
    assert "ip saddr 192.168.0.0/24 ip daddr 192.168.103.10 accept" in text
    assert "ip saddr 192.168.102.0/24 ip daddr 192.168.103.10 tcp dport { 443, 8084, 9093 } accept" in text
    assert "ip saddr 192.168.102.0/24 ip daddr 192.168.103.10 meta l4proto { udp, tcp } th dport 53 accept" in text
    assert "ip daddr 192.168.104.10 tcp dport { 443, 8084, 9093 } accept" in text
    assert text.count('counter drop comment "everything else"') == 2
    # an inner level never sends anywhere but its parent
    out = text.split("chain output")[1]
    assert "198.51.100" not in out and "\t\ttcp dport" not in out


def test_level2_without_proxy_or_child(site, allowlist):
    text = render_nftables(site, site.level("level2"), allowlist)
    inp = text.split("chain output")[0]
    assert "tcp dport { 443" not in inp            # no proxy at level2
    assert "th dport 53" in inp                      # its own DNS override, for its own network
    assert "ip daddr 192.168.103.10 tcp dport { 443, 8084, 9093 } accept" in text


def test_egress_rules(site, allowlist):
    text = render_nftables(site, site.level("level4"), allowlist)
    out = text.split("chain output")[1]
    assert 'tcp dport { 443, 8084, 9093 } accept comment "egress proxy' in out
    assert "ip daddr 198.51.100.53 meta l4proto { udp, tcp } th dport 53 accept" in out
    assert "th dport 53" not in text.split("chain output")[0]   # level4 runs no DNS override


def test_firewall_rows(site, allowlist):
    rows = firewall_rows(site)
    assert all(set(r) >= {"from", "to", "protocol", "ports", "purpose"} for r in rows)
    pairs = {(r["from"].split()[0], r["to"].split()[0], r["protocol"], r["ports"]) for r in rows}
    assert ("192.168.102.0/24", "192.168.103.10", "tcp", "443, 8084, 9093") in pairs
    assert ("192.168.102.0/24", "192.168.103.10", "udp, tcp", "53") in pairs
    assert ("192.168.103.10", "192.168.104.10", "tcp", "443, 8084, 9093") in pairs
    assert ("192.168.104.10", "any", "tcp", "443, 8084, 9093") in pairs
    assert ("192.168.104.10", "198.51.100.53", "udp, tcp", "53") in pairs
    admin = [(r["to"].split()[0], r["protocol"], r["ports"]) for r in rows if r["from"].startswith("192.168.0.0/24")]
    assert sorted(admin) == sorted([(ip, "any", "any") for ip in ("192.168.104.10", "192.168.103.10", "192.168.102.10")]
                                   + [(ip, "tcp", "6443") for ip in ("192.168.104.10", "192.168.103.10", "192.168.102.10")])
    # nothing lets level2 reach level4 or the internet directly
    assert not any(r["from"].startswith("192.168.102.") and not r["to"].startswith("192.168.103.") for r in rows)
    assert firewall_rows(site) == rows  # deterministic
    # with the allow list, ports without any allowed host are not opened
    assert firewall_rows(site, allowlist) == rows


def test_allow_list_markdown(site, allowlist):
    md = render_allow_list_md(site, site.level("level3"), allowlist)
    assert md.startswith("# IP allow list: lab / level3")
    assert "| from | to | protocol | ports | purpose |" in md
    table = [l for l in md.splitlines() if l.startswith("| ")]
    # header + separator + 7 rules of level3: the Kubernetes API and admin, TLS, DNS and MQTT from level2, TLS and
    # MQTT up to level4
    assert len(table) == 2 + 7
    assert "| 192.168.0.0/24 (admin network) | 192.168.103.10 (level3 node) | tcp | 6443 |" in md
    assert "| 192.168.102.10 (level2 node) | 192.168.103.10 (level3 node) | tcp | 8883 |" in md
