"""The deploy runbook on another plant's lab site with only the network sections (tests/doubles/plants.py: four
levels dmz -> plant -> area -> cell on 10.78.0.0/16, the cloud on 203.0.113.0/24; no arc, aio, telemetry or images
section, no Event Hubs namespace), run as a user runs it: `layernet run deploy --site FILE`. Every stage passes:
the section defaults follow the target (the lab's executors), stage 04 has nothing to do, and the run takes down
the lab it brought up. Prefix `qd`. Run under the shared lock: `flock /tmp/layernet-lab.lock pytest ...`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import labs
from plants import plant_site, write

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")]

REPO = Path(__file__).resolve().parents[2]
LAYERNET = str(Path(sys.executable).parent / "layernet")
PREFIX, OCTET = labs.plan(__file__).prefix, labs.plan(__file__).octet
LEVELS = ["dmz", "plant", "area", "cell"]
STAGES = ["preflight", "infrastructure", "arc", "aio", "telemetry", "audit"]


def _layernet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, *args], capture_output=True, text=True, cwd=REPO, timeout=1500)


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def test_a_network_only_four_level_lab_site_deploys_with_every_stage_passed(tmp_path: Path):
    from layernet.lab import commands

    why = commands.missing_requirements()
    if why:
        pytest.skip(why)
    raw = plant_site("lab", base=OCTET, prefix=PREFIX)
    assert not {"arc", "aio", "telemetry", "images"} & raw.keys() and "eventhubs_namespace" not in raw["azure"]
    site = ["--site", str(write(raw, tmp_path))]
    _layernet("lab", "down", *site)
    try:
        proc = _layernet("run", "deploy", *site, "--out", str(tmp_path / "runs"))
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
        m = json.loads((run_dir / "manifest.json").read_text())
        assert [(s["name"], s["status"]) for s in m["stages"]] == [(s, "passed") for s in STAGES]
        res = {s["name"]: s.get("results") or {} for s in m["stages"]}
        infra = res["infrastructure"]
        assert infra["probes"] > 100 and infra["probes_failed"] == 0
        assert res["arc"]["connected"] == len(LEVELS) and res["arc"]["failed"] == []
        assert res["telemetry"]["planned_changes"] == 0 and res["telemetry"]["failed"] == []
        assert "taking the lab down" in proc.stdout and _namespaces() == []
    finally:
        down = _layernet("lab", "down", *site)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _namespaces() == []
