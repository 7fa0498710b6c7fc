"""Load and faults on a lab of its own (prefix h2): a short load run through the full chain, an Envoy killed
mid-load (the load sees it, its pod restarts it and stage 01 has nothing to do), and a runner killed mid-stage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from layernet.allowlist import effective_allowlist
from layernet.harden import load
from layernet.lab import commands, layout, netns
from layernet.lab.clusters import admin
from layernet.render import manifests
from layernet.matrix import build_matrix
from layernet.targets import get_target
from layernet.targets.lab import with_lab_ca

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


def test_short_load_through_the_full_chain(lab, site):
    r = load.run(site, clients=16, seconds=3)
    assert r["failed"] == 0, r["errors"]
    assert r["connections"] > 100
    assert r["connect_p50_ms"] is not None and r["handshake_p99_ms"] >= r["handshake_p50_ms"]
    assert set(r["rss_before_mb"]) == {"level3/envoy", "level4/envoy"} and all(r["rss_after_mb"].values())


def test_bounds_are_enforced(site):
    with pytest.raises(ValueError):
        load.run(site, clients=10_000, seconds=1)


def _envoy_pids(site, level: str) -> list[int]:
    return admin.pod_pids(site, level, manifests.NAMESPACE, ",".join(f"{k}={v}" for k, v in manifests.SELECTOR.items()))


def _restarts(site, level: str) -> int:
    selector = ",".join(f"{k}={v}" for k, v in manifests.SELECTOR.items())
    pods = (admin.get(site, level, f"/api/v1/namespaces/{manifests.NAMESPACE}/pods", {"labelSelector": selector})
            or {}).get("items") or []
    return sum(cs.get("restartCount", 0) for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or [])


def test_envoy_killed_mid_load_fails_connections_and_its_pod_restarts_it(lab, site):
    victim, = _envoy_pids(site, "level4")
    level3_envoy, = _envoy_pids(site, "level3")
    before = _restarts(site, "level4")
    result = {}
    t = threading.Thread(target=lambda: result.update(load.run(site, clients=16, seconds=3)))
    t.start()
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    t.join(60)
    assert result["connections"] > 0 and result["failed"] > 0       # the load saw the hop die
    # the pod restarts its container (restartPolicy Always) and counts it; level3's Envoy is untouched
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (_envoy_pids(site, "level4") and _restarts(site, "level4") > before
                                                and all(r["ok"] for r in commands.status(site))):
        time.sleep(0.5)
    assert _envoy_pids(site, "level4") and _envoy_pids(site, "level4") != [victim]
    assert _restarts(site, "level4") == before + 1
    assert _envoy_pids(site, "level3") == [level3_envoy]
    assert all(r["ok"] for r in commands.status(site))
    # nothing for stage 01 to do: the cluster repaired it as a plant's would
    planned = lab.plan(commands.render_lab(site))
    assert [(c.level, c.target, c.action) for c in planned.steps if c.action != "unchanged"] == []
    matrix = build_matrix(site, effective_allowlist(site), **get_target(site).probe_inputs())
    assert all(r["ok"] for r in lab.probe("level3", matrix["level3"]))
    assert load.run(site, clients=8, seconds=1)["failed"] == 0


def test_a_levels_envoy_gone_is_shown_named_and_repaired(lab, site):
    """level4's Envoy Deployment deleted: status shows it, the level-3 probes name the level-4 hop, the plan shows
    the repair, and re-applying the infrastructure puts back only that (level3's Envoy keeps its process)."""
    level3_envoy, = _envoy_pids(site, "level3")
    assert admin.delete(site, "level4", f"/apis/apps/v1/namespaces/{manifests.NAMESPACE}/deployments/{manifests.APP}")
    rows = {r["level"]: r for r in commands.status(site)}
    assert not rows["level4"]["ok"] and "no deployment" in rows["level4"]["envoy"]
    assert rows["level3"]["ok"]
    assert commands.cli_status(site) == 1
    # the level-3 probes name the level-4 hop: the probe the Job runs, run in level3's namespace (a probe Job's
    # own image pull goes through level4's missing proxy on the lab's node, which keeps no pulled images)
    matrix = build_matrix(site, effective_allowlist(site), **get_target(site).probe_inputs())
    checks = json.dumps({"level": "level3", "checks": with_lab_ca(site, matrix["level3"])})
    ran = netns.ns_exec(layout.namespace(site, "level3"), [sys.executable, "-m", "layernet.probe"], input=checks,
                        check=False)
    bad = [r for r in json.loads(ran.stdout) if not r["ok"]]
    assert bad and {r["check"] for r in bad} <= {"tls", "refused"} and any(r["check"] == "tls" for r in bad)
    assert all("level4" in r["hint"] and str(site.level("level4").node_ip) in r["hint"] for r in bad), bad[0]
    planned = [c for c in lab.plan(commands.render_lab(site)).steps if c.action != "unchanged"]
    assert {c.level for c in planned} == {"level4"} and any(c.action == "create" and "Deployment" in c.target
                                                            for c in planned), planned
    changes = [c for c in lab.apply(commands.render_lab(site)) if c.action != "unchanged"]
    assert [(c.level, c.target, c.action) for c in changes] == [(c.level, c.target, c.action) for c in planned]
    assert _envoy_pids(site, "level3") == [level3_envoy]            # only the level that lost it changed
    assert _envoy_pids(site, "level4")
    assert all(r["ok"] for r in commands.status(site))
    assert all(r["ok"] for r in lab.probe("level3", matrix["level3"]))


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split("\n")[1:]
    kids: dict[int, list[int]] = {}
    for line in out:
        parts = line.split()
        if len(parts) == 2:
            kids.setdefault(int(parts[1]), []).append(int(parts[0]))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += kids.get(p, [])
    return found


def test_runner_killed_mid_stage_then_lab_down_leaves_nothing(site, tmp_path: Path):
    commands.down(site)
    args = [str(Path(sys.executable).parent / "layernet"), "run", "harden", "--site", "params/lab.yaml",
            "--out", str(tmp_path)]
    for a in labs.site_args(__file__):
        args += ["-p", a]
    out = tmp_path / "runner.out"
    with open(out, "w") as fh:
        runner = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "[2/3] infrastructure" not in out.read_text():
            assert runner.poll() is None, out.read_text()
            time.sleep(0.1)
        while time.monotonic() < deadline and not commands.load_procs(site):
            time.sleep(0.05)                                  # the stage is bringing the lab up
        assert commands.load_procs(site), out.read_text()
    finally:
        for pid in reversed(_tree(runner.pid)):               # a killed job: the runner and its kernel
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        runner.wait(10)
    time.sleep(0.5)
    commands.down(site)
    assert commands.leftovers(site) == []
    assert not netns.our_namespaces(PREFIX)
    state = str(commands.state_dir(site))
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout.splitlines()
    assert not [l for l in ps if state in l and not l.startswith("Z")]
