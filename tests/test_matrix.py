"""The probe matrix for the lab site, and running it through a target."""
from __future__ import annotations

from pathlib import Path

import pytest

from layernet.allowlist import effective_allowlist
from layernet.matrix import build_matrix, refused_names
from layernet.probe import NO_SNI, NON_TLS
from layernet.probe_run import run_matrix, run_matrix_cli
from layernet.site import load_site

LAB = Path(__file__).resolve().parents[1] / "params" / "lab.yaml"


@pytest.fixture(scope="module")
def site():
    return load_site(LAB)


@pytest.fixture(scope="module")
def matrix(site):
    return build_matrix(site, effective_allowlist(site), "/ca.crt", cloud_ip="198.51.100.10")


def kinds(checks, kind):
    return [c for c in checks if c["kind"] == kind]


def test_inner_levels_resolve_to_the_parent_and_go_through_the_chain(matrix):
    dns = kinds(matrix["level2"], "dns")
    assert {c["server"] for c in dns} == {"192.168.102.10"}
    assert {c["expect_ip"] for c in dns} == {"192.168.103.10"}
    assert {c["expect_ip"] for c in kinds(matrix["level3"], "dns")} == {"192.168.104.10"}
    mgmt = [c for c in kinds(matrix["level2"], "tls") if c["host"] == "management.azure.com"]
    assert mgmt == [{"kind": "tls", "host": "management.azure.com", "port": 443, "server": "192.168.102.10",
                     "ca_file": "/ca.crt", "expect_peer": "192.168.104.10", "proxy": "level3"}]


def test_egress_level_uses_its_upstream_and_runs_no_refusals(matrix):
    l4 = matrix["level4"]
    assert {c["kind"] for c in l4} == {"dns", "tls"}
    assert {c["server"] for c in l4} == {"198.51.100.53"}
    assert {c["expect_ip"] for c in kinds(l4, "dns")} == {"198.51.100.10"}


def test_ports_and_wildcards(matrix):
    tls = {(c["host"], c["port"]) for c in kinds(matrix["level2"], "tls")}
    assert ("eastus.obo.arc.azure.com", 8084) in tls
    assert ("layernet-lab-ehns.servicebus.windows.net", 9093) in tls
    assert ("layernet-probe.servicebus.windows.net", 443) in tls
    assert not any(h.startswith("*") for h, _ in tls)


def test_refusals_hit_the_parent_proxy_on_every_port(site, matrix):
    refused = kinds(matrix["level2"], "refused")
    assert {(c["connect_ip"], c["proxy"]) for c in refused} == {("192.168.103.10", "level3")}
    assert {c["port"] for c in refused} == {443, 8084, 9093}
    names = {c["host"] for c in refused}
    assert {"management.azure.com.evil.example", "xmanagement.azure.com", "servicebus.windows.net",
            "evil.example", NO_SNI, NON_TLS} <= names
    assert {c["connect_ip"] for c in kinds(matrix["level3"], "refused")} == {"192.168.104.10"}
    assert {c["host"] for c in kinds(matrix["level2"], "dns-refused")} == set(refused_names(site, effective_allowlist(site)))


def test_refused_and_allowed_agree_with_the_one_matching_function(site, matrix):
    al = effective_allowlist(site)
    for level, checks in matrix.items():
        for c in kinds(checks, "tls"):
            assert al.allows(c["host"], c["port"]), c
        for c in kinds(checks, "refused"):
            assert not al.allows(c["host"], c["port"]), c


def test_real_sites_prove_the_handshake_only(site):
    m = build_matrix(site, effective_allowlist(site), None, echo=False)
    tls = kinds(m["level2"], "tls")
    assert tls and all(c["expect_echo"] is False and c["expect_peer"] is None and c["ca_file"] is None for c in tls)


def test_an_allowed_apex_is_not_expected_to_be_refused():
    site = load_site(LAB, {"allowlist.extra_hosts": ["servicebus.windows.net"]})
    names = refused_names(site, effective_allowlist(site))
    assert "servicebus.windows.net" not in names and "blob.core.windows.net" in names


class FakeTarget:
    def __init__(self, fail_level=None):
        self.calls, self.fail_level = [], fail_level

    def probe_inputs(self) -> dict:
        return {"ca_file": "/ca.crt", "cloud_ip": "198.51.100.10"}

    def probe(self, level, checks):
        self.calls.append((level, len(checks)))
        return [{"level": level, "check": c["kind"], "host": c["host"], "port": c.get("port"), "expected": "",
                 "observed": "", "ok": level != self.fail_level, "latency_ms": 1.0, "hint": ""} for c in checks]


def test_run_matrix_collects_rows_per_level(site, matrix, capsys):
    target = FakeTarget()
    rows = run_matrix(site, target, matrix=matrix)
    assert sorted(target.calls) == sorted((k, len(v)) for k, v in matrix.items())
    assert len(rows) == sum(len(v) for v in matrix.values())
    assert "probe matrix: " in capsys.readouterr().out


def test_run_matrix_cli_exit_codes(site, monkeypatch, capsys):
    monkeypatch.setattr("layernet.targets.get_target", lambda s: FakeTarget())
    assert run_matrix_cli(site) == 0
    monkeypatch.setattr("layernet.targets.get_target", lambda s: FakeTarget(fail_level="level2"))
    assert run_matrix_cli(site) == 1
    assert "FAIL" in capsys.readouterr().out
