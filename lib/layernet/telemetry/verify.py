"""Message-level proof of the telemetry path: routes from the site, taps per hop, and the analysis.

One code path for the lab and real sites:
- `routes(site)`: for every asset dataset, the hops its messages take (the asset level's broker, then each
  parent's broker the dataflows forward to, then the event hub), with the enrichment properties expected at each.
- `MqttTap` subscribes to a hop's topic on a level's broker; `consume_kafka` reads the event hub for a window
  (lab: SASL PLAIN with the connection string; real site: OAUTHBEARER with an Entra token).
- `analyse(routes, records)` joins the hops message by message (identity: the data points' source timestamps)
  and returns typed tables: per hop received / lost / missing enrichment / sequence gaps / hop latency, and the
  end-to-end latency from the OPC UA source timestamp; `problems` names the first hop where messages stopped.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from layernet import clock
from layernet.errors import InputError
from layernet.site import Site, SiteError, load_site
from layernet.site.telemetry import broker_addresses, eventhubs_namespace

GRACE_S = 2.0                 # the window's tail whose messages are not judged (analyse, observe)


# ----------------------------------------------------------------------------------------------- routes
@dataclass(frozen=True)
class Hop:
    index: int
    name: str                        # "level2 broker", "event hub aio-telemetry"
    kind: str                        # "mqtt" or "kafka"
    level: Optional[str]             # the broker's level (None for the event hub)
    topic: str                       # MQTT topic, or the hub for Kafka
    key: Optional[str]               # Kafka: the message key (the MQTT topic the egress dataflow read)
    expect: tuple[tuple[str, str], ...]   # enrichment properties present from this hop on
    via: Optional[str]               # the dataflow that carried messages here (None at the first hop)


@dataclass(frozen=True)
class Route:
    asset: str
    dataset: str
    points: tuple[str, ...]
    sequence_point: Optional[str]
    hops: tuple[Hop, ...]

    @property
    def label(self) -> str:
        return f"{self.asset}/{self.dataset}"


def routes(site: Site, include_eventhubs: bool = True) -> list[Route]:
    """The path of every asset dataset through the site's dataflows (a dataflow reads the topic the previous
    hop wrote, on its own level's broker)."""
    tel = site.telemetry
    hub = tel.eventhubs.hub
    ns = eventhubs_namespace(tel, site.azure.eventhubs_namespace)
    out = []
    for a in tel.assets:
        for ds in a.datasets:
            level, topic, expect = a.level, ds.topic, []
            hops = [Hop(0, f"{level} broker", "mqtt", level, topic, None, (), None)]
            seen = set()
            while (level, topic) not in seen:
                seen.add((level, topic))
                flow = next((f for f in tel.dataflows if f.level == level and f.source == topic), None)
                if flow is None:
                    break
                expect = expect + list(flow.enrich.items())
                if flow.destination == "eventhubs":
                    if include_eventhubs:
                        hops.append(Hop(len(hops), f"event hub {ns}/{hub}", "kafka", None, hub, topic,
                                        tuple(expect), flow.name))
                    break
                level, topic = site.level(level).parent, flow.topic
                hops.append(Hop(len(hops), f"{level} broker", "mqtt", level, topic, None, tuple(expect), flow.name))
            out.append(Route(a.name, ds.name, tuple(p.name for p in ds.data_points), ds.sequence_point, tuple(hops)))
    return out


# ----------------------------------------------------------------------------------------------- taps
@dataclass
class Record:
    t: float                         # receive time (time.time())
    topic: str                       # MQTT topic, or the Kafka topic (hub)
    key: Optional[str]               # Kafka key
    payload: bytes


class MqttTap:
    """Subscribes (QoS 1) to topics on one broker and keeps every message with its receive time."""

    def __init__(self, host: str, port: int, topics: list[str], name: str = "layernet-tap", tls=None):
        self.host, self.port, self.topics = host, port, sorted(set(topics))
        self.name, self.tls = name, tls
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._client = None

    def start(self) -> "MqttTap":
        from layernet.lab.dataflow import connect_mqtt

        def on_message(client, userdata, msg):
            rec = Record(time.time(), msg.topic, None, bytes(msg.payload))
            with self._lock:
                self.records.append(rec)

        self._client = connect_mqtt(self.host, self.port, f"{self.name}-{self.host}-{self.port}", self.tls,
                                    on_message=on_message, subscribe=self.topics)
        return self

    def stop(self) -> list[Record]:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        with self._lock:
            return list(self.records)


