"""The running lab: real namespaces, a K3s-shaped cluster per level whose pods are Envoy and CoreDNS (applied by
stage 01's kube path), nftables and the cloud stand-in (root only).

The tests run in file order on one session lab; the middle ones rehearse what goes wrong on a plant (a proxy that
dies, a deleted coredns-custom, a registry the level cannot reach), the last ones crash it, rebuild it and take it
down."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from layernet.lab import layout
from layernet.lab import commands, netns, procs
from layernet.targets.kube import KubeError
from lab_helpers import TCP_CLIENT, TLS_CLIENT, in_ns

ENVOY = "/apis/apps/v1/namespaces/layernet/deployments/layernet-envoy"
ENVOY_PODS = "/api/v1/namespaces/layernet/pods"
CUSTOM = "/api/v1/namespaces/kube-system/configmaps/coredns-custom"


def _pods(lab, level: str, path: str = ENVOY_PODS) -> list[dict]:
    return lab.api(level).call("GET", path)["items"]


def _running(lab, level: str) -> dict:
    """The level's one running Envoy pod (waits a little for a rollout to settle)."""
    deadline = time.monotonic() + 30
    while True:
        pods = [p for p in _pods(lab, level) if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]
        if len(pods) == 1 or time.monotonic() > deadline:
            assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
            return pods[0]
        time.sleep(0.2)


def _edited(arts, level: str, name: str, edit):
    """`arts` with the YAML documents of one artifact passed through `edit` (a function of the list of docs)."""
    out = []
    for a in arts:
        if (a.level, a.name) == (level, name):
            docs = edit([d for d in yaml.safe_load_all(a.content) if d])
            a = a.__class__(a.level, a.name, a.kind, yaml.safe_dump_all(docs, sort_keys=False))
        out.append(a)
    return out


def _envoy_comment(docs: list[dict]) -> list[dict]:
    for d in docs:
        if d["kind"] == "ConfigMap":
            d["data"]["envoy.yaml"] += "# edited\n"
        if d["kind"] == "Deployment":
            d["spec"]["template"]["metadata"]["annotations"]["layernet/config-sha256"] = "edited"
    return docs

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_up_creates_namespaces_and_processes(lab, lab_site):
    topo = netns.topology(lab_site)
    assert set(topo.namespaces) <= set(netns.list_namespaces())
    table = commands.load_procs(lab_site)
    cluster = {f"{lv}/{svc}" for lv in ("level4", "level3", "level2")
               for svc in ("kine", "kube-server", "node")}
    assert set(table) == {"cloud/dns", "cloud/tls"} | cluster      # Envoy and CoreDNS are pods, not lab processes
    assert all(procs.alive(p) for p in table.values())
    for p in table.values():
        assert p.pid in procs.ns_pids(p.ns)
    for level in ("level4", "level3"):      # the proxy levels' Envoy runs as a pod, in the level's namespace
        pod = _running(lab, level)
        assert pod["spec"]["nodeName"] and pod["status"]["podIP"] == str(lab_site.level(level).node_ip)
        pid = int(pod["status"]["containerStatuses"][0]["containerID"].split("//")[1])
        assert pid in procs.ns_pids(layout.namespace(lab_site, level))
    assert _pods(lab, "level2") == []                                # level2 has no proxy
    for level in ("level4", "level3", "level2"):                     # K3s's CoreDNS, at every level
        dns = _pods(lab, level, "/api/v1/namespaces/kube-system/pods")
        assert [p["status"]["phase"] for p in dns] == ["Running"], dns
    rows = commands.status(lab_site)
    assert all(r["ok"] for r in rows), rows
    assert [r["envoy"] for r in rows[:3]] == ["pod 1/1 ready", "pod 1/1 ready", "-"]
    from layernet.harden.load import envoy_rss_mb

    rss = envoy_rss_mb(lab_site)                                     # the hardening's memory reads the Envoy pods
    assert set(rss) == {"level4/envoy", "level3/envoy"} and all(0 < mb < 300 for mb in rss.values()), rss
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


