"""ARM resources of the telemetry stage (04), per level: pure and deterministic.

For each level this renders, as `{"id", "apiVersion", "body"}` records in apply order:
- the ADR device (inbound endpoint `Microsoft.OpcUa`, anonymous) and asset (datasets, data points, MQTT topic)
  on the levels that hold assets;
- the broker listener on every level of the flow (1883 anonymous, or 8883 with TLS and X.509 client
  authentication, plus the broker authentication resource);
- the dataflow endpoints: MQTT to the parent level's node, Kafka to Event Hubs with the system-assigned managed
  identity of the AIO extension;
- the dataflows: Source -> BuiltInTransformation (pass everything through, then one NewProperties rule per
  enrichment property) -> Destination;
- the Azure Event Hubs Data Sender role assignment for each level that sends to Event Hubs.

Mapping language: a string constant in an `expression` is written in double quotes (`"flakes"`), and the output
field name is quoted the same way so names with '-' (line-config, factory-code) are taken literally. The lab's
dataflow stand-in reads these very records (`layernet.lab.dataflow`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from layernet import rbac
from layernet.apiversions import api_version
from layernet.resource_ids import rid, subscription
from layernet.site import Site
from layernet.site.telemetry import Dataflow, eventhubs_namespace

IOTOPS_API = api_version("Microsoft.IoTOperations/instances")          # the one table (layernet.apiversions)
DEVICEREGISTRY_API = api_version("Microsoft.DeviceRegistry/namespaces")
AUTHORIZATION_API = api_version("Microsoft.Authorization/roleAssignments")
KAFKA_ENDPOINT = "eventhubs"
EVENTHUBS_SECRET = "layernet-eventhubs-connection"
X509_AUTHN = "x509-authn"


@dataclass(frozen=True)
class AioNames:
    """Names the AIO stage gives a level's deployment (defaults: derived from the Arc cluster name)."""
    instance: str
    custom_location: str
    adr_namespace: str


def default_names(site: Site, level: str) -> AioNames:
    cluster = site.azure.clusters.get(level, f"{site.name}-{level}")
    return AioNames(instance=f"{cluster}-ops", custom_location=f"{cluster}-cl", adr_namespace=f"{site.name}-adr")


def _ext_location(site: Site, names: AioNames) -> dict:
    return {"name": rid(subscription(site), site.azure.resource_group, "Microsoft.ExtendedLocation",
                        "customLocations", names.custom_location),
            "type": "CustomLocation"}


def _instance_id(site: Site, names: AioNames) -> str:
    return rid(subscription(site), site.azure.resource_group, "Microsoft.IoTOperations", "instances", names.instance)


def eventhubs_namespace_id(site: Site, sub: Optional[str] = None) -> str:
    """The ARM id of the site's Event Hubs namespace (in `sub`, default the site's subscription): the scope of
    the Data Sender and Data Receiver role assignments."""
    return rid(sub or subscription(site), site.azure.resource_group, "Microsoft.EventHub", "namespaces",
               eventhubs_namespace(site.telemetry, site.azure.eventhubs_namespace))


def eventhubs_host(site: Site) -> str:
    ns = eventhubs_namespace(site.telemetry, site.azure.eventhubs_namespace)
    return f"{ns}.servicebus.windows.net:9093"


def mqtt_endpoint_name(parent: str) -> str:
    return f"to-{parent}"


def quote(text: str) -> str:
    """A string constant or field name in the dataflow mapping language: enclosed in double quotes."""
    if '"' in text or "\\" in text:
        raise ValueError(f"{text!r}: a mapping constant cannot hold double quotes or backslashes")
    return f'"{text}"'