def kafka_consumer_config(site: Site, connection_string: Optional[str] = None, ca: Optional[str] = None,
                          credential=None, group: Optional[str] = None) -> dict:
    """confluent-kafka consumer settings for the site's Event Hubs Kafka endpoint.

    With a connection string (the lab; a real site that chose it): SASL PLAIN, user `$ConnectionString`.
    Otherwise OAUTHBEARER with a token for `https://<namespace>.servicebus.windows.net/.default` from the
    azure-identity credential given (DefaultAzureCredential when None)."""
    ns = eventhubs_namespace(site.telemetry, site.azure.eventhubs_namespace)
    host = f"{ns}.servicebus.windows.net:9093"
    conf: dict[str, Any] = {
        "bootstrap.servers": host,
        "security.protocol": "SASL_SSL",
        "group.id": group or site.telemetry.eventhubs.consumer_group,
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
        "client.id": "layernet-verify",
    }
    if ca:
        conf["ssl.ca.location"] = ca
    if connection_string:
        conf.update({"sasl.mechanisms": "PLAIN", "sasl.username": "$ConnectionString", "sasl.password": connection_string})
        return conf
    scope = f"https://{ns}.servicebus.windows.net/.default"

    def oauth_cb(_config):
        cred = credential
        if cred is None:
            from azure.identity import DefaultAzureCredential

            cred = DefaultAzureCredential()
        tok = cred.get_token(scope)
        return tok.token, float(tok.expires_on)

    conf.update({"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": oauth_cb})
    return conf


def consume_kafka(conf: dict, topic: str, seconds: float, ready: Optional[threading.Event] = None,
                  stop: Optional[threading.Event] = None) -> list[Record]:
    """Read `topic` for `seconds` (from the partitions' ends at assignment time). Sets `ready` once assigned.
    Raises KafkaException when Event Hubs refuses the consumer (its token, or the topic or group to its principal):
    reading on would only show an empty hub."""
    from confluent_kafka import Consumer, KafkaError, KafkaException

    refused: list = []
    refusals = (KafkaError._AUTHENTICATION, KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.SASL_AUTHENTICATION_FAILED)

    def on_error(err) -> None:
        if err.code() in refusals:
            refused.append(err)

    consumer = Consumer({**conf, "error_cb": on_error})
    assigned = threading.Event()

    def on_assign(c, parts):
        # start at each partition's end as of now, so everything produced after `ready` is read
        for p in parts:
            lo, hi = c.get_watermark_offsets(p, timeout=10)
            p.offset = hi
        c.assign(parts)
        assigned.set()
        if ready is not None:
            ready.set()

    consumer.subscribe([topic], on_assign=on_assign)
    out: list[Record] = []
    end = time.time() + seconds
    try:
        while time.time() < end and not (stop is not None and stop.is_set()):
            msg = consumer.poll(0.2)
            if refused:
                raise KafkaException(refused[0])
            if msg is None:
                continue
            if msg.error():
                if msg.error().fatal() or msg.error().code() in refusals:
                    raise KafkaException(msg.error())
                continue
            key = msg.key().decode(errors="replace") if msg.key() is not None else None
            out.append(Record(time.time(), msg.topic(), key, msg.value() or b""))
    finally:
        consumer.close()
    return out


# ----------------------------------------------------------------------------------------------- analysis
def _ts(text: Any) -> Optional[float]:
    if not isinstance(text, str):
        return None
    try:
        return clock.parse(text).timestamp()
    except ValueError:
        return None


@dataclass
class _Seen:
    t: float
    body: dict


def _identity(route: Route, body: dict) -> Optional[str]:
    stamps = []
    for p in route.points:
        v = body.get(p)
        if isinstance(v, dict) and "SourceTimestamp" in v:
            stamps.append(f"{p}={v['SourceTimestamp']}")
    return "|".join(stamps) if stamps else None


def _source_time(route: Route, body: dict) -> Optional[float]:
    ts = [_ts(body.get(p, {}).get("SourceTimestamp")) for p in route.points if isinstance(body.get(p), dict)]
    ts = [t for t in ts if t is not None]
    return max(ts) if ts else None


