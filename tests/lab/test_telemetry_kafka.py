"""The Kafka leg of the telemetry flow: the egress dataflow produces to the lab's Event Hubs (real Apache Kafka
behind the cloud's TLS front) exactly as rendered, and the verify consumer reads every message back.

The test builds a lab of its own (its plan from tests/labs.py), starts the broker, and runs one measured
window inside the egress level's namespace: mosquitto brokers, the OPC PLC, the connector and the dataflows on that
namespace's loopback, the egress dataflow resolving `<namespace>.servicebus.windows.net` with the level's DNS and
producing with SASL PLAIN `$ConnectionString`. The lab is ALWAYS taken down at the end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import labs
from layernet.lab import kafka
from layernet.site import load_site

ROOT = Path(__file__).resolve().parents[2]
LAB_SITE = ROOT / "params" / "lab.yaml"
PREFIX = labs.plan(__file__).prefix


def overrides() -> list[str]:
    return labs.site_args(__file__)


@pytest.fixture(scope="module")
def eh_lab():
    from layernet.lab import commands

    labs.missing(commands.missing_requirements() or kafka.missing())
    site = load_site(LAB_SITE, overrides())
    clash = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
             if n.startswith(PREFIX + "-")]
    assert not clash or commands.state_dir(site).exists(), f"namespaces {clash} are not from this test's lab"
    with labs.running(site):
        kafka.start(site)
        yield site


@pytest.mark.lab
@pytest.mark.slow
def test_every_message_reaches_the_event_hub_enriched(eh_lab):
    from layernet.telemetry.loopback import measure_in_lab

    out = measure_in_lab(LAB_SITE, overrides(), seconds=8, rate=10, assets=2, timeout=240)
    print("\n" + json.dumps({k: out[k] for k in ("messages", "lost", "e2e_p50_ms", "e2e_p99_ms", "hop_p99_ms")}),
          file=sys.stderr)
    assert out["secret_leaked"] is False
    assert out["problems"] == [] and out["errors"] == {}, out
    assert out["lost"] == 0 and out["delivered"] == out["messages"] >= 2 * 25
    assert "level4 broker -> event hub layernet-lab-ehns/aio-telemetry" in out["hop_p99_ms"]
    assert out["added_sequence_gaps"] == 0
