"""The lab's life cycle on a site that is not params/lab.yaml (tests/doubles/plants.py): four levels with other names
(dmz -> plant -> area -> cell), the address plan 10.77.0.0/16, the cloud on 203.0.113.0/24, only the network
sections (no telemetry, no Event Hubs namespace). Prefix `q4`. Run under the shared lock: `flock /tmp/layernet-lab.lock pytest ...`.

- a site without telemetry comes up, probes, audits and goes down with the `layernet` commands a user types (the
  lab's teardown asked Kafka for its host name, which such a site does not have);
- `lab down` removes what stages started and their records: a fresh `lab up` is healthy (it listed every stage
  service of the previous run as dead).
The lab is ALWAYS taken down at the end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import labs
from plants import plant_site, write

from layernet.lab import kafka  # noqa: E402
from layernet.site import load_site  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAYERNET = str(Path(sys.executable).parent / "layernet")
PREFIX, OCTET = labs.plan(__file__).prefix, labs.plan(__file__).octet
LEVELS = ["dmz", "plant", "area", "cell"]
PROXIES = LEVELS[:3]


def lab_test(func):
    """A test that builds the lab (marked `lab`; skipped without root)."""
    func = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")(func)
    return pytest.mark.usefixtures("lab_down_after")(pytest.mark.lab(func))


@pytest.fixture(scope="module")
def site_file(tmp_path_factory) -> Path:
    return write(plant_site("lab", base=OCTET, prefix=PREFIX), tmp_path_factory.mktemp("four"))


def _layernet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


@pytest.fixture
def lab_down_after(site_file):
    """Whatever the test does, the lab of the site file is down afterwards, with nothing left."""
    from layernet.lab import commands

    why = commands.missing_requirements()
    if why:
        pytest.skip(why)
    _layernet("lab", "down", "--site", str(site_file))
    yield
    down = _layernet("lab", "down", "--site", str(site_file))
    assert down.returncode == 0, down.stdout + down.stderr
    assert _namespaces() == []


# ----------------------------------------------------------------------------------------------- without a lab
def test_the_site_has_no_telemetry_and_no_event_hubs_namespace(site_file):
    site = load_site(site_file)
    assert site.azure.eventhubs_namespace is None
    assert not getattr(site.telemetry, "assets", None) and not getattr(site.telemetry, "dataflows", None)
    assert [lv.name for lv in site.chain] == LEVELS and site.lab.prefix == PREFIX


def test_stopping_the_event_hub_needs_no_namespace(site_file, tmp_path, monkeypatch):
    """The broker's route is found by its backend: stop works on a site that names no Event Hubs namespace and
    takes out only the broker's entry."""
    monkeypatch.setattr("layernet.paths.LAB_STATE", tmp_path)
    site = load_site(site_file)
    path = kafka.routes_path(site)
    path.parent.mkdir(parents=True)
    other = {"names": ["other.example"], "port": 443, "backend": "127.0.0.1:18443"}
    broker = {"names": ["old-ns.servicebus.windows.net", "*.servicebus.windows.net"], "port": kafka.PUBLIC_PORT,
              "backend": f"{kafka.LOOPBACK}:{kafka.LISTEN_PORT}"}
    path.write_text(json.dumps([other, broker]))
    assert kafka.stop(site) is False                 # nothing ran: nothing stopped, and no error
    assert json.loads(path.read_text()) == [other]
    assert kafka.stop(site) is False                 # again: still nothing to do


# ----------------------------------------------------------------------------------------------- the lab
@lab_test
def test_a_site_without_telemetry_comes_up_probes_audits_and_goes_down(site_file):
    site = ["--site", str(site_file)]
    up = _layernet("lab", "up", *site)
    assert up.returncode == 0, up.stdout + up.stderr
    assert sorted(_namespaces()) == sorted(f"{PREFIX}-{n}" for n in LEVELS + ["cloud", "rtr", "jumpbox"])
    status = _layernet("lab", "status", *site)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "eventhubs" not in status.stdout          # no broker: no row for one

    probe = _layernet("probe", *site)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    rows = [line.split() for line in probe.stdout.splitlines() if line.split()[:1] in [[n] for n in LEVELS]]
    assert len(rows) > 50 and {r[0] for r in rows} == set(LEVELS)

    audit = _layernet("audit", f"/var/lib/layernet/{PREFIX}", *site)
    assert audit.returncode in (0, 1), audit.stdout + audit.stderr      # 1: the probe's refused attempts are findings
    assert ", 0 malformed," in audit.stdout
    per_level = audit.stdout.split("per level", 1)[1].split("\n\n", 1)[0]
    for level in PROXIES:
        row = next(line.split() for line in per_level.splitlines() if line.split()[:1] == [level])
        assert int(row[2]) > 0, per_level             # allowed connections through every proxy

    down = _layernet("lab", "down", *site)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _namespaces() == []


@lab_test
def test_lab_down_removes_what_stages_started_and_a_fresh_lab_is_healthy(site_file):
    from layernet.lab import services, telemetry
    from layernet.targets.lab_cluster import LabCluster

    site = ["--site", str(site_file)]
    up = _layernet("lab", "up", *site)
    assert up.returncode == 0, up.stdout + up.stderr
    model = load_site(site_file)
    cluster = LabCluster(model)
    for level in LEVELS:                                              # what stage 02 starts in every level
        cluster.install_arc_agents(level, f"/subscriptions/0/resourceGroups/rg/providers/x/{level}")
    records = telemetry.records_dir(model)                            # what stage 04 leaves for its stand-ins
    records.mkdir(parents=True, exist_ok=True)
    (records / "cell.json").write_text("[]")
    status = _layernet("lab", "status", *site)
    assert status.returncode == 0 and status.stdout.count("arc-agent") == 4, status.stdout + status.stderr

    down = _layernet("lab", "down", *site)
    assert down.returncode == 0, down.stdout + down.stderr
    assert services.rows(model) == [] and not records.exists()

    up = _layernet("lab", "up", *site)
    assert up.returncode == 0, up.stdout + up.stderr
    status = _layernet("lab", "status", *site)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "arc-agent" not in status.stdout and " dead" not in status.stdout