def _hop_records(route: Route, hop: Hop, records: dict[int, list[Record]] | list[Record]) -> list[Record]:
    recs = records.get(hop.index, []) if isinstance(records, dict) else records
    if hop.kind == "kafka":
        return [r for r in recs if r.topic == hop.topic and (r.key is None or r.key == hop.key)]
    return [r for r in recs if r.topic == hop.topic]


def _pct(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 3)


@dataclass
class Analysis:
    hops: Any                         # pandas DataFrame, one row per route and hop
    latency: Any                      # pandas DataFrame, one row per message and segment (ms)
    summary: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"summary": self.summary, "problems": self.problems,
                "hops": json.loads(self.hops.to_json(orient="records")),
                "latency": json.loads(self.latency.to_json(orient="records"))}

    @classmethod
    def from_dict(cls, d: dict) -> "Analysis":
        import pandas as pd

        return cls(pd.DataFrame(d["hops"]), pd.DataFrame(d["latency"], columns=["route", "segment", "ms"]),
                   dict(d["summary"]), list(d["problems"]))


def analyse(route_list: list[Route], records: dict[str, dict[int, list[Record]]], until: Optional[float] = None,
            grace_s: float = GRACE_S) -> Analysis:
    """records[route.label][hop.index] = what the tap of that hop received. Only messages first seen at hop 0 at
    least `grace_s` before `until` (default: the last record) are judged, so the window's tail is not loss."""
    import pandas as pd

    rows, lat_rows, problems = [], [], []
    summary: dict = {"routes": len(route_list), "messages": 0, "delivered": 0, "lost": 0}
    e2e_all: list[float] = []
    for route in route_list:
        recs = records.get(route.label, {})
        seen: list[dict[str, _Seen]] = []
        bad_fields: list[int] = []
        dups: list[int] = []
        received: list[int] = []
        for hop in route.hops:
            per: dict[str, _Seen] = {}
            bad = dup = n = 0
            for r in sorted(_hop_records(route, hop, recs), key=lambda r: r.t):
                try:
                    body = json.loads(r.payload)
                except ValueError:
                    bad += 1
                    continue
                if not isinstance(body, dict):
                    bad += 1
                    continue
                n += 1
                ident = _identity(route, body)
                if ident is None:
                    bad += 1
                    continue
                if ident in per:
                    dup += 1
                    continue
                if any(body.get(k) != v for k, v in hop.expect):
                    bad += 1
                per[ident] = _Seen(r.t, body)
            seen.append(per)
            bad_fields.append(bad)
            dups.append(dup)
            received.append(n)
        first = seen[0] if seen else {}
        last_t = until
        if last_t is None:
            last_t = max((s.t for per in seen for s in per.values()), default=0.0)
        judged = {k for k, s in first.items() if s.t <= last_t - grace_s}
        summary["messages"] += len(judged)
        # where each message was last seen: it stopped after that hop (a tap that missed a message a later hop
        # saw is counted as tap_missed, not as loss)
        last_seen = {k: max(i for i, per in enumerate(seen) if k in per) for k in judged}
        for i, hop in enumerate(route.hops):
            per = seen[i]
            arrived = judged & set(per)
            missing = {k for k in judged if last_seen[k] < i}
            new_missing = {k for k in missing if last_seen[k] == i - 1}
            tap_missed = len(judged - arrived - missing)
            seqs = sorted({per[k].body.get(route.sequence_point, {}).get("Value") for k in arrived}
                          - {None}) if route.sequence_point else []
            seqs = [s for s in seqs if isinstance(s, int)]
            gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
            hop_lat = []
            if i > 0:
                for k in arrived:
                    if k in seen[i - 1]:
                        hop_lat.append((per[k].t - seen[i - 1][k].t) * 1000)
                        lat_rows.append({"route": route.label, "segment": f"{route.hops[i-1].name} -> {hop.name}",
                                         "ms": round(hop_lat[-1], 3)})
            rows.append({
                "route": route.label, "hop": i, "name": hop.name, "kind": hop.kind, "topic": hop.topic,
                "via": hop.via or "", "received": received[i], "judged": len(judged), "arrived": len(arrived),
                "lost": len(missing), "lost_here": len(new_missing), "tap_missed": tap_missed, "duplicates": dups[i],
                "bad_or_unenriched": bad_fields[i], "sequence_gaps": gaps,
                "hop_p50_ms": _pct(hop_lat, 0.5), "hop_p99_ms": _pct(hop_lat, 0.99),
            })
            if new_missing and not problems_for(problems, route.label):
                came = route.hops[i - 1].name if i else "the source"
                problems.append(f"{route.label}: {len(new_missing)} of {len(judged)} messages did not reach {hop.name} "
                                f"from {came} (dataflow {hop.via or '-'}); they stopped at {came}")
            if bad_fields[i]:
                want = ", ".join(f"{k}={v}" for k, v in hop.expect) or "the data points"
                problems.append(f"{route.label}: {bad_fields[i]} message(s) at {hop.name} without {want}")
        if route.hops:
            final = seen[-1]
            for k in judged & set(final):
                src = _source_time(route, final[k].body)
                if src is not None:
                    ms = (final[k].t - src) * 1000
                    e2e_all.append(ms)
                    lat_rows.append({"route": route.label, "segment": "end to end (OPC UA source time)", "ms": round(ms, 3)})
            delivered = len(judged & set(final))
            summary["delivered"] += delivered
            summary["lost"] += len(judged) - delivered
        if not judged:
            problems.append(f"{route.label}: no message seen at {route.hops[0].name if route.hops else 'the source'} "
                            f"(topic {route.hops[0].topic if route.hops else '-'}): is the connector publishing?")
    summary["e2e_p50_ms"] = _pct(e2e_all, 0.5)
    summary["e2e_p99_ms"] = _pct(e2e_all, 0.99)
    summary["e2e_max_ms"] = round(max(e2e_all), 3) if e2e_all else None
    summary["loss"] = (summary["lost"] / summary["messages"]) if summary["messages"] else None
    return Analysis(pd.DataFrame(rows), pd.DataFrame(lat_rows, columns=["route", "segment", "ms"]), summary, problems)


