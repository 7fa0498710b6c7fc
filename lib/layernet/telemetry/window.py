"""Stage 04's side of the observation window (`verify.observe`): its length, and the Kafka consumer on the Event
Hubs endpoint where the target makes its Azure calls (the lab's connection string, or an Entra token on a real
site). The MQTT taps run in this process, on the admin network."""
from __future__ import annotations

import contextlib
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
from layernet.telemetry.verify import GRACE_S as GRACE_S, HubReader, Record, consume_kafka, kafka_consumer_config

WINDOW_S = 6.0                # the shortest proof window (seconds)
READY = "telemetry: kafka consumer assigned"


def consumer_config(site, arm=None) -> dict:
    """The Event Hubs Kafka consumer settings where the Azure calls run. With `auth: managed_identity` the
    operator reads with an Entra token (OAUTHBEARER) of the credential the stage's Azure calls use
    (DefaultAzureCredential on a plant, the lab's service principal on the lab), so it needs Azure Event Hubs Data
    Receiver; with `auth: connection_string`, the target's connection string (the lab's, or the site's variable)."""
    azure = context.of(site).azure
    site = context.site_of(site)
    cs, ca = azure.eventhubs_client()
    if receiver_scope(site):
        return kafka_consumer_config(site, ca=ca, credential=(arm or azure.arm()).cred(), group="layernet-verify")
    return kafka_consumer_config(site, connection_string=cs, ca=ca, group="layernet-verify")


def consume(site, arm, seconds: float, stop_file: Optional[str] = None, ready_file: Optional[str] = None) -> list[dict]:
    """Read the hub for at most `seconds`, until `stop_file` exists; once the partitions are assigned, creates
    `ready_file` (the window waits for it: a plant's Azure side runs this in the caller's process, where no printed
    line reaches it) and prints READY. Records as JSON. Runs where the site's Azure calls run (`hub` sends it there with
    context.elsewhere), reading with the Azure side's credential."""
    config = consumer_config(site, arm)
    site = context.site_of(site)
    ready, stop = threading.Event(), threading.Event()
    got: list = []
    err: list = []

    def go():
        try:
            got.extend(consume_kafka(config, site.telemetry.eventhubs.hub, seconds, ready, stop))
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            err.append(f"{type(exc).__name__}: {exc}")
            ready.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    if ready.wait(30) and not err:
        if ready_file:
            Path(ready_file).touch()
        print(READY, flush=True)
    end = time.monotonic() + seconds + 30
    while t.is_alive() and time.monotonic() < end:
        if stop_file and os.path.exists(stop_file):
            stop.set()
        t.join(0.1)
    if err:
        raise StageFailed(f"the Event Hubs consumer failed: {err[0]}")
    return [{"t": r.t, "topic": r.topic, "key": r.key, "payload": r.payload.decode(errors="replace")} for r in got]


def hub(site) -> HubReader:
    """The hub's reader for `verify.observe` where the site's Azure calls run (`consume` there, ended through a
    stop file; its partitions assigned when the ready file appears)."""
    ctx = context.of(site)

    def read(seconds: float, ready: threading.Event, stop: threading.Event) -> list[Record]:
        tmp = tempfile.mkdtemp(prefix="layernet-telemetry-")
        stop_file, ready_file = Path(tmp) / "stop", Path(tmp) / "ready"

        def on_line(line: str) -> None:
            if READY in line:
                ready.set()
            else:
                print(line, flush=True)

        def watch() -> None:
            while not stop.wait(0.05):
                if not ready.is_set() and ready_file.exists():
                    ready.set()
            with contextlib.suppress(OSError):
                stop_file.touch()

        threading.Thread(target=watch, daemon=True).start()
        try:
            got = context.elsewhere(ctx, consume, progress=on_line, seconds=seconds, stop_file=str(stop_file),
                                    ready_file=str(ready_file))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return [Record(d["t"], d["topic"], d["key"], d["payload"].encode()) for d in got]

    return read
