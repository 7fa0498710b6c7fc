"""The lab's dataflow: runs a level's dataflows from the SAME rendered resource records a real site applies.

For every `dataflows/<name>` record of the level (see `layernet.render.telemetry`) it reads the Source operation
(topic on the level's own broker, endpoint `default`), the BuiltInTransformation map (PassThrough and NewProperties
rules in the mapping language) and the Destination (an endpoint record of the same level plus the topic or hub),
then carries each message over real MQTT (QoS 1) to the parent's broker, or produces it to Kafka (the Event Hubs
endpoint, SASL_SSL) authenticating as the endpoint's `kafkaSettings.authentication` says:

- `SystemAssignedManagedIdentity`: OAUTHBEARER with an Entra token of the AIO extension's identity for
  `systemAssignedManagedIdentitySettings.audience` (default `https://<namespace>.servicebus.windows.net`);
- `UserAssignedManagedIdentity`: OAUTHBEARER with a token of the user-assigned identity `clientId` in `tenantId`
  for `scope` (default `https://<namespace>.servicebus.windows.net/.default`);
- `Sasl` Plain: user `$ConnectionString`, password read from an environment variable.

Tokens come from the lab's Entra at login.microsoftonline.com (reached from the level, through its proxies) with
the credentials of the identities the cluster holds (`--identity FILE`, written by `layernet.lab.workload_identity`;
a real cluster's Arc identity service holds them). Refusals by Event Hubs are logged with the broker's reason.

Run: python -m layernet.lab.dataflow --resources level3.json --local 192.168.103.10:1883 [--ca lab-ca.pem]
     [--identity identity.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from layernet.render.telemetry import find, unquote

log = logging.getLogger("layernet.lab.dataflow")


class MappingError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------- mapping
def _constant(expression: str) -> Any:
    """A constant expression: a double-quoted string, a number, true or false."""
    text = expression.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        if '"' in inner:
            raise MappingError(f"expression {expression!r}: a string constant holds no inner double quote")
        return inner
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise MappingError(f"expression {expression!r}: the lab dataflow supports constants only "
                           "(a string in double quotes, a number, true or false)") from None


def _path(output: str) -> list[str]:
    """Field path of an output: segments split on '.', a double-quoted segment taken literally."""
    parts, cur, quoted = [], "", False
    for ch in output:
        if ch == '"':
            quoted = not quoted
            cur += ch
        elif ch == "." and not quoted:
            parts.append(unquote(cur))
            cur = ""
        else:
            cur += ch
    if quoted:
        raise MappingError(f"output {output!r}: unbalanced double quote")
    parts.append(unquote(cur))
    if any(p == "" for p in parts):
        raise MappingError(f"output {output!r}: empty field name")
    return parts


def compile_map(rules: list[dict]) -> Callable[[dict], dict]:
    """A function applying the map rules to a decoded JSON message (an object)."""
    steps: list[tuple[str, Any, Any]] = []
    passthrough = False
    for r in rules:
        kind = r.get("type", "Compute")
        if kind == "PassThrough":
            if r.get("inputs") != ["*"] or r.get("output") != "*":
                raise MappingError(f"PassThrough {r}: the lab dataflow supports inputs ['*'] -> output '*' only")
            passthrough = True
        elif kind == "NewProperties":
            if r.get("inputs"):
                raise MappingError(f"NewProperties {r}: inputs must be empty for a constant")
            steps.append(("set", _path(r["output"]), _constant(r["expression"])))
        else:
            raise MappingError(f"map rule type {kind!r} is not supported by the lab dataflow")

    def apply(msg: dict) -> dict:
        out: dict = dict(msg) if passthrough else {}
        for _, path, value in steps:
            cur = out
            for seg in path[:-1]:
                cur = cur.setdefault(seg, {})
            cur[path[-1]] = value
        return out

    return apply


# ----------------------------------------------------------------------------------------------- plans
@dataclass
class FlowPlan:
    name: str
    source_topic: str
    transform: Callable[[dict], dict]
    kind: str                        # "mqtt" or "kafka"
    host: str
    port: int
    destination: str                 # topic (MQTT) or hub (Kafka)
    endpoint: dict = field(repr=False, default_factory=dict)


def _split_host(host: str, default_port: int) -> tuple[str, int]:
    name, _, port = host.rpartition(":")
    if not name:
        return host, default_port
    return name, int(port)


def plan_from_resources(resources: list[dict]) -> list[FlowPlan]:
    """Every dataflow of one level's rendered records, resolved against that level's endpoint records."""
    plans = []
    for rec in find(resources, "dataflows"):
        name = rec["id"].rsplit("/", 1)[1]
        ops = {op["operationType"]: op for op in rec["body"]["properties"]["operations"]}
        src = ops["Source"]["sourceSettings"]
        if src.get("endpointRef", "default") != "default":
            raise MappingError(f"dataflow {name}: the lab reads sources from the level's own broker only")
        if len(src["dataSources"]) != 1:
            raise MappingError(f"dataflow {name}: one source topic expected, got {src['dataSources']}")
        rules = ops.get("BuiltInTransformation", {}).get("builtInTransformationSettings", {}).get("map", [])
        dest = ops["Destination"]["destinationSettings"]
        eps = find(resources, "dataflowEndpoints", dest["endpointRef"])
        if not eps:
            raise MappingError(f"dataflow {name}: endpoint {dest['endpointRef']!r} is not among the level's records")
        ep = eps[0]["body"]["properties"]
        if ep["endpointType"] == "Mqtt":
            host, port = _split_host(ep["mqttSettings"]["host"], 1883)
            kind, settings = "mqtt", ep["mqttSettings"]
        elif ep["endpointType"] == "Kafka":
            host, port = _split_host(ep["kafkaSettings"]["host"], 9093)
            kind, settings = "kafka", ep["kafkaSettings"]
        else:
            raise MappingError(f"dataflow {name}: endpoint type {ep['endpointType']!r} is not supported in the lab")
        plans.append(FlowPlan(name, src["dataSources"][0], compile_map(rules), kind, host, port,
                              dest["dataDestination"], settings))
    return plans


# ----------------------------------------------------------------------------------------------- clients
@dataclass(frozen=True)
class MqttTls:
    ca: str
    cert: Optional[str] = None
    key: Optional[str] = None


def connect_mqtt(host: str, port: int, client_id: str, tls: Optional[MqttTls] = None, timeout: float = 10.0,
                 on_message=None, subscribe: Optional[list[str]] = None):
    """A started paho client (its own network thread), connected, subscribed with QoS 1 when asked."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    if tls is not None:
        client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    ready = threading.Event()
    subscribed = threading.Event()
    failure: list = []

    def on_connect(c, userdata, flags, reason, props):
        if reason.is_failure:
            failure.append(str(reason))
            ready.set()
            return
        if subscribe:
            c.subscribe([(t, 1) for t in subscribe])
        else:
            subscribed.set()
        ready.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.set()
    if on_message is not None:
        client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    if not ready.wait(timeout) or failure:
        client.loop_stop()
        raise ConnectionError(f"MQTT {host}:{port}: {failure[0] if failure else 'no CONNACK within %.0f s' % timeout}")
    if not subscribed.wait(timeout):
        client.loop_stop()
        raise ConnectionError(f"MQTT {host}:{port}: no SUBACK within {timeout:.0f} s")
    return client


