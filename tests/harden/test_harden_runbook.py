"""The harden runbook executed for real with papermill: stages 00, 01 and 01h on a lab of its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import labs
from harden_helpers import ROOT
from layernet.lab import commands, netns
from layernet.report import remote_references
from layernet.site import load_site

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")]
PREFIX = labs.plan(__file__).prefix


def test_harden_runbook_end_to_end(tmp_path: Path):
    overrides = labs.site_args(__file__)
    site = load_site(ROOT / "params" / "lab.yaml", overrides)
    args = [str(Path(sys.executable).parent / "layernet"), "run", "harden", "--site", "params/lab.yaml",
            "--out", str(tmp_path)]
    for o in overrides:
        args += ["-p", o]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        commands.down(site)
    assert not netns.our_namespaces(PREFIX)
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    m = json.loads((run_dir / "manifest.json").read_text())
    assert [s["name"] for s in m["stages"]] == ["preflight", "infrastructure", "hardening"]
    res = m["stages"][2]["results"]
    assert res["differential_names"] >= 300 and res["differential_checks"] >= 2 * res["differential_names"]
    for key in ("differential", "source", "isolation", "dns"):
        assert res[f"{key}_checks"] > 0 and res[f"{key}_failed"] == 0, res
    report = (run_dir / "02-hardening.html").read_text()
    assert remote_references(report) == []
    assert "refused-source" in report
    # the DNS and isolation sections show their checks (40 at most, saying so) with the full tables in the run folder
    assert f"showing 40 of {res['dns_checks']} rows" in report and f"showing 40 of {res['isolation_checks']} rows" in report
    import csv
    with open(run_dir / "results" / "harden-dns.csv") as f:
        assert sum(1 for _ in csv.DictReader(f)) == res["dns_checks"]
