"""The running lab: real namespaces, Envoy, CoreDNS, nftables and the cloud stand-in (root only).

The tests run in file order on one session lab; the last ones crash it, rebuild it and take it down."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from layernet.lab import layout
from layernet.lab import commands, netns, procs
from lab_helpers import TCP_CLIENT, TLS_CLIENT, in_ns

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_up_creates_namespaces_and_processes(lab, lab_site):
    topo = netns.topology(lab_site)
    assert set(topo.namespaces) <= set(netns.list_namespaces())
    table = commands.load_procs(lab_site)
    cluster = {f"{lv}/{svc}" for lv in ("level4", "level3", "level2")
               for svc in ("kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node")}
    assert set(table) == {"cloud/dns", "cloud/tls", "level4/envoy", "level3/envoy", "level3/coredns",
                          "level2/coredns"} | cluster
    assert all(procs.alive(p) for p in table.values())
    for p in table.values():
        assert p.pid in procs.ns_pids(p.ns)
    rows = commands.status(lab_site)
    assert all(r["ok"] for r in rows), rows
    assert commands.lab_is_up(lab_site)
    assert commands.cli_status(lab_site) == 0


def test_exec_in_runs_inside_the_namespace_and_returns_the_exit_code(lab, lab_site):
    assert commands.exec_in(lab_site, "level2", ["sh", "-c", "ip -o addr show lab0 | grep -q 192.168.102.10"]) == 0
    assert commands.exec_in(lab_site, "cloud", ["sh", "-c", "exit 3"]) == 3
    assert commands.exec_in(lab_site, "nosuchlevel", ["true"]) == 2


def test_jump_box_routes_to_levels_only(lab, lab_site):
    topo = netns.topology(lab_site)
    for lv in lab_site.levels:
        assert netns.check_route(lv.node_ip, jump_if=topo.jump_if)["dev"] == topo.jump_if
    with pytest.raises(netns.RouteError):                     # the cloud is not reachable from the jump box
        netns.check_route(topo.cloud_tls_ip, jump_if=topo.jump_if)
    lab_routes = [r for r in netns.root_routes() if r.get("dev") == topo.jump_if]
    assert {r["dst"] for r in lab_routes} == {"192.168.0.0/24", "192.168.104.0/24", "192.168.103.0/24", "192.168.102.0/24"}


def test_level_namespaces_have_ipv6_and_forwarding_off(lab, lab_site):
    for lv in lab_site.levels:
        ns = layout.namespace(lab_site, lv.name)
        out = netns.ns_exec(ns, ["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6", "net.ipv4.ip_forward"]).stdout.split()
        assert out == ["1", "0"]
    assert netns.ns_exec("lt-rtr", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"


def test_tls_from_level2_reaches_cloud_through_level3_and_level4(lab, lab_site):
    ca = layout.ca_cert_path(lab_site)
    out = in_ns("lt-level2", TLS_CLIENT, "management.azure.com", 443, ca)
    assert "error" not in out, out
    assert out["ip"] == str(lab_site.level("level3").node_ip)                 # level2's DNS points at level3
    assert out["reply"]["host"] == "management.azure.com"
    assert out["reply"]["peer"].split(":")[0] == str(lab_site.level("level4").node_ip)   # left through level4
    time.sleep(0.5)
    for level in ("level3", "level4"):
        entries = [json.loads(l) for l in lab.logs(level)]
        assert any("management.azure.com" in json.dumps(e) for e in entries), level


def test_refused_name_is_reset_and_logged_with_NR(lab, lab_site):
    ca = layout.ca_cert_path(lab_site)
    host = "evil.example"
    l3 = str(lab_site.level("level3").node_ip)
    out = in_ns("lt-level2", TLS_CLIENT, host, 443, ca, l3)            # straight at level3's proxy
    assert "reply" not in out and ("Reset" in out["error"] or "EOF" in out["error"]), out
    deadline = time.monotonic() + 3
    hits = []
    while time.monotonic() < deadline and not hits:
        time.sleep(0.1)
        hits = [json.loads(l) for l in lab.logs("level3") if host in l]
    assert hits and "NR" in hits[-1]["response_flags"], hits


def test_level2_cannot_bypass_the_proxies(lab, lab_site):
    topo = netns.topology(lab_site)
    out = in_ns("lt-level2", TCP_CLIENT, topo.cloud_tls_ip, 443, 0.5)
    assert out["result"] != "connected"
    out = in_ns("lt-level2", TCP_CLIENT, lab_site.level("level4").node_ip, 443, 0.5)   # not adjacent
    assert out["result"] != "connected"


def test_second_apply_changes_nothing(lab, lab_site):
    changes = lab.apply(commands.render_lab(lab_site))
    assert changes and {c.action for c in changes} == {"unchanged"}
    assert {c.action for c in lab.plan(commands.render_lab(lab_site)).steps} == {"unchanged"}


def test_apply_restarts_only_what_changed(lab, lab_site):
    arts = commands.render_lab(lab_site)
    before = commands.load_procs(lab_site)
    edited = [a.__class__(a.level, a.name, a.kind, a.content + "\n# edited\n") if (a.level, a.name) == ("level3", "envoy.yaml")
              else a for a in arts]
    plan = lab.plan(edited)
    assert [(c.level, c.target) for c in plan.steps if c.action == "update"] == [("level3", "envoy.yaml")]
    assert [(c.level, c.target) for c in plan.steps if c.action == "restart"] == [("level3", "envoy")]   # shown before apply
    assert "+# edited" in next(c.detail for c in plan.steps if c.action == "update")
    applied = lab.apply(edited, plan=plan)
    assert [(c.level, c.target, c.action) for c in applied] == [(c.level, c.target, c.action) for c in plan.steps]
    after = commands.load_procs(lab_site)
    assert after["level3/envoy"].pid != before["level3/envoy"].pid
    assert all(after[n].pid == before[n].pid for n in before if n != "level3/envoy")
    assert {c.action for c in lab.apply(arts)} >= {"update"}               # back to the rendered config
    assert all(r["ok"] for r in commands.status(lab_site))


def test_apply_refuses_a_plan_the_lab_no_longer_gives(lab, lab_site):
    from layernet.errors import DriftError

    arts = commands.render_lab(lab_site)
    edited = [a.__class__(a.level, a.name, a.kind, a.content + "\n# v2\n") if (a.level, a.name) == ("level2", "nftables.nft")
              else a for a in arts]
    reviewed = lab.plan(edited)
    assert ("level2", "nftables", "restart") in [(c.level, c.target, c.action) for c in reviewed.steps]
    live = layout.level_dir(lab_site, "level3") / "envoy.yaml"
    before = live.read_text()
    live.write_text(before + "# changed by hand after the review\n")
    pids = {n: p.pid for n, p in commands.load_procs(lab_site).items()}
    try:
        with pytest.raises(DriftError, match="level3/envoy.yaml: planned unchanged, now update"):
            lab.apply(edited, plan=reviewed)
        assert "# v2" not in (layout.level_dir(lab_site, "level2") / "nftables.nft").read_text()   # nothing applied
        assert {n: p.pid for n, p in commands.load_procs(lab_site).items()} == pids
    finally:
        live.write_text(before)


def test_probe_runs_inside_the_level_namespace(lab, lab_site):
    l3, l4 = str(lab_site.level("level3").node_ip), str(lab_site.level("level4").node_ip)
    rows = lab.probe("level2", [
        {"kind": "dns", "host": "management.azure.com", "server": str(lab_site.level("level2").node_ip), "expect_ip": l3},
        {"kind": "tls", "host": "management.azure.com", "port": 443, "connect_ip": l3, "expect_peer": l4},
        {"kind": "refused", "host": "evil.example", "port": 443, "connect_ip": l3},
    ])
    assert [r["check"] for r in rows] == ["dns", "tls", "refused"]
    assert all(r["ok"] for r in rows), rows


def test_up_after_a_crash_starts_fresh(lab, lab_site):
    table = commands.load_procs(lab_site)
    for p in table.values():                                # crash: processes die, namespaces stay
        if p.name.endswith("envoy"):
            os.kill(p.pid, signal.SIGKILL)
    commands._pids_file(lab_site).unlink()                  # ... and the PID records are lost
    shm = Path("/dev/shm/envoy_shared_memory_layernet_test")
    shm.write_bytes(b"stale")                                 # what an Envoy with hot restart leaves behind
    time.sleep(0.1)
    assert not commands.lab_is_up(lab_site)
    survivors = [p.pid for p in table.values() if procs.alive(p)]
    assert survivors
    commands.up(lab_site)
    assert not any(procs.alive(p) for p in table.values())
    assert not shm.exists()
    assert all(r["ok"] for r in commands.status(lab_site))
    out = in_ns("lt-level2", TLS_CLIENT, "management.azure.com", 443, layout.ca_cert_path(lab_site))
    assert out.get("reply", {}).get("host") == "management.azure.com", out


def test_down_leaves_nothing(lab, lab_site):
    table = commands.load_procs(lab_site)
    commands.down(lab_site)
    assert commands.leftovers(lab_site) == []
    assert not [n for n in netns.list_namespaces() if n.startswith("lt-")]
    assert not netns.link_exists("lt-jump")
    assert not [r for r in netns.root_routes() if r.get("dev") == "lt-jump"]
    assert not any(procs.alive(p) for p in table.values())
    assert not commands.lab_is_up(lab_site)
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout.splitlines()
    state = str(commands.state_dir(lab_site))
    assert not [l for l in ps if state in l and not l.startswith("Z")]