def test_a_changed_envoy_config_rolls_only_that_levels_envoy(lab, lab_site):
    arts = commands.render_lab(lab_site)
    before = {lv: _running(lab, lv)["metadata"]["uid"] for lv in ("level4", "level3")}
    dns = {lv: [p["metadata"]["uid"] for p in _pods(lab, lv, "/api/v1/namespaces/kube-system/pods")]
           for lv in ("level3", "level2")}
    edited = _edited(arts, "level3", "envoy-manifests.yaml", _envoy_comment)
    plan = lab.plan(edited)
    assert [(c.level, c.target) for c in plan.changes] == [("level3", "layernet/ConfigMap/layernet-envoy"),
                                                           ("level3", "layernet/Deployment/layernet-envoy")]
    assert "+    # edited\n" in plan.changes[0].detail            # the changed line, not the whole file
    applied = lab.apply(edited, plan=plan)
    assert [(c.level, c.target, c.action) for c in applied] == [(c.level, c.target, c.action) for c in plan.steps]
    after = {lv: _running(lab, lv)["metadata"]["uid"] for lv in ("level4", "level3")}
    assert after["level4"] == before["level4"] and after["level3"] != before["level3"]     # a new pod at level3 only
    assert dns == {lv: [p["metadata"]["uid"] for p in _pods(lab, lv, "/api/v1/namespaces/kube-system/pods")]
                   for lv in ("level3", "level2")}
    out = in_ns("lt-level2", TLS_CLIENT, "management.azure.com", 443, layout.ca_cert_path(lab_site))
    assert out.get("reply", {}).get("host") == "management.azure.com", out      # through the new pod
    assert {c.action for c in lab.apply(arts)} >= {"update"}               # back to the rendered config
    assert all(r["ok"] for r in commands.status(lab_site))


def test_apply_refuses_a_plan_the_lab_no_longer_gives(lab, lab_site):
    from layernet.errors import DriftError

    arts = commands.render_lab(lab_site)
    edited = [a.__class__(a.level, a.name, a.kind, a.content + "\n# v2\n") if (a.level, a.name) == ("level2", "nftables.nft")
              else a for a in arts]
    reviewed = lab.plan(edited)
    assert [(c.level, c.target, c.action) for c in reviewed.changes] == [("level2", "nftables (lab firewall)", "update")]
    api = lab.api("level3")
    live = api.call("GET", "/api/v1/namespaces/layernet/configmaps/layernet-envoy")
    api.call("PATCH", "/api/v1/namespaces/layernet/configmaps/layernet-envoy", content_type="application/merge-patch+json",
             body={"data": {"envoy.yaml": live["data"]["envoy.yaml"] + "# changed by hand after the review\n"}})
    uid = _running(lab, "level3")["metadata"]["uid"]
    try:
        with pytest.raises(DriftError, match="level3/layernet/ConfigMap/layernet-envoy: planned unchanged, now update"):
            lab.apply(edited, plan=reviewed)
        assert "# v2" not in (layout.level_dir(lab_site, "level2") / "nftables.nft").read_text()   # nothing applied
        assert _running(lab, "level3")["metadata"]["uid"] == uid
    finally:
        lab.apply(arts)


def test_probe_runs_inside_the_level_namespace(lab, lab_site):
    l3, l4 = str(lab_site.level("level3").node_ip), str(lab_site.level("level4").node_ip)
    rows = lab.probe("level2", [
        {"kind": "dns", "host": "management.azure.com", "server": str(lab_site.level("level2").node_ip), "expect_ip": l3},
        {"kind": "tls", "host": "management.azure.com", "port": 443, "connect_ip": l3, "expect_peer": l4},
        {"kind": "refused", "host": "evil.example", "port": 443, "connect_ip": l3},
    ])
    assert [r["check"] for r in rows] == ["dns", "tls", "refused"]
    assert all(r["ok"] for r in rows), rows


def _wait(what, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _tls_via_level3(lab, lab_site) -> list[dict]:
    l3, l4 = str(lab_site.level("level3").node_ip), str(lab_site.level("level4").node_ip)
    return lab.probe("level2", [{"kind": "tls", "host": "management.azure.com", "port": 443, "connect_ip": l3,
                                 "expect_peer": l4}])


def test_rehearsal_a_killed_envoy_restarts_in_its_pod_and_the_probes_recover(lab, lab_site):
    pod = _running(lab, "level3")
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].split("//")[1])
    os.kill(pid, signal.SIGKILL)

    def back() -> dict:
        p = next(x for x in _pods(lab, "level3") if x["metadata"]["uid"] == pod["metadata"]["uid"])
        cs = p["status"]["containerStatuses"][0]
        return cs if cs["restartCount"] >= 1 and cs["ready"] else {}

    cs = _wait(back)
    assert cs, "the killed Envoy did not come back in its pod"
    assert cs["lastState"]["terminated"]["exitCode"] != 0                      # the kill, as the kubelet reports it
    assert int(cs["containerID"].split("//")[1]) != pid
    rows = _tls_via_level3(lab, lab_site)
    assert all(r["ok"] for r in rows), rows