def kafka_config(host: str, port: int, connection_string: str, ca: Optional[str] = None) -> dict:
    """confluent-kafka settings for the Event Hubs Kafka endpoint with a connection string."""
    conf = {
        "bootstrap.servers": f"{host}:{port}",
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "$ConnectionString",
        "sasl.password": connection_string,
        "client.id": "layernet-dataflow",
    }
    if ca:
        conf["ssl.ca.location"] = ca
    return conf


@dataclass(frozen=True)
class KafkaAuth:
    """How an endpoint authenticates to Event Hubs, read from its record: method "connection_string" (Sasl
    Plain), or a managed identity ("system" / "user") with the token scope and, for a user-assigned one, its
    client id and tenant."""
    method: str
    scope: str = ""
    client_id: str = ""
    tenant_id: str = ""


def kafka_auth(settings: dict, host: str) -> KafkaAuth:
    """The endpoint's authentication (`kafkaSettings`), with AIO's defaults filled in."""
    auth = settings.get("authentication") or {}
    method = auth.get("method")
    default_aud = f"https://{host}"
    if method == "SystemAssignedManagedIdentity":
        aud = (auth.get("systemAssignedManagedIdentitySettings") or {}).get("audience") or default_aud
        return KafkaAuth("system", scope=aud.rstrip("/") + "/.default")
    if method == "UserAssignedManagedIdentity":
        ua = auth.get("userAssignedManagedIdentitySettings") or {}
        if not ua.get("clientId") or not ua.get("tenantId"):
            raise MappingError("UserAssignedManagedIdentity needs userAssignedManagedIdentitySettings.clientId and tenantId")
        return KafkaAuth("user", scope=ua.get("scope") or default_aud + "/.default", client_id=ua["clientId"].lower(),
                         tenant_id=ua["tenantId"])
    if method == "Sasl" and (auth.get("saslSettings") or {}).get("saslType") == "Plain":
        return KafkaAuth("connection_string")
    raise MappingError(f"Kafka authentication method {method!r} is not supported by the lab dataflow "
                       "(SystemAssignedManagedIdentity, UserAssignedManagedIdentity, Sasl Plain)")


