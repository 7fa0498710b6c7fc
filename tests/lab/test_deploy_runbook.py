"""The deploy runbook, executed for real with papermill on a lab of its own: twice, the second plan is empty."""
from __future__ import annotations

import base64
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layernet.report import remote_references

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")]

REPO = Path(__file__).resolve().parents[2]
LAYERNET = str(Path(sys.executable).parent / "layernet")
PREFIX = "dr"


def _layernet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, *args], capture_output=True, text=True, cwd=REPO, timeout=900)


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(f"{PREFIX}-")]


def _manifest(proc: subprocess.CompletedProcess) -> tuple[Path, dict]:
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    return run_dir, json.loads((run_dir / "manifest.json").read_text())


def test_deploy_runbook_on_the_lab_twice(tmp_path: Path):
    site = ["--site", "params/lab.yaml", "-p", f"lab.prefix={PREFIX}"]
    _layernet("lab", "down", *site)
    try:
        first = _layernet("run", "deploy", *site, "--out", str(tmp_path), "--keep-lab")
        assert first.returncode == 0, first.stdout + first.stderr
        run_dir, m = _manifest(first)
        assert [s["name"] for s in m["stages"]][:2] == ["preflight", "infrastructure"]
        assert all(s["status"] == "passed" for s in m["stages"])
        infra = next(s for s in m["stages"] if s["name"] == "infrastructure")["results"]
        assert infra["probes"] > 100 and infra["probes_failed"] == 0 and infra["probes_passed"] == infra["probes"]
        assert infra["applied_changes"] > 0
        arc = next(s for s in m["stages"] if s["name"] == "arc")["results"]
        assert arc["connected"] == 3 and arc["failed"] == [] and arc["applied"] == arc["planned_changes"] > 0
        tel = next(s for s in m["stages"] if s["name"] == "telemetry")["results"]
        assert tel["applied"] == tel["planned_changes"] > 0 and tel["failed"] == []
        assert tel["messages"] > 0 and tel["delivered"] == tel["messages"] and tel["lost"] == 0
        assert 0 < tel["e2e_p50_ms"] <= tel["e2e_p99_ms"]
        assert "event hub layernet-lab-ehns" in (run_dir / "04-telemetry.html").read_text()
        for html in run_dir.glob("*.html"):
            assert remote_references(html.read_text()) == [], html
        pictures = [base64.b64decode(b).decode() for b in
                    re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', (run_dir / "00-preflight.html").read_text())]
        assert any("Topology of site lab" in svg and "192.168.102.10" in svg for svg in pictures)
        assert '<img alt="Topology of site lab: level2 192.168.102.10 -&gt; level3' in (run_dir / "00-preflight.html").read_text()
        assert _namespaces(), "--keep-lab must leave the lab up"

        second = _layernet("run", "deploy", *site, "--out", str(tmp_path), "--keep-lab")
        assert second.returncode == 0, second.stdout + second.stderr
        _, m2 = _manifest(second)
        infra2 = next(s for s in m2["stages"] if s["name"] == "infrastructure")["results"]
        assert infra2["planned_changes"] == 0 and infra2["applied_changes"] == 0
        assert infra2["probes_failed"] == 0
        arc2 = next(s for s in m2["stages"] if s["name"] == "arc")["results"]
        assert arc2["planned_changes"] == 0 and arc2["applied"] == 0 and arc2["connected"] == 3
        tel2 = next(s for s in m2["stages"] if s["name"] == "telemetry")["results"]
        assert tel2["planned_changes"] == 0 and tel2["applied"] == 0
        assert tel2["messages"] > 0 and tel2["lost"] == 0 and tel2["failed"] == []
    finally:
        down = _layernet("lab", "down", *site)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _namespaces() == []


def test_deploy_runbook_takes_down_a_lab_it_brought_up(deploy_run):
    """The session's deploy run (tests/conftest.py; tests/browser/ opens its reports) brought the lab up itself."""
    proc = deploy_run.proc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "taking the lab down" in proc.stdout
    assert deploy_run.left_namespaces == []
    assert proc.stdout.strip().splitlines()[-1].endswith("index.html")