def problems_for(problems: list[str], label: str) -> bool:
    return any(p.startswith(f"{label}: ") and "did not reach" in p for p in problems)


# ----------------------------------------------------------------------------------------------- one window

# reads the event hub: hub(seconds, ready, stop) -> its records; sets `ready` once partitions are assigned, returns
# when `stop` is set (or after `seconds`), raises when the hub refuses it
HubReader = Callable[[float, threading.Event, threading.Event], list[Record]]


def kafka_hub(conf: dict, topic: str) -> HubReader:
    """The hub read in this process with the consumer settings `conf` (kafka_consumer_config)."""
    return lambda seconds, ready, stop: consume_kafka(conf, topic, seconds, ready, stop)


def observe(site: Site, seconds: float, brokers: Optional[dict[str, tuple[str, int]]] = None, tls=None,
            hub: Optional[HubReader] = None, settle: float = 0.0, tail: float = 1.5, min_judged: Optional[int] = None,
            started: Optional[Callable[[], None]] = None) -> tuple[list[Route], dict]:
    """THE observation window (stage 04, the verify command, the loopback flow): one MQTT tap per broker (`tls`:
    their TLS and client certificate, None: anonymous) and, with `hub`, the event hub's reader. Returns (routes,
    {"records", "kafka_error", "window_s"}) for `analyse`; records[route.label][hop.index] = what that hop's tap got.
    The hub's reader starts first; while it joins, up to `settle` seconds pass until the flow reaches its last broker
    (wait_flowing). The taps subscribe downstream first, then `started` is called (e.g. to start the publisher), and
    they listen `seconds`; with `min_judged`, up to two more windows until every route's first hop has that many
    judged messages. The reader reads `tail` seconds beyond the taps."""
    route_list = routes(site, include_eventhubs=hub is not None)
    brokers = brokers or broker_addresses(site)
    ready, stop = threading.Event(), threading.Event()
    hub_out: dict = {}

    def consume() -> None:
        try:
            hub_out["records"] = hub(settle + seconds * (3 if min_judged else 1) + 60.0, ready, stop)
        except Exception as exc:  # noqa: BLE001 - becomes evidence
            hub_out["error"] = str(exc)
        ready.set()

    kt = None
    got: dict[str, list[Record]] = {}
    tapped = 0.0
    try:
        if any(h.kind == "kafka" for r in route_list for h in r.hops):
            kt = threading.Thread(target=consume, daemon=True)
            kt.start()
        if settle:
            wait_flowing(site, settle, brokers, tls=tls)
        if kt is not None:
            ready.wait(60)
        topics: dict[str, set] = {}
        depth: dict[str, int] = {}
        for r in route_list:
            for h in r.hops:
                if h.kind == "mqtt":
                    topics.setdefault(h.level, set()).add(h.topic)
                    depth[h.level] = h.index
        taps: dict[str, MqttTap] = {}
        tapped = time.monotonic()
        try:
            # downstream first: a message the first hop's tap sees was published after every later tap subscribed
            for lv in sorted(topics, key=lambda lv: -depth.get(lv, 0)):
                taps[lv] = MqttTap(*brokers[lv], sorted(topics[lv]), tls=tls).start()
            if started is not None:
                started()
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
            stop.set()
            kt.join(90)
    finally:
        stop.set()
    krecs = hub_out.get("records", [])
    records = {r.label: {h.index: (krecs if h.kind == "kafka" else got.get(h.level, [])) for h in r.hops}
               for r in route_list}
    return route_list, {"records": records, "kafka_error": hub_out.get("error"), "window_s": round(tapped, 1)}


