"""One window of what crossed stage 04's path: MQTT taps on every level's broker (from the admin network, where
this process runs) and a Kafka consumer on the Event Hubs endpoint (where the target makes its Azure calls: the
lab's connection string, or an Entra token on a real site), returning the records `verify.analyse` joins."""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from layernet import context
from layernet.errors import StageFailed
from layernet.telemetry.records import receiver_scope
from layernet.telemetry.verify import MqttTap, Record, broker_addresses, consume_kafka, kafka_consumer_config, routes

WINDOW_S = 6.0                # the shortest proof window (seconds)
GRACE_S = 2.0                 # the window's tail whose messages are not judged (telemetry.verify.analyse)
READY = "telemetry: kafka consumer assigned"


def consumer_config(site) -> dict:
    """The Event Hubs Kafka consumer settings where the Azure calls run. With `auth: managed_identity` the
    operator reads with an Entra token (OAUTHBEARER) of the credential the stage's Azure calls use
    (DefaultAzureCredential on a plant, the lab's service principal on the lab), so it needs Azure Event Hubs Data
    Receiver; with `auth: connection_string`, the target's connection string (the lab's, or the site's variable)."""
    azure = context.of(site).azure
    cs, ca = azure.eventhubs_client()
    if receiver_scope(site):
        return kafka_consumer_config(site, ca=ca, credential=azure.arm().cred(), group="layernet-verify")
    return kafka_consumer_config(site, connection_string=cs, ca=ca, group="layernet-verify")


def _consume_remote(site, seconds: float, stop_file: Optional[str] = None) -> list[dict]:
    """Read the hub for at most `seconds`, until `stop_file` exists; prints READY once the partitions are
    assigned. Records as JSON."""
    ready, stop = threading.Event(), threading.Event()
    got: list = []
    err: list = []

    def go():
        try:
            got.extend(consume_kafka(consumer_config(site), site.telemetry.eventhubs.hub, seconds, ready, stop))
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            err.append(f"{type(exc).__name__}: {exc}")
            ready.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    if ready.wait(30) and not err:
        print(READY, flush=True)
    end = time.monotonic() + seconds + 30
    while t.is_alive() and time.monotonic() < end:
        if stop_file and os.path.exists(stop_file):
            stop.set()
        t.join(0.1)
    if err:
        raise StageFailed(f"the Event Hubs consumer failed: {err[0]}")
    return [{"t": r.t, "topic": r.topic, "key": r.key, "payload": r.payload.decode(errors="replace")} for r in got]


def observe_window(site, seconds: float = WINDOW_S, brokers=None, settle: float = 0.0,
                   tail: float = 1.5, min_judged: Optional[int] = None, tls=None) -> tuple[list, dict]:
    """MQTT taps on every level's broker (from here: the admin network) and the Kafka consumer where the Azure
    calls run, for one window; returns (routes, {"records", "kafka_error"}) for `verify.analyse`. The consumer
    starts first; while it joins the hub, up to `settle` seconds pass until the flow reaches its last broker; it
    reads `tail` seconds beyond the taps' window. `tls`: the taps' TLS and client certificate (None: anonymous)."""
    ctx = context.of(site)
    site = ctx.site
    route_list = routes(site)
    brokers = brokers or broker_addresses(site)
    ready = threading.Event()
    kafka_out: dict = {}
    has_kafka = any(h.kind == "kafka" for r in route_list for h in r.hops)
    tmp = tempfile.mkdtemp(prefix="layernet-telemetry-")
    stop_file = str(Path(tmp) / "stop")

    def on_line(line: str) -> None:
        if READY in line:
            ready.set()
        else:
            print(line, flush=True)

    def consume():
        try:
            kafka_out["records"] = ctx.azure.call("layernet.telemetry.window:_consume_remote", progress=on_line,
                                                  seconds=settle + seconds + 60.0, stop_file=stop_file)
        except Exception as exc:  # noqa: BLE001 - becomes evidence
            kafka_out["error"] = str(exc)
        ready.set()

    kt = None
    try:
        if has_kafka:
            kt = threading.Thread(target=consume, daemon=True)
            kt.start()
        if settle:
            wait_flowing(site, settle, brokers, tls=tls)
        ready.wait(60)
        topics: dict[str, set] = {}
        depth: dict[str, int] = {}
        for r in route_list:
            for h in r.hops:
                if h.kind == "mqtt":
                    topics.setdefault(h.level, set()).add(h.topic)
                    depth[h.level] = h.index
        taps = {}
        tapped = time.monotonic()
        try:
            for lv in sorted(topics, key=lambda lv: -depth.get(lv, 0)):     # downstream first
                taps[lv] = MqttTap(*brokers[lv], sorted(topics[lv]), name="layernet-stage-tap", tls=tls).start()
            time.sleep(seconds)
            if min_judged:      # a source that misses sampling ticks: go on (up to three windows) until judged
                first = [(r.hops[0].level, r.hops[0].topic) for r in route_list if r.hops and r.hops[0].kind == "mqtt"]
                end = time.monotonic() + 2 * seconds
                while time.monotonic() < end and not all(
                        sum(1 for x in list(taps[lv].records) if x.topic == tp and x.t <= time.time() - GRACE_S)
                        >= min_judged for lv, tp in first if lv in taps):
                    time.sleep(0.5)
        finally:
            got = {lv: tap.stop() for lv, tap in taps.items()}
            tapped = time.monotonic() - tapped
        if kt is not None:
            time.sleep(tail)
            Path(stop_file).touch()
            kt.join(90)
    finally:
        Path(stop_file).touch()
        shutil.rmtree(tmp, ignore_errors=True)
    krecs = [Record(d["t"], d["topic"], d["key"], d["payload"].encode()) for d in kafka_out.get("records", [])]
    records = {r.label: {h.index: (krecs if h.kind == "kafka" else got.get(h.level, [])) for h in r.hops}
               for r in route_list}
    return route_list, {"records": records, "kafka_error": kafka_out.get("error"), "window_s": round(tapped, 1)}


def wait_flowing(site, timeout: float, brokers=None, tls=None) -> bool:
    """Until a message arrives at the last MQTT hop of every route (or `timeout`)."""
    last = {}
    for r in routes(site):
        mq = [h for h in r.hops if h.kind == "mqtt"]
        if mq:
            last.setdefault(mq[-1].level, set()).add(mq[-1].topic)
    brokers = brokers or broker_addresses(site)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            taps = [MqttTap(*brokers[lv], sorted(t), name="layernet-stage-wait", tls=tls).start()
                    for lv, t in last.items()]
        except OSError:
            time.sleep(0.5)
            continue
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0 and not all(t.records for t in taps):
            time.sleep(0.1)
        ok = all(t.stop() for t in taps)
        if ok:
            return True
    return False
