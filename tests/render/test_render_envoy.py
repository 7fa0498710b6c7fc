"""Envoy bootstraps: structure, `envoy --mode validate`, and the behaviour of a real Envoy on loopback."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time

import pytest
import yaml

from render_helpers import ENVOY, free_port, stop, wait_until
from layernet.render import render_site
from layernet.render.envoy import (ACCESS_LOG_FORMAT, ENVOY_ARGS, envoy_config, render_envoy, source_ranges)



def _validate(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), *ENVOY_ARGS, "--log-level", "warning"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target", ["lab", "kube"])
def test_every_bootstrap_passes_envoy_validate(site, allowlist, target, tmp_path):
    arts = [a for a in render_site(site, allowlist, target, state_dir=tmp_path) if a.kind == "envoy"]
    assert {a.level for a in arts} == {"level4", "level3"}
    for a in arts:
        (tmp_path / a.level).mkdir(exist_ok=True)  # Envoy refuses to start when the log folder is missing
        path = tmp_path / f"{a.level}-{target}.yaml"
        path.write_text(a.content)
        res = _validate(path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "OK" in res.stdout + res.stderr


def test_envoy_validate_rejects_a_broken_bootstrap(tmp_path):
    """The validation above is real: Envoy does reject a bad bootstrap."""
    path = tmp_path / "bad.yaml"
    path.write_text("static_resources:\n  listeners:\n  - name: x\n    filter_chains: [{filters: [{name: nope}]}]\n")
    assert _validate(path).returncode != 0


def test_listener_structure(site, allowlist):
    for name in ("level4", "level3"):
        lv = site.level(name)
        cfg = envoy_config(site, allowlist, lv)
        assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
        listeners = cfg["static_resources"]["listeners"]
        assert [l["address"]["socket_address"]["port_value"] for l in listeners] == [443, 8084, 9093]
        for l in listeners:
            port = l["address"]["socket_address"]["port_value"]
            assert "default_filter_chain" not in l
            assert [f["name"] for f in l["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
            allowed, refused = l["filter_chains"]
            assert (allowed["name"], refused["name"]) == ("allowed", "refused-source")
            assert allowed["filter_chain_match"]["server_names"] == allowlist.hosts_for_port(port)
            assert refused["filter_chain_match"]["server_names"] == allowlist.hosts_for_port(port)
            assert "source_prefix_ranges" not in refused["filter_chain_match"]
            ranges = [(r["address_prefix"], r["prefix_len"]) for r in allowed["filter_chain_match"]["source_prefix_ranges"]]
            assert ranges == [(str(n.network_address), n.prefixlen) for n in source_ranges(site, lv)]
            assert refused["filters"][-1]["typed_config"]["cluster"] == "refused"
            log = l["access_log"][0]["typed_config"]["log_format"]["json_format"]
            assert set(log) >= {"time", "level", "listener_port", "source", "sni", "filter_chain", "upstream_host",
                                "upstream_cluster", "bytes_in", "bytes_out", "duration_ms", "response_flags",
                                "details", "connection_id"}
            assert log["level"] == name
        clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
        assert clusters["refused"]["load_assignment"]["endpoints"] == []
    # level3 allows its own, level2's and its pod network
    assert [str(n) for n in source_ranges(site, site.level("level3"))] == ["192.168.103.0/24", "192.168.102.0/24", "10.42.0.0/16"]


def test_egress_uses_dynamic_forward_proxy_with_explicit_resolvers(site, allowlist):
    cfg = envoy_config(site, allowlist, site.level("level4"))
    for l in cfg["static_resources"]["listeners"]:
        port = l["address"]["socket_address"]["port_value"]
        dfp, tcp = l["filter_chains"][0]["filters"]
        assert dfp["name"] == "envoy.filters.network.sni_dynamic_forward_proxy"
        assert dfp["typed_config"]["port_value"] == port
        res = dfp["typed_config"]["dns_cache_config"]["typed_dns_resolver_config"]["typed_config"]
        assert [r["socket_address"]["address"] for r in res["resolvers"]] == ["198.51.100.53"]
        assert res["use_resolvers_as_fallback"] is False
        assert tcp["typed_config"]["cluster"] == "dynamic_forward_proxy"
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert clusters["dynamic_forward_proxy"]["cluster_type"]["name"] == "envoy.clusters.dynamic_forward_proxy"


def test_inner_level_forwards_to_parent(site, allowlist):
    cfg = envoy_config(site, allowlist, site.level("level3"))
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    for port in (443, 8084, 9093):
        ep = clusters[f"parent_{port}"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert ep["address"]["socket_address"] == {"address": "192.168.104.10", "port_value": port}
        assert clusters[f"parent_{port}"]["type"] == "STATIC"


def test_levels_without_proxy_or_resolvers_are_refused(site, allowlist):
    with pytest.raises(ValueError, match="runs no proxy"):
        envoy_config(site, allowlist, site.level("level2"))
    bare = site.model_copy(update={"levels": [site.level("level4").model_copy(update={"dns_upstream": []}),
                                              *site.levels[1:]]})
    with pytest.raises(ValueError, match="dns_upstream"):
        envoy_config(bare, allowlist, bare.level("level4"))


def test_envoy_args():
    assert "--disable-hot-restart" in ENVOY_ARGS
    assert "--file-flush-interval-msec" in ENVOY_ARGS


# ----------------------------------------------------------------------------------------------- live
def client_hello(sni):
    """The bytes of a real TLS ClientHello carrying `sni` (no server needed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class Sink:
    """A TCP server that records the first bytes of every connection (stands in for the parent proxy)."""

    def __init__(self, host):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen()
        self.addr = self.sock.getsockname()
        self.got: list[bytes] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.got.append(conn.recv(8192))
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_real_envoy_allows_refuses_and_logs(site, allowlist, tmp_path):
    """The level3 bootstrap, moved to loopback: allowed names pass, the rest is reset, every connection is logged."""
    bind, allowed_src, refused_src = "127.0.0.61", "127.0.0.62", "127.0.0.1"
    sink = Sink("127.0.0.63")
    cfg = envoy_config(site, allowlist, site.level("level3"), state_dir=tmp_path, bind=bind,
                       admin_port=free_port("127.0.0.1"))
    ports = {}
    for l in cfg["static_resources"]["listeners"]:
        sa = l["address"]["socket_address"]
        ports[sa["port_value"]] = sa["port_value"] = free_port(bind)
        l["filter_chains"][0]["filter_chain_match"]["source_prefix_ranges"].append(
            {"address_prefix": allowed_src, "prefix_len": 32})
    for c in cfg["static_resources"]["clusters"]:
        if c["name"].startswith("parent_"):
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"].update(
                address=sink.addr[0], port_value=sink.addr[1])
    (tmp_path / "level3").mkdir()
    conf = tmp_path / "envoy.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "level3" / "envoy-access.log"
    proc = subprocess.Popen([str(ENVOY), "-c", str(conf), *ENVOY_ARGS, "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def connect(data, src, port=443):
            s = socket.create_connection((bind, ports[port]), timeout=3, source_address=(src, 0))
            with s:
                s.sendall(data)
                try:
                    return s.recv(100)
                except OSError as exc:
                    return exc

        wait_until(lambda: socket.create_connection((bind, ports[443]), timeout=0.2).close() or True, what="envoy")
        time.sleep(0.3)
        start = len(log.read_text().splitlines()) if log.exists() else 0
        cases = [
            ("allowed exact", client_hello("management.azure.com"), allowed_src, 443),
            ("allowed upper case", client_hello("MANAGEMENT.Azure.COM"), allowed_src, 443),
            ("allowed wildcard", client_hello("ns1.servicebus.windows.net"), allowed_src, 443),
            ("allowed 8084", client_hello("eastus.obo.arc.azure.com"), allowed_src, 8084),
            ("refused source", client_hello("management.azure.com"), refused_src, 443),
            ("unknown name", client_hello("evil.example"), allowed_src, 443),
            ("look-alike", client_hello("management.azure.com.evil.example"), allowed_src, 443),
            ("wildcard apex", client_hello("servicebus.windows.net"), allowed_src, 443),
            ("wrong port", client_hello("management.azure.com"), allowed_src, 8084),
            ("no sni", client_hello(None), allowed_src, 443),
            ("not tls", b"GET / HTTP/1.1\r\nHost: management.azure.com\r\n\r\n", allowed_src, 443),
        ]
        results = {name: connect(data, src, port) for name, data, src, port in cases}

        def lines():
            if not log.exists():
                return None
            got = [json.loads(x) for x in log.read_text().splitlines()[start:]]
            return got if len(got) >= len(cases) else None

        entries = wait_until(lines, what="access log lines")
    finally:
        stop(proc)
        sink.close()

    for name in ("refused source", "unknown name", "look-alike", "wildcard apex", "wrong port", "no sni", "not tls"):
        assert isinstance(results[name], ConnectionResetError) or results[name] == b"", (name, results[name])
    # the sink (standing in for level4) received exactly the allowed ClientHellos
    assert len(sink.got) == 4
    assert sum(b"management.azure.com" in g.lower() for g in sink.got) == 2
    assert any(b"ns1.servicebus.windows.net" in g for g in sink.got)
    assert any(b"eastus.obo.arc.azure.com" in g for g in sink.got)

    by_chain: dict = {}
    for e in entries:
        assert e["level"] == "level3"
        by_chain.setdefault(e["filter_chain"], []).append(e)
    assert len(by_chain["allowed"]) == 4
    for e in by_chain["allowed"]:
        assert e["upstream_host"] == f"{sink.addr[0]}:{sink.addr[1]}"
        assert e["upstream_cluster"].startswith("parent_")
        assert e["source"].startswith(allowed_src + ":")
        assert e["bytes_in"] > 0 and e["response_flags"] == "-"
    assert {e["sni"] for e in by_chain["allowed"]} == {"management.azure.com", "ns1.servicebus.windows.net",
                                                       "eastus.obo.arc.azure.com"}
    (refused,) = by_chain["refused-source"]
    assert refused["source"].startswith(refused_src + ":") and refused["sni"] == "management.azure.com"
    assert refused["upstream_cluster"] == "refused" and refused["response_flags"] == "UH"
    nr = by_chain[None]
    assert len(nr) == 6 and all(e["response_flags"] == "NR" for e in nr)
    assert all(e["details"] == "filter_chain_not_found" for e in nr)
    assert {e["sni"] for e in nr} == {"evil.example", "management.azure.com.evil.example", "servicebus.windows.net",
                                      "management.azure.com", None}
    assert {e["listener_port"] for e in nr} == {ports[443], ports[8084]}
    (plain,) = [e for e in nr if e["transport_failure"]]
    assert "TLS_error" in plain["transport_failure"]


def test_access_log_keys_are_envoy_operators():
    for key, op in ACCESS_LOG_FORMAT.items():
        assert key == "level" or (op.startswith("%") and op.endswith("%")), key


def test_kube_bootstrap_logs_to_stdout(site, allowlist):
    text = render_envoy(site, allowlist, site.level("level3"), target="kube")
    assert "path: /dev/stdout" in text and "envoy-access.log" not in text