def test_rehearsal_a_deleted_coredns_custom_shows_in_the_plan_and_apply_restores_dns(lab, lab_site):
    l2, l3 = str(lab_site.level("level2").node_ip), str(lab_site.level("level3").node_ip)
    dns = [{"kind": "dns", "host": "management.azure.com", "server": l2, "expect_ip": l3}]
    lab.api("level2").call("DELETE", CUSTOM)
    lab.restart_coredns("level2")                  # as the next CoreDNS restart (a node reboot) would
    lab.wait_rollout("level2", "kube-system", "coredns")
    assert not lab.probe("level2", dns)[0]["ok"]  # level2 no longer points Azure names at level3
    arts = commands.render_lab(lab_site)
    plan = lab.plan(arts)
    assert [(c.level, c.target, c.action) for c in plan.changes] == [
        ("level2", "kube-system/ConfigMap/coredns-custom", "create"), ("level2", "kube-system/Deployment/coredns", "restart")]
    lab.apply(arts, plan=plan)
    rows = lab.probe("level2", dns)
    assert rows[0]["ok"], rows


def test_rehearsal_a_registry_level3_cannot_reach_leaves_its_envoy_in_image_pull_back_off(lab, lab_site):
    """level3 pulls through level4's proxy: with that proxy gone, a new Envoy pod at level3 cannot pull, and the
    rollout wait names the pod, ImagePullBackOff and the registry's host; apply brings level4 back and level3's
    pod pulls."""
    arts = commands.render_lab(lab_site)
    lab.api("level4").call("PATCH", ENVOY, body={"spec": {"replicas": 0}}, content_type="application/merge-patch+json")
    assert _wait(lambda: not _pods(lab, "level4"))
    old = _running(lab, "level3")
    lab.api("level3").call("DELETE", f"{ENVOY_PODS}/{old['metadata']['name']}")

    def pull_failed() -> str:
        for p in _pods(lab, "level3"):
            for cs in (p.get("status") or {}).get("containerStatuses") or []:
                if (cs.get("state") or {}).get("waiting", {}).get("reason") == "ImagePullBackOff":
                    return cs["state"]["waiting"]["message"]
        return ""

    message = _wait(pull_failed)
    assert "mcr.microsoft.com:443 unreachable" in message, message
    timeout = lab.rollout_timeout
    lab.rollout_timeout = 8.0
    try:
        with pytest.raises(KubeError) as err:
            lab.wait_rollout("level3", "layernet", "layernet-envoy")
    finally:
        lab.rollout_timeout = timeout
    text = str(err.value)
    assert "ImagePullBackOff" in text and "mcr.microsoft.com" in text, text
    assert [(c.level, c.target, c.action) for c in lab.plan(arts).changes] == [
        ("level4", "layernet/Deployment/layernet-envoy", "update")]              # the plan shows what moved
    lab.apply(arts)
    assert _running(lab, "level3")["metadata"]["uid"] != old["metadata"]["uid"]
    assert all(r["ok"] for r in _tls_via_level3(lab, lab_site))


def test_up_after_a_crash_starts_fresh(lab, lab_site):
    table = commands.load_procs(lab_site)
    for p in table.values():                                # crash: level3's cluster dies, namespaces stay
        if p.name.startswith("level3/"):
            os.kill(p.pid, signal.SIGKILL)
    commands._pids_file(lab_site).unlink()                  # ... and the PID records are lost
    shm = Path("/dev/shm/envoy_shared_memory_layernet_test")
    shm.write_bytes(b"stale")                                 # what an Envoy with hot restart leaves behind
    time.sleep(0.1)
    assert not commands.lab_is_up(lab_site)
    survivors = [p.pid for p in table.values() if procs.alive(p)]
    assert survivors
    orphans = procs.ns_pids(layout.namespace(lab_site, "level3"))   # its pods' processes outlive the node
    assert orphans
    plan = lab.plan(commands.render_lab(lab_site))
    assert plan.steps[0].target == "processes" and plan.steps[0].action == "repair"     # partly down: rebuilt
    lab.apply(commands.render_lab(lab_site), plan=plan)
    assert not any(procs.alive(p) for p in table.values())
    assert not set(orphans) & set(procs.ns_pids(layout.namespace(lab_site, "level3")))
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