def wait_flowing(site: Site, timeout: float, brokers: Optional[dict[str, tuple[str, int]]] = None, tls=None) -> bool:
    """Until a message arrives at the last MQTT hop of every route (or `timeout`)."""
    last: dict[str, set] = {}
    for r in routes(site):
        mq = [h for h in r.hops if h.kind == "mqtt"]
        if mq:
            last.setdefault(mq[-1].level, set()).add(mq[-1].topic)
    brokers = brokers or broker_addresses(site)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            taps = [MqttTap(*brokers[lv], sorted(t), name="layernet-wait", tls=tls).start() for lv, t in last.items()]
        except OSError:
            time.sleep(0.5)
            continue
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0 and not all(t.records for t in taps):
            time.sleep(0.1)
        if all(t.stop() for t in taps):
            return True
    return False


# ----------------------------------------------------------------------------------------------- evidence
def evidence_rows(analysis: Analysis, p99_limit_ms: Optional[float] = None) -> list[dict]:
    """Stage evidence (layernet.stages.base.evidence): one row per route and hop, then loss and latency."""
    from layernet.evidence import evidence

    rows = []
    for _, h in analysis.hops.iterrows():
        level = h["name"].split(" ", 1)[0] if h["kind"] == "mqtt" else "eventhubs"
        ok = h["lost"] == 0 and h["bad_or_unenriched"] == 0 and h["judged"] > 0
        rows.append(evidence(
            level, f"telemetry {h['route']} at {h['name']}",
            f"{h['judged']} of {h['judged']} messages on {h['topic']}" + (f" via {h['via']}" if h["via"] else ""),
            f"{h['arrived']} arrived, {h['lost']} lost, {h['bad_or_unenriched']} unenriched, "
            f"{h['sequence_gaps']} sequence gaps", bool(ok),
            hint=f"messages stop before {h['name']}: check dataflow {h['via'] or '-'} and the hop into it"
            if h["lost_here"] else "check the enrichment of the dataflows before this hop"))
    s = analysis.summary
    rows.append(evidence("all", "telemetry loss", "0 lost", f"{s['lost']} of {s['messages']} lost",
                         s["messages"] > 0 and s["lost"] == 0, hint="; ".join(analysis.problems[:3])))
    if p99_limit_ms is not None:
        p99 = s.get("e2e_p99_ms")
        rows.append(evidence("all", "telemetry end-to-end p99", f"<= {p99_limit_ms:g} ms",
                             f"{p99} ms (p50 {s.get('e2e_p50_ms')} ms)", p99 is not None and p99 <= p99_limit_ms,
                             hint="latency from the OPC UA source timestamp to the last hop"))
    return rows


# ----------------------------------------------------------------------------------------------- one call
def verify(site: Site, seconds: float = 10.0, brokers: Optional[dict[str, tuple[str, int]]] = None,
           hub: Optional[HubReader] = None, tls=None, p99_limit_ms: Optional[float] = None) -> dict:
    """Tap every hop for a window and judge it: {"analysis", "evidence", "ok"} (charts: layernet.telemetry.charts).
    Raises ConnectionError when the hub's reader failed."""
    route_list, got = observe(site, seconds, brokers=brokers, tls=tls, hub=hub)
    if got["kafka_error"]:
        raise ConnectionError(f"the Event Hubs consumer failed: {got['kafka_error']}")
    a = analyse(route_list, got["records"])
    rows = evidence_rows(a, p99_limit_ms)
    return {"analysis": a, "evidence": rows, "ok": all(r["ok"] for r in rows)}