def unquote(text: str) -> str:
    """The inverse of `quote` (a bare name stays as it is)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


# ----------------------------------------------------------------------------------------------- resources
def _device(site: Site, names: AioNames, device: str, endpoints: dict[str, str]) -> dict:
    return {
        "id": rid(subscription(site), site.azure.resource_group, "Microsoft.DeviceRegistry", "namespaces",
                  names.adr_namespace, "devices", device),
        "apiVersion": DEVICEREGISTRY_API,
        "body": {
            "location": site.azure.location,
            "extendedLocation": _ext_location(site, names),
            "properties": {
                "enabled": True,
                "endpoints": {"inbound": {name: {
                    "address": address,
                    "endpointType": "Microsoft.OpcUa",
                    "authentication": {"method": "Anonymous"},
                } for name, address in endpoints.items()}},
            },
        },
    }


def _asset(site: Site, names: AioNames, asset) -> dict:
    datasets = []
    for ds in asset.datasets:
        sampling = min(p.sampling_ms for p in ds.data_points)
        datasets.append({
            "name": ds.name,
            "dataSource": "",
            "datasetConfiguration": json.dumps({"publishingInterval": ds.publishing_ms, "samplingInterval": sampling,
                                                "queueSize": 1}, sort_keys=True),
            "dataPoints": [{
                "name": p.name,
                "dataSource": p.node_id,
                "dataPointConfiguration": json.dumps({"samplingInterval": p.sampling_ms, "queueSize": p.queue_size},
                                                     sort_keys=True),
            } for p in ds.data_points],
            "destinations": [{"target": "Mqtt", "configuration": {"topic": ds.topic, "retain": "Never", "qos": "Qos1"}}],
        })
    return {
        "id": rid(subscription(site), site.azure.resource_group, "Microsoft.DeviceRegistry", "namespaces",
                  names.adr_namespace, "assets", asset.name),
        "apiVersion": DEVICEREGISTRY_API,
        "body": {
            "location": site.azure.location,
            "extendedLocation": _ext_location(site, names),
            "properties": {
                "enabled": True,
                "deviceRef": {"deviceName": asset.device, "endpointName": asset.endpoint},
                "datasets": datasets,
            },
        },
    }


def _listener(site: Site, names: AioNames, level: str) -> list[dict]:
    mq = site.telemetry.mqtt
    base = f"{_instance_id(site, names)}/brokers/default"
    port: dict = {"port": mq.effective_port, "protocol": "Mqtt"}
    out = []
    if mq.tls:
        port["authenticationRef"] = X509_AUTHN
        port["tls"] = {"mode": "Automatic", "certManagerCertificateSpec": {
            "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": mq.issuer},
            "san": {"dns": [], "ip": [str(site.level(level).node_ip)]},
        }}
        out.append({
            "id": f"{base}/authentications/{X509_AUTHN}",
            "apiVersion": IOTOPS_API,
            "body": {"extendedLocation": _ext_location(site, names), "properties": {"authenticationMethods": [
                {"method": "X509", "x509Settings": {"trustedClientCaCert": mq.trusted_ca_configmap, "authorizationAttributes": {}}},
            ]}},
        })
    out.append({
        "id": f"{base}/listeners/{mq.listener}",
        "apiVersion": IOTOPS_API,
        "body": {"extendedLocation": _ext_location(site, names), "properties": {
            "serviceName": f"aio-broker-{mq.listener}", "serviceType": "LoadBalancer", "ports": [port]}},
    })
    return out


def _mqtt_endpoint(site: Site, names: AioNames, parent: str) -> dict:
    mq = site.telemetry.mqtt
    if mq.tls:
        auth = {"method": "X509Certificate", "x509CertificateSettings": {"secretRef": mq.client_cert_secret}}
        tls = {"mode": "Enabled", "trustedCaCertificateConfigMapRef": mq.trusted_ca_configmap}
    else:
        auth = {"method": "Anonymous"}      # the pinned model has no anonymousSettings (REST examples show one)
        tls = {"mode": "Disabled"}
    return {
        "id": f"{_instance_id(site, names)}/dataflowEndpoints/{mqtt_endpoint_name(parent)}",
        "apiVersion": IOTOPS_API,
        "body": {"extendedLocation": _ext_location(site, names), "properties": {
            "endpointType": "Mqtt",
            "mqttSettings": {"host": f"{site.level(parent).node_ip}:{mq.effective_port}", "authentication": auth, "tls": tls},
        }},
    }


def _kafka_endpoint(site: Site, names: AioNames) -> dict:
    if site.telemetry.eventhubs.auth == "managed_identity":
        auth = {"method": "SystemAssignedManagedIdentity", "systemAssignedManagedIdentitySettings": {}}
    else:
        # the secret (keys username = $ConnectionString, password = the connection string) is created on the
        # cluster from the environment variable, never rendered
        auth = {"method": "Sasl", "saslSettings": {"saslType": "Plain", "secretRef": EVENTHUBS_SECRET}}
    return {
        "id": f"{_instance_id(site, names)}/dataflowEndpoints/{KAFKA_ENDPOINT}",
        "apiVersion": IOTOPS_API,
        "body": {"extendedLocation": _ext_location(site, names), "properties": {
            "endpointType": "Kafka",
            "kafkaSettings": {
                "host": eventhubs_host(site),
                "authentication": auth,
                "tls": {"mode": "Enabled"},
                "partitionStrategy": "Topic",     # the MQTT topic is the Kafka key: tells assets apart in the hub
            },
        }},
    }


def _dataflow(site: Site, names: AioNames, flow: Dataflow) -> dict:
    source: dict = {"endpointRef": "default", "dataSources": [flow.source], "serializationFormat": "Json"}
    found = site.telemetry.source_asset(flow)
    if found:
        source["assetRef"] = found[0].name
    rules: list[dict] = [{"type": "PassThrough", "inputs": ["*"], "output": "*"}]
    for key, value in flow.enrich.items():
        rules.append({"type": "NewProperties", "inputs": [], "output": quote(key), "expression": quote(value)})
    if flow.destination == "eventhubs":
        dest = {"endpointRef": KAFKA_ENDPOINT, "dataDestination": site.telemetry.eventhubs.hub}
    else:
        dest = {"endpointRef": mqtt_endpoint_name(site.level(flow.level).parent), "dataDestination": flow.topic}
    return {
        "id": f"{_instance_id(site, names)}/dataflowProfiles/default/dataflows/{flow.name}",
        "apiVersion": IOTOPS_API,
        "body": {"extendedLocation": _ext_location(site, names), "properties": {
            "mode": "Enabled",
            "operations": [
                {"operationType": "Source", "name": "source", "sourceSettings": source},
                {"operationType": "BuiltInTransformation", "name": "enrich", "builtInTransformationSettings": {
                    "serializationFormat": "Json", "datasets": [], "filter": [], "map": rules}},
                {"operationType": "Destination", "name": "destination", "destinationSettings": dest},
            ],
        }},
    }


def _role_assignment(site: Site, level: str, principal: Optional[str]) -> dict:
    """The level's AIO extension identity as Data Sender on the namespace (named by the level: the principal is
    read from ARM at apply)."""
    scope = eventhubs_namespace_id(site)
    a = rbac.assignment(subscription(site), scope, rbac.SENDER,
                        principal or f"<principal id of the AIO extension on {level}>", holder=level)
    return {"id": a["id"], "apiVersion": AUTHORIZATION_API, "body": a["body"]}


def render_level(site: Site, level: str, names: Optional[AioNames] = None,
                 principal: Optional[str] = None) -> list[dict]:
    """Every telemetry resource of one level, in apply order (devices before assets, endpoints before dataflows)."""
    names = names or default_names(site, level)
    tel = site.telemetry
    out: list[dict] = []
    devices: dict[str, dict[str, str]] = {}
    for a in tel.assets:
        if a.level == level:
            devices.setdefault(a.device, {}).setdefault(a.endpoint, a.address)
    for device, endpoints in devices.items():          # each device once, with every endpoint its assets use
        out.append(_device(site, names, device, endpoints))
    for a in tel.assets:
        if a.level == level:
            out.append(_asset(site, names, a))
    flows = tel.dataflows_of(level)
    receives = any(site.level(f.level).parent == level for f in tel.dataflows if f.destination == "parent")
    if receives or flows or any(a.level == level for a in tel.assets):
        # the sample opens the listener on every level of the flow: children publish to it, taps read it
        out += _listener(site, names, level)
    parents = sorted({site.level(level).parent for f in flows if f.destination == "parent"} - {None})
    for p in parents:
        out.append(_mqtt_endpoint(site, names, p))
    to_eh = any(f.destination == "eventhubs" for f in flows)
    if to_eh:
        out.append(_kafka_endpoint(site, names))
    for f in flows:
        out.append(_dataflow(site, names, f))
    if to_eh and tel.eventhubs.auth == "managed_identity":
        out.append(_role_assignment(site, level, principal))
    return out


def render(site: Site, names: Optional[dict[str, AioNames]] = None,
           principals: Optional[dict[str, str]] = None) -> dict[str, list[dict]]:
    """All levels, egress first (the order of site.chain)."""
    names, principals = names or {}, principals or {}
    return {lv.name: render_level(site, lv.name, names.get(lv.name), principals.get(lv.name)) for lv in site.chain}


def to_json(resources) -> str:
    """The byte-stable text form (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(resources, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def x509_references(resources: list[dict]) -> list[tuple[str, str, str]]:
    """The cluster objects a level's records name, in order, each once: (kind, name, what names it) for the X.509
    records: the listener certificate's cert-manager Issuer, the trusted client CA ConfigMap of a broker
    authentication, the client certificate Secret and the trusted CA ConfigMap of an MQTT dataflow endpoint."""
    out: dict[tuple[str, str], str] = {}

    def add(kind: str, name: Optional[str], rec: dict, field: str) -> None:
        if name and (kind, name) not in out:
            out[(kind, name)] = f"{rec['id'].rstrip('/').split('/')[-2]}/{rec['id'].rsplit('/', 1)[1]} {field}"

    for r in resources:
        props = r["body"].get("properties") or {}
        for port in props.get("ports") or []:
            spec = (port.get("tls") or {}).get("certManagerCertificateSpec") or {}
            add("Issuer", (spec.get("issuerRef") or {}).get("name"), r, "tls.certManagerCertificateSpec.issuerRef")
        for m in props.get("authenticationMethods") or []:
            add("ConfigMap", (m.get("x509Settings") or {}).get("trustedClientCaCert"), r, "x509Settings.trustedClientCaCert")
        mq = props.get("mqttSettings") or {}
        auth = mq.get("authentication") or {}
        add("Secret", (auth.get("x509CertificateSettings") or {}).get("secretRef"), r,
            "authentication.x509CertificateSettings.secretRef")
        add("ConfigMap", (mq.get("tls") or {}).get("trustedCaCertificateConfigMapRef"), r,
            "tls.trustedCaCertificateConfigMapRef")
    return [(kind, name, why) for (kind, name), why in out.items()]


def find(resources: list[dict], kind: str, name: Optional[str] = None) -> list[dict]:
    """Records whose id has `/<kind>/<name>` as its last type/name pair (kind e.g. 'dataflows', 'dataflowEndpoints')."""
    out = []
    for r in resources:
        parts = r["id"].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == kind and (name is None or parts[-1] == name):
            out.append(r)
    return out