class TokenSource:
    """Entra tokens for one identity the cluster holds (azure-identity against the authority; tokens cached and
    renewed by the credential). `identities` is the identity file's content:
    {"tenant_id", "authority", "system": {"client_id", "secret"}, "user": {client_id: {"secret"}}}."""

    def __init__(self, auth: KafkaAuth, identities: dict, ca: Optional[str] = None):
        from azure.identity import ClientSecretCredential

        if auth.method == "system":
            ident = identities.get("system")
            if not ident:
                raise ConnectionError("SystemAssignedManagedIdentity: the cluster's AIO extension has no "
                                      "system-assigned identity (the identity file holds none)")
            client_id, tenant = ident["client_id"], identities["tenant_id"]
        else:
            ident = (identities.get("user") or {}).get(auth.client_id)
            if not ident:
                raise ConnectionError(f"UserAssignedManagedIdentity: no user-assigned identity with client id "
                                      f"{auth.client_id} is assigned to the cluster's AIO extension")
            client_id, tenant = auth.client_id, auth.tenant_id
        kw = {"connection_verify": ca} if ca else {}
        if identities.get("authority"):
            kw["authority"] = identities["authority"]
        self.scope, self.client_id = auth.scope, client_id
        self.credential = ClientSecretCredential(tenant, client_id, ident["secret"], **kw)

    def __call__(self, _config=None) -> tuple[str, float]:
        tok = self.credential.get_token(self.scope)
        return tok.token, float(tok.expires_on)


# ----------------------------------------------------------------------------------------------- runner
class LevelDataflows:
    """All dataflows of one level, running until stop()."""

    def __init__(self, resources: list[dict], local: tuple[str, int], tls: Optional[MqttTls] = None,
                 local_tls: Optional[MqttTls] = None, connection_string: Optional[str] = None,
                 kafka_ca: Optional[str] = None, client_prefix: str = "layernet-df",
                 identities: Optional[dict] = None):
        self.plans = plan_from_resources(resources)
        self.local, self.tls, self.local_tls = local, tls, local_tls
        self.connection_string, self.kafka_ca = connection_string, kafka_ca
        self.identities = identities or {}
        self.prefix = client_prefix
        self.counts = {p.name: {"in": 0, "out": 0, "bad": 0} for p in self.plans}
        self._clients: list = []
        self._producer = None
        self._by_topic = {p.source_topic: p for p in self.plans}
        self._out: dict[str, Any] = {}

    def start(self) -> None:
        for p in self.plans:
            if p.kind == "mqtt":
                key = f"{p.host}:{p.port}"
                if key not in self._out:
                    self._out[key] = connect_mqtt(p.host, p.port, f"{self.prefix}-{p.name}-out", self.tls)
                    self._clients.append(self._out[key])
            elif self._producer is None:
                from confluent_kafka import Producer

                conf = self.producer_config(p)
                conf.update({"linger.ms": 5, "acks": "all", "enable.idempotence": True, "error_cb": self._kafka_error})
                self._producer = Producer(conf)
                self._poller = threading.Thread(target=self._poll, daemon=True)
                self._stopping = False
                self._poller.start()
        self._in = connect_mqtt(self.local[0], self.local[1], f"{self.prefix}-in", self.local_tls,
                                on_message=self._on_message, subscribe=sorted(self._by_topic))
        self._clients.append(self._in)

    def producer_config(self, p: FlowPlan) -> dict:
        """The Event Hubs settings for the endpoint's authentication method."""
        auth = kafka_auth(p.endpoint, p.host)
        if auth.method == "connection_string":
            if not self.connection_string:
                raise ConnectionError(f"dataflow {p.name}: Kafka destination needs a connection string in the environment")
            return kafka_config(p.host, p.port, self.connection_string, self.kafka_ca)
        source = TokenSource(auth, self.identities, self.kafka_ca)
        conf = kafka_config(p.host, p.port, "", self.kafka_ca)
        for key in ("sasl.username", "sasl.password"):
            conf.pop(key)
        conf.update({"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": self._logged(source)})
        log.warning("dataflow %s: Event Hubs with %s managed identity %s (token scope %s)", p.name,
                    "system-assigned" if auth.method == "system" else "user-assigned", source.client_id, auth.scope)
        return conf

    @staticmethod
    def _logged(source: "TokenSource"):
        def cb(config):
            try:
                return source(config)
            except Exception as exc:  # noqa: BLE001 - librdkafka only sees that the callback failed
                log.warning("dataflow: no Entra token for %s: %s", source.client_id, " ".join(str(exc).split())[:300])
                raise
        return cb

    def _kafka_error(self, err) -> None:
        log.warning("dataflow: Event Hubs: %s", err.str())

    def _poll(self) -> None:
        while not getattr(self, "_stopping", True):
            try:
                self._producer.poll(0.1)
            except Exception as exc:  # noqa: BLE001 - e.g. the token callback failed: logged, keep serving
                log.warning("dataflow: Event Hubs producer: %s", exc)
                time.sleep(0.5)

    def _on_message(self, client, userdata, msg) -> None:
        p = self._by_topic.get(msg.topic)
        if p is None:
            return
        c = self.counts[p.name]
        c["in"] += 1
        try:
            body = json.loads(msg.payload)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            out = json.dumps(p.transform(body), separators=(",", ":")).encode()
        except (ValueError, MappingError) as exc:
            c["bad"] += 1
            log.warning("dataflow %s: dropped a message on %s: %s", p.name, msg.topic, exc)
            return
        if p.kind == "mqtt":
            self._out[f"{p.host}:{p.port}"].publish(p.destination, out, qos=1)
        else:
            # key = the source topic (the Kafka endpoint's Topic partition strategy): tells assets apart in the hub
            while True:
                try:
                    self._producer.produce(p.destination, out, key=msg.topic.encode(),
                                           on_delivery=lambda err, m, name=p.name: self._delivered(name, err))
                    break
                except BufferError:
                    self._producer.poll(0.05)
        c["out"] += 1

    def _delivered(self, name: str, err) -> None:
        if err is None:
            return
        c = self.counts[name]
        c["failed"] = c.get("failed", 0) + 1
        if c["failed"] == 1 or c["failed"] % 1000 == 0:
            log.warning("dataflow %s: Event Hubs did not take a message (%d so far): %s", name, c["failed"], err.str())

    def stop(self, flush_s: float = 10.0) -> None:
        for cl in self._clients:
            cl.disconnect()
            cl.loop_stop()
        if self._producer is not None:
            self._stopping = True
            self._producer.flush(flush_s)


