"""Load and faults on a lab of its own (prefix h2): a short load run through the full chain, an Envoy killed
mid-load (status shows it, probes name the hop, re-applying repairs it), and a runner killed mid-stage."""
from __future__ import annotations

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
from layernet.lab import commands, netns
from layernet.matrix import build_matrix
from layernet.targets import get_target

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


def test_envoy_killed_mid_load_is_shown_named_and_repaired(lab, site):
    victim = commands.load_procs(site)["level4/envoy"]
    level3_envoy_pid = commands.load_procs(site)["level3/envoy"].pid
    result = {}
    t = threading.Thread(target=lambda: result.update(load.run(site, clients=16, seconds=3)))
    t.start()
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    t.join(60)
    assert result["connections"] > 0 and result["failed"] > 0       # the load saw the hop die
    # lab status names the dead process
    rows = {r["level"]: r for r in commands.status(site)}
    assert not rows["level4"]["ok"] and "dead" in rows["level4"]["envoy"]
    assert rows["level3"]["ok"]
    assert commands.cli_status(site) == 1
    # the level-3 probes fail and their hint names the level-4 hop
    matrix = build_matrix(site, effective_allowlist(site), **get_target(site).probe_inputs())
    bad = [r for r in lab.probe("level3", matrix["level3"]) if not r["ok"]]
    assert bad and {r["check"] for r in bad} <= {"tls", "refused"} and any(r["check"] == "tls" for r in bad)
    assert all("level4" in r["hint"] and str(site.level("level4").node_ip) in r["hint"] for r in bad), bad[0]
    # the plan shows the repair; re-applying the infrastructure restarts only the dead process
    planned = lab.plan(commands.render_lab(site))
    assert [(c.level, c.target, c.action) for c in planned.steps if c.action != "unchanged"] == [
        ("level4", "envoy (process)", "repair")]
    changes = lab.apply(commands.render_lab(site))
    assert [(c.level, c.target, c.action) for c in changes if c.action != "unchanged"] == [
        ("level4", "envoy (process)", "repair")]
    assert commands.load_procs(site)["level3/envoy"].pid == level3_envoy_pid  # only the stopped one restarted
    assert all(r["ok"] for r in commands.status(site))
    assert commands.load_procs(site)["level4/envoy"].pid != victim.pid
    assert all(r["ok"] for r in lab.probe("level3", matrix["level3"]))
    assert load.run(site, clients=8, seconds=1)["failed"] == 0


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
