"""Stage 04's hub reader runs the Event Hubs consumer where the site's Azure calls run. On a plant that is this
process, where no printed line reaches the window: the window learns that the consumer's partitions are assigned
from the consumer's ready file, and ends it through its stop file, the same way as on the lab's jump box."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from layernet import context
from layernet.site import load_site
from layernet.targets import AzureSide
from layernet.telemetry import window
from layernet.telemetry.verify import Record

ROOT = Path(__file__).resolve().parents[2]


def test_a_plant_s_window_sees_the_consumer_ready_and_stops_it(monkeypatch):
    site = load_site(ROOT / "params" / "site-example.yaml")
    assert site.target == "kube"
    ctx = context.build(site)
    assert type(ctx.azure) is AzureSide                       # a plant: the consumer runs in this process
    monkeypatch.setattr(AzureSide, "arm", lambda self: "the operator's arm")
    monkeypatch.setattr(window, "consumer_config", lambda site, arm=None: {"arm": arm})
    seen = {}

    def consume_kafka(config, topic, seconds, ready, stop):  # the hub: assigned at once, one record, then until stopped
        seen["config"], seen["topic"] = config, topic
        ready.set()
        stop.wait(seconds)
        seen["stopped"] = stop.is_set()
        return [Record(1.0, "t", "k", b"{}")]

    monkeypatch.setattr(window, "consume_kafka", consume_kafka)
    ready, stop = threading.Event(), threading.Event()
    out: dict = {}
    reader = threading.Thread(target=lambda: out.setdefault("records", window.hub(ctx)(20.0, ready, stop)))
    reader.start()
    t0 = time.monotonic()
    assert ready.wait(5), "the window never learned that the consumer was assigned"
    assert time.monotonic() - t0 < 5
    stop.set()
    reader.join(10)
    assert not reader.is_alive() and seen["stopped"]
    assert seen["config"] == {"arm": "the operator's arm"} and seen["topic"] == site.telemetry.eventhubs.hub
    assert [(r.topic, r.payload) for r in out["records"]] == [("t", b"{}")]
