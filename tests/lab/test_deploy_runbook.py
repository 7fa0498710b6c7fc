"""The deploy runbook, executed for real with papermill on a lab of its own: twice, the second plan is empty
(the session's `deploy_run`, tests/conftest.py)."""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest

from layernet.report import remote_references

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")]


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def managed_identity_applied(run_dir: Path) -> list[str]:
    """What in a run's stage 04 plan says the egress hop went by managed identity (params/lab.yaml's `auth:
    managed_identity`): the Event Hubs endpoint asks for the extension's system-assigned identity (no connection
    string reaches the dataflow, so the broker saw its OAUTHBEARER token) and the Data Sender and Data Receiver
    assignments were applied. The empty list when all holds; otherwise what is missing."""
    from layernet.azure.eventhubs_access import ASSIGN_RECEIVER
    from layernet.telemetry.records import SENDER_ACTION

    steps = json.loads((run_dir / "telemetry" / "plan.json").read_text())["steps"]
    applied = {s["action"] for s in steps if not s["skip"]}
    missing = [a for a in (SENDER_ACTION, ASSIGN_RECEIVER) if a not in applied]
    endpoint = [s["detail"] for s in steps if s["action"] == "create dataflow endpoint" and s["target"] == "eventhubs"]
    if not (len(endpoint) == 1 and '"method":"SystemAssignedManagedIdentity"' in endpoint[0]):
        missing.append("an Event Hubs endpoint with SystemAssignedManagedIdentity")
    return missing


def test_deploy_runbook_on_the_lab_twice(deploy_run):
    """The session's two runs on one lab (tests/conftest.py): the first applies and proves every stage, the second
    plans nothing and proves it again; the lab was up between them and `lab down` removed it."""
    first = deploy_run.proc
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run_dir, m = deploy_run.run_dir, _manifest(deploy_run.run_dir)
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
    # X.509 between levels: what the records name exists in each level's cluster (the lab created it from its CA)
    assert tel["cluster_objects"] == {f"{lv}: {kind} azure-iot-operations/{name}": "exists" for lv, kind, name in (
        ("level4", "ConfigMap", "layernet-mqtt-ca"), ("level4", "Issuer", "layernet-mqtt-issuer"),
        ("level3", "ConfigMap", "layernet-mqtt-ca"), ("level3", "Issuer", "layernet-mqtt-issuer"),
        ("level3", "Secret", "layernet-mqtt-client"), ("level2", "ConfigMap", "layernet-mqtt-ca"),
        ("level2", "Issuer", "layernet-mqtt-issuer"), ("level2", "Secret", "layernet-mqtt-client"))}
    assert "event hub layernet-lab-ehns" in (run_dir / "04-telemetry.html").read_text()
    assert managed_identity_applied(run_dir) == []            # the egress hop sent with the extension's identity
    for html in run_dir.glob("*.html"):
        assert remote_references(html.read_text()) == [], html
    pictures = [base64.b64decode(b).decode() for b in
                re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', (run_dir / "00-preflight.html").read_text())]
    assert any("Topology of site lab" in svg and "192.168.102.10" in svg for svg in pictures)
    assert '<img alt="Topology of site lab: level2 192.168.102.10 -&gt; level3' in (run_dir / "00-preflight.html").read_text()
    assert deploy_run.namespaces, "--keep-lab must leave the lab up"

    second = deploy_run.second
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    m2 = _manifest(deploy_run.second_dir)
    infra2 = next(s for s in m2["stages"] if s["name"] == "infrastructure")["results"]
    assert infra2["planned_changes"] == 0 and infra2["applied_changes"] == 0
    assert infra2["probes_failed"] == 0
    arc2 = next(s for s in m2["stages"] if s["name"] == "arc")["results"]
    assert arc2["planned_changes"] == 0 and arc2["applied"] == 0 and arc2["connected"] == 3
    tel2 = next(s for s in m2["stages"] if s["name"] == "telemetry")["results"]
    assert tel2["planned_changes"] == 0 and tel2["applied"] == 0
    assert tel2["messages"] > 0 and tel2["lost"] == 0 and tel2["failed"] == []
    assert deploy_run.down.returncode == 0, deploy_run.down.stdout + deploy_run.down.stderr
    assert deploy_run.left_namespaces == []