def _tls(ca, cert, key) -> Optional[MqttTls]:
    return MqttTls(ca, cert, key) if ca else None


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="layernet.lab.dataflow", description=__doc__.splitlines()[0])
    ap.add_argument("--resources", required=True, help="the level's rendered telemetry records (JSON list)")
    ap.add_argument("--local", required=True, help="host:port of the level's own broker")
    ap.add_argument("--ca", help="CA of the parent brokers' certificates (x509 mode) and of the Kafka endpoint")
    ap.add_argument("--cert", help="client certificate for the parent broker (x509 mode)")
    ap.add_argument("--key", help="client key for the parent broker (x509 mode)")
    ap.add_argument("--local-tls", action="store_true",
                    help="the level's own broker takes TLS with the same CA and client certificate")
    ap.add_argument("--connection-string-env", default="LAYERNET_EVENTHUBS_CONNECTION_STRING")
    ap.add_argument("--identity", help="the identities the cluster holds (JSON, from layernet.lab.workload_identity)")
    ap.add_argument("--name", default="layernet-df")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        resources = json.loads(open(args.resources).read())
        identities = json.loads(open(args.identity).read()) if args.identity and os.path.exists(args.identity) else {}
        host, _, port = args.local.rpartition(":")
        uses_tls = any(p.kind == "mqtt" and p.endpoint.get("tls", {}).get("mode") == "Enabled"
                       for p in plan_from_resources(resources))
        flows = LevelDataflows(resources, (host, int(port)), tls=_tls(args.ca, args.cert, args.key) if uses_tls else None,
                               local_tls=_tls(args.ca, args.cert, args.key) if args.local_tls else None,
                               connection_string=os.environ.get(args.connection_string_env), kafka_ca=args.ca,
                               client_prefix=args.name, identities=identities)
        flows.start()
    except (OSError, ValueError, KeyError, ConnectionError) as exc:
        print(f"dataflow: {exc}", file=sys.stderr)
        return 2
    print(f"dataflow: running {', '.join(p.name for p in flows.plans)} from {args.local}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    while not done.wait(1.0):
        pass
    flows.stop()
    print(f"dataflow: counts {json.dumps(flows.counts, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