def main(argv: Optional[list[str]] = None) -> int:
    """python -m layernet.telemetry.verify --site FILE [-p K=V] [--seconds N] [--kafka-ca PEM] [--broker L=H:P]
    [--mqtt-ca PEM --mqtt-cert CRT --mqtt-key KEY]: one verification window as JSON (analysis and evidence). In
    X.509 mode (telemetry.mqtt.mode: x509) the taps connect with TLS and the client certificate given. With --kafka-ca the hub is read too, with the
    connection string from the site's connection_string_env variable when set, else an Entra token (OAUTHBEARER).
    Run it where the brokers and the Event Hubs name are reachable (in the lab: ip netns exec <jump box ns> ...)."""
    import argparse
    import os
    import sys

    ap = argparse.ArgumentParser(prog="python -m layernet.telemetry.verify", description=main.__doc__.splitlines()[0])
    ap.add_argument("--site", required=True)
    ap.add_argument("-p", dest="overrides", action="append", default=[])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--kafka-ca")
    ap.add_argument("--eventhubs", action="store_true", help="read the hub (with the system CA unless --kafka-ca)")
    ap.add_argument("--broker", action="append", default=[], help="LEVEL=HOST:PORT instead of the node address")
    ap.add_argument("--p99-ms", type=float)
    ap.add_argument("--mqtt-ca", help="x509 mode: the CA of the brokers' certificates (the trusted CA config map's)")
    ap.add_argument("--mqtt-cert", help="x509 mode: the taps' client certificate (the client certificate secret's)")
    ap.add_argument("--mqtt-key", help="x509 mode: its key")
    args = ap.parse_args(argv)
    try:
        site = load_site(args.site, args.overrides)
    except SiteError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    brokers = broker_addresses(site)
    for item in args.broker:
        level, _, hp = item.partition("=")
        host, _, port = hp.rpartition(":")
        if level not in brokers or not host or not port.isdigit():
            print(f"error: --broker {item!r}: expected LEVEL=HOST:PORT with a level of the site ({', '.join(brokers)})",
                  file=sys.stderr)
            return 2
        brokers[level] = (host, int(port))
    tls = {"--mqtt-ca": args.mqtt_ca, "--mqtt-cert": args.mqtt_cert, "--mqtt-key": args.mqtt_key}
    mqtt_tls = None
    if site.telemetry.mqtt.tls:
        missing = [flag for flag, value in tls.items() if not value]
        absent = [f"{flag} {value[:80]!r}" for flag, value in tls.items() if value and not os.path.isfile(value)]
        if missing or absent:
            why = f"{', '.join(missing)} missing" if missing else f"no such file: {', '.join(absent)}"
            print(f"error: {why}: the site's telemetry.mqtt.mode is x509, so the taps need TLS and a client certificate "
                  "the brokers trust: --mqtt-ca CA.pem --mqtt-cert CLIENT.crt --mqtt-key CLIENT.key", file=sys.stderr)
            return 2
        from layernet.lab.dataflow import MqttTls

        mqtt_tls = MqttTls(args.mqtt_ca, args.mqtt_cert, args.mqtt_key)
    elif any(tls.values()):
        print(f"error: {', '.join(f for f, v in tls.items() if v)}: the site's telemetry.mqtt.mode is anonymous (no TLS "
              f"on port {site.telemetry.mqtt.effective_port}); remove them or use -p telemetry.mqtt.mode=x509",
              file=sys.stderr)
        return 2
    hub = None
    if args.kafka_ca or args.eventhubs:
        cs = os.environ.get(site.telemetry.eventhubs.connection_string_env) or None
        hub = kafka_hub(kafka_consumer_config(site, connection_string=cs, ca=args.kafka_ca, group="layernet-verify"),
                        site.telemetry.eventhubs.hub)
    try:
        out = verify(site, args.seconds, brokers=brokers, hub=hub, tls=mqtt_tls, p99_limit_ms=args.p99_ms)
    except (ConnectionError, OSError, TimeoutError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"analysis": out["analysis"].to_dict(), "evidence": out["evidence"], "ok": out["ok"]},
                     sort_keys=True, default=str))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
