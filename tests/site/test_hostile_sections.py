"""Hostile input on the sections of stages 02-04 (arc, aio, telemetry, images) and on every name rule, one suite per
class, generated where the class is a rule applied to many fields.

The site is another plant than params/lab.yaml (tests/doubles/plants.py: dmz -> plant -> area -> cell on
10.20.x.0/24, with an asset, a four-hop dataflow chain and Event Hubs). Every case: exit 2 from `layernet
validate`, one error naming the file and the field path with what is expected, no traceback, no secret.
In-process for the whole corpus (fast); one case per class also as a real process.
"""
from __future__ import annotations

import copy
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from plants import plant_site, with_telemetry, write

from layernet import cli  # noqa: E402
from layernet.site import SiteError, load_site, names  # noqa: E402
from layernet.site.secrets import KEY_QUALIFIERS, is_secret_key, looks_secret  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LAYERNET = str(Path(sys.executable).parent / "layernet")
SECRET = "Zq9SuperSecretValue7x"
GW = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-net/providers/Microsoft.HybridCompute/gateways/gw1"


def base() -> dict:
    return with_telemetry(plant_site("lab"))


def setp(path: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted path (levels.1.node_ip; a key with dots goes in [brackets]) in the raw site."""
    def fn(raw: dict) -> None:
        parts = [p[1:-1] if p.startswith("[") else int(p) if p.isdigit() else p
                 for p in re.findall(r"\[[^\]]*\]|[^.]+", path)]
        cur: Any = raw
        for p in parts[:-1]:
            if isinstance(cur, dict) and p not in cur:
                cur[p] = {}
            cur = cur[p]
        cur[parts[-1]] = copy.deepcopy(value)
    return fn


def both(*fns: Callable[[dict], None]) -> Callable[[dict], None]:
    def fn(raw: dict) -> None:
        for f in fns:
            f(raw)
    return fn


def drop_flow(level: str) -> Callable[[dict], None]:
    def fn(raw: dict) -> None:
        raw["telemetry"]["dataflows"] = [f for f in raw["telemetry"]["dataflows"] if f["level"] != level]
    return fn


# ----------------------------------------------------------------------------------------------- generated classes
def _names(field: str, bad: list[str], phrase: str) -> list[tuple]:
    return [(f"{field}={v[:20]!r}", setp(field, v), field.replace(".[", ".").replace("]", ""), phrase) for v in bad]


EVENTHUBS = (
    _names("azure.eventhubs_namespace", ["ab", "1plant-ehns", "plant-ehns-", "p" * 51, "plant-ehns-sb", "plant_ehns",
                                         "plant-ehns\n"], "Event Hubs namespace")
    + _names("telemetry.eventhubs.namespace", ["ab", "9plant-ehns", "x" * 60, "plant-ehns-mgmt", "plant ehns"],
             "Event Hubs namespace")
    + _names("telemetry.eventhubs.hub", ["", "-hub", "hub-", "h" * 257, "hub/x", "hub\n", "h ub", "hub$"], "event hub name")
    + _names("telemetry.eventhubs.consumer_group", ["", "$x", "-g", "g" * 51, "g/x", "g\n", "$default "],
             "consumer group")
)
MQTT_PORTS = [(f"mqtt-port-{p}", both(setp("telemetry.mqtt.port", p)), "telemetry.mqtt.port",
               f"{p} is {what}") for p, what in ((443, "the proxy's"), (8084, "the proxy's"),
                                                 (6443, "the Kubernetes API's"), (53, "the DNS override's"))] + [
    ("mqtt-port-9093-eventhubs-below", both(setp("telemetry.mqtt.port", 9093),
                                            setp("telemetry.eventhubs_from_levels", ["plant"])),
     "telemetry.mqtt.port", "9093 is the proxy's (taken there: 53, 443, 6443, 8084, 9093)")]
OPC = [(f"opc-port-{p}", setp("telemetry.assets.0.address", f"opc.tcp://10.20.4.7:{p}"), "telemetry.assets[0].address", why)
       for p, why in (("0", "1-65535"), ("65536", "1-65535"), ("99999", "1-65535"), ("00000", "1-65535"),
                      ("x", "OPC UA endpoint"), ("", "OPC UA endpoint"))] + [
    ("opc-newline", setp("telemetry.assets.0.address", "opc.tcp://10.20.4.7:4840\n"), "telemetry.assets[0].address", "OPC UA")]
K8S = [(f"{f}={v[:12]!r}", setp(f"telemetry.mqtt.{f}", v), f"telemetry.mqtt.{f}", kind)
       for f, kind in (("issuer", "cert-manager Issuer"), ("client_cert_secret", "Kubernetes Secret"),
                       ("trusted_ca_configmap", "Kubernetes ConfigMap"))
       for v in ("../ca", "a/b", "Upper", "a..b", "-a", "a-", "a" * 254, "a\n", "", "a b", "a_b")]
DATASETS = [("dataset-twice", lambda raw: raw["telemetry"]["assets"][0]["datasets"].append(
    {"name": "main", "topic": "cell/data/other", "data_points": [{"name": "P", "node_id": "ns=2;s=P"}]}),
    "telemetry.assets[0].datasets[1].name", "a name no other dataset of the asset uses"),
    ("dataset-default-twice", lambda raw: raw["telemetry"]["assets"][0]["datasets"].extend([
        {"topic": "cell/data/a", "data_points": [{"name": "P", "node_id": "ns=2;s=P"}]},
        {"topic": "cell/data/b", "data_points": [{"name": "P", "node_id": "ns=2;s=P"}]}]),
     "telemetry.assets[0].datasets[2].name", "a name no other dataset")]
CHAINS = [
    ("chain-source-not-what-child-sends", setp("telemetry.dataflows.1.source", "/elsewhere"),
     "telemetry.dataflows[1].source", "what cell sends ('/areain/data/press1')"),
    ("chain-hop-lands-on-nothing", setp("telemetry.dataflows.0.topic", "/nobody/reads"),
     "telemetry.dataflows[0].topic", "the chain is broken here"),
    ("chain-skips-a-level", drop_flow("plant"), "telemetry.dataflows", "chain is broken"),
    ("chain-hop-above-the-top", setp("telemetry.dataflows.3", {"name": "dmz-up", "level": "dmz", "source": "/dmzin/data/press1",
                                                             "destination": "parent", "topic": "/x"}),
     "telemetry.dataflows[3].destination", "has no parent level"),
    ("chain-unknown-level", setp("telemetry.dataflows.0.level", "level9"), "telemetry.dataflows[0].level", "a level name"),
]
AIO = [
    ("aio-instance-vs-derived", setp("aio.levels.area.instance", "k3s-cell-ops"), "aio.levels", "a name no other level uses"),
    ("aio-registry-vs-derived", setp("aio.levels.dmz.schema_registry.name", "k3s-plant-sr"), "aio.levels", "schema registry"),
    ("aio-two-explicit", both(setp("aio.levels.dmz.custom_location", "the-cl"), setp("aio.levels.cell.custom_location", "the-cl")),
     "aio.levels", "custom location"),
    ("aio-same-cluster-name", setp("azure.clusters.area", "k3s-cell"), "aio.levels.", "a name no other level uses"),
    ("aio-derived-invalid", setp("azure.clusters.area", "K3S_Area"), "aio.levels.area.instance", "change azure.clusters.area"),
    ("aio-derived-too-long", setp("azure.clusters.area", "k" * 62), "aio.levels.area.instance", "3-63"),
    ("aio-container-shared", both(setp("aio.levels.dmz.schema_registry.container", "schemas"),
                                  setp("aio.levels.cell.schema_registry.container", "schemas")), "aio.levels.", "blob container"),
    ("aio-instance-newline", setp("aio.levels.dmz.instance", "dmz-ops\n"), "aio.levels.dmz.instance", "3-63"),
]
GATEWAYS = [(f"gateway-{k}", setp("arc.gateway_resource_id", v), "arc.gateway_resource_id", why) for k, v, why in (
    ("sub-not-guid", GW.replace("00000000-0000-0000-0000-000000000000", "0000-0000-0000-0000-000000000000000000"), "not a GUID"),
    ("rg-space", GW.replace("rg-net", "rg net"), "resource group"),
    ("rg-long", GW.replace("rg-net", "r" * 91), "resource group"),
    ("rg-dot", GW.replace("rg-net", "rg."), "resource group"),
    ("name-bang", GW + "!", "gateway name"),
    ("name-long", GW.replace("gw1", "g" * 65), "gateway name"),
    ("extra-segment", GW + "/x", "an Arc gateway resource id"),
    ("other-provider", GW.replace("HybridCompute", "Network"), "an Arc gateway resource id"),
    ("newline", GW + "\n", "gateway name"),
)]
FEATURES = [(f"features-{'-'.join(v) or 'none'}", setp("arc.features", v), "arc.features", "cluster-connect and custom-locations")
            for v in (["cluster-connect"], ["custom-locations"], ["azure-rbac"], [])]
IMAGES = [
    ("image-repo-256", setp("images.envoy", "registry.contoso.com/" + "a/" * 117 + "envoy:v1"), "images.envoy", "at most 255"),
    ("image-repo-1mb", setp("images.probe", "a." * 500_000), "images.probe", "characters"),
    ("image-hub-repo-long", setp("images.envoy", "team/" + "e" * 260 + ":v1"), "images.envoy", "at most 255"),
] + [(f"archive-dir-{v[:14]!r}", setp("images.archive_dir", v), "images.archive_dir", "import commands use it unquoted")
     for v in ("/var/lib/$(id)", "/var/../etc", "relative/dir", "/a b", "/a;b", "/~root", "/a*", "/img\n", "/" + "a/" * 120,
               "/.hidden", "/a/-rf", "/a'b", "/a`id`", "/a\\b", "/a|b", "/a&b", "/a#b")]
SECRETS = [(f"key-{form}", setp(f"azure.{form}", SECRET), f"azure.{form}", "value is hidden")
           for q in sorted(KEY_QUALIFIERS)[::3] for form in (f"{q}_key", f"{q.capitalize()}Key", f"{q}keys")] + [
    ("userinfo-image", setp("images.envoy", f"pull:{SECRET}@registry.contoso.com/envoy:v1"), "images.envoy", "value is hidden"),
    ("userinfo-registry-host-key", setp("images.registry_hosts", {f"pull:{SECRET}@registry.contoso.com": ["a.contoso.com"]}),
     "images.registry_hosts (a key)", "value is hidden"),
    ("userinfo-registry-host-value", setp("images.registry_hosts", {"registry.contoso.com": [f"u:{SECRET}@cdn.contoso.com"]}),
     "images.registry_hosts.registry.contoso.com[0]", "value is hidden"),
    ("userinfo-url-image", setp("images.probe", f"https://u:{SECRET}@registry.contoso.com/p:v1"), "images.probe", "value is hidden"),
]

# (id, change, field path the error names, phrase of what is expected)
CLASSES: dict[str, list[tuple]] = {"eventhubs-names": EVENTHUBS, "mqtt-port": MQTT_PORTS, "opc-port": OPC, "x509-names": K8S,
                                   "datasets": DATASETS, "dataflow-chain": CHAINS, "aio-names": AIO, "arc-gateway": GATEWAYS,
                                   "arc-features": FEATURES, "images": IMAGES, "secrets": SECRETS}
CASES = [(cls, *case) for cls, cases in CLASSES.items() for case in cases]


def test_the_plant_itself_is_valid(tmp_path):
    site = load_site(write(base(), tmp_path))
    assert [f.level for f in site.telemetry.dataflows] == ["cell", "area", "plant", "dmz"]


def _check(err: str) -> None:
    assert "Traceback" not in err and "unexpected" not in err and SECRET not in err
    assert max(len(line) for line in err.splitlines()) <= 1000


@pytest.mark.parametrize("cls, name, change, path, phrase", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_hostile_section_value(cls, name, change, path, phrase, tmp_path, capsys):
    raw = base()
    change(raw)
    f = write(raw, tmp_path)
    with pytest.raises(SiteError) as info:
        load_site(f)
    hits = [p for p in info.value.problems if p.path.startswith(path) and phrase.lower() in str(p).lower()]
    assert hits, [str(p) for p in info.value.problems]
    assert cli.main(["validate", "--site", str(f)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and f"{f}: " in err
    _check(err)


@pytest.mark.parametrize("cls", list(CLASSES))
def test_one_case_per_class_as_a_process(cls, tmp_path):
    _, change, path, phrase = CLASSES[cls][0]
    raw = base()
    change(raw)
    f = write(raw, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([LAYERNET, "validate", "--site", str(f)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert f"{f}: {path}" in proc.stderr and phrase.lower() in proc.stderr.lower()
    _check(proc.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before          # nothing written


# ----------------------------------------------------------------------------------------------- full-match semantics
# a valid value for every name rule of layernet.site.names; each must refuse the same value with a trailing line break
VALID = {"check_host": "management.azure.com", "check_level_name": "level2", "check_site_name": "plant-1",
         "check_resource_group": "rg-plant", "check_cluster_name": "aio-l2", "check_eventhubs_namespace": "plant-ehns",
         "check_storage_account": "plantsr", "check_guid": "00000000-0000-0000-0000-000000000000",
         "check_event_hub": "telemetry", "check_consumer_group": "verify", "check_k8s_name": "layernet-mqtt-ca",
         "check_aio_name": "aio-l2-ops", "check_arc_gateway_id": GW}


def test_every_name_rule_has_a_full_match_case():
    rules = {n for n, f in inspect.getmembers(names, inspect.isfunction) if n.startswith("check_")}
    assert rules == set(VALID)


@pytest.mark.parametrize("rule", sorted(VALID))
@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t"])
def test_name_rules_match_the_whole_value(rule, suffix):
    check = getattr(names, rule)
    args = ("x",) if rule in ("check_guid", "check_aio_name", "check_k8s_name") else ()
    assert check(VALID[rule], *args) is None
    assert check(VALID[rule] + suffix, *args) is not None


# every name-shaped field of the site with a trailing line break (fields checked by rules in other modules included)
NEWLINE_FIELDS = ["name", "levels.3.name", "azure.resource_group", "azure.clusters.cell", "azure.eventhubs_namespace",
                  "azure.schema_registry_storage", "azure.subscription_id", "azure.tenant_id", "lab.prefix",
                  "arc.custom_locations_oid", "arc.providers.0", "arc.gateway_endpoint", "aio.release", "aio.cli_version",
                  "aio.levels.cell.adr_namespace", "aio.levels.cell.schema_registry.storage_account",
                  "aio.levels.cell.schema_registry.container", "aio.templates.instance_sha256",
                  "telemetry.assets.0.name", "telemetry.assets.0.device", "telemetry.assets.0.datasets.0.data_points.0.node_id",
                  "telemetry.dataflows.0.name", "telemetry.mqtt.listener", "telemetry.eventhubs.connection_string_env",
                  "images.platform", "images.envoy", "monitor.workspace_id", "allowlist.extra_hosts.0"]
GOOD = {"azure.subscription_id": "00000000-0000-0000-0000-000000000000", "azure.tenant_id": "00000000-0000-0000-0000-000000000000",
        "arc.custom_locations_oid": "00000000-0000-0000-0000-000000000000", "arc.providers.0": "Microsoft.Kubernetes",
        "arc.gateway_endpoint": "abc.gw.arc.azure.com", "aio.release": "1.2", "aio.cli_version": "1.2.0",
        "aio.templates.instance_sha256": "a" * 64, "images.envoy": "mcr.microsoft.com/oss/v2/envoyproxy/envoy:v1.34.10",
        "monitor.workspace_id": "00000000-0000-0000-0000-000000000000", "allowlist.extra_hosts.0": "historian.contoso.com",
        "aio.levels.cell.adr_namespace": "cell-ns", "aio.levels.cell.schema_registry.storage_account": "cellsr",
        "aio.levels.cell.schema_registry.container": "cell-schemas", "telemetry.mqtt.listener": "publiclistener",
        "telemetry.eventhubs.connection_string_env": "EH_CS", "images.platform": "linux/amd64", "lab.prefix": "pl",
        "telemetry.assets.0.datasets.0.data_points.0.node_id": "ns=2;s=Pressure", "telemetry.assets.0.device": "opc-plc"}


def _value(raw: dict, path: str) -> Any:
    cur: Any = raw
    for p in path.split("."):
        cur = cur[int(p)] if p.isdigit() else cur[p]
    return cur


@pytest.mark.parametrize("field", NEWLINE_FIELDS)
def test_a_trailing_line_break_is_refused_in_every_name_field(field, tmp_path):
    raw = base()
    raw["allowlist"]["extra_hosts"] = ["historian.contoso.com"]
    raw["arc"] = {"providers": ["Microsoft.Kubernetes", "Microsoft.ExtendedLocation"]}
    good = GOOD.get(field)
    if good is not None:
        setp(field, good)(raw)
    load_site(write(raw, tmp_path, "good.yaml"))                    # the value itself is fine
    value = good if good is not None else _value(raw, field)
    setp(field, value + "\n")(raw)
    with pytest.raises(SiteError) as info:
        load_site(write(raw, tmp_path))
    shown = field.replace(".0.", "[0].").replace(".3.", "[3].")
    shown = "arc.providers" if field == "arc.providers.0" else re.sub(r"\.(\d+)$", r"[\1]", shown)   # the list is one rule
    assert any(p.path.startswith(shown) for p in info.value.problems), [str(p) for p in info.value.problems]


def test_no_anchored_match_in_the_rules():
    """The class, not the examples: name rules use fullmatch (or pydantic patterns, which match the whole text)."""
    for path in [*sorted((ROOT / "lib/layernet/site").glob("*.py")), ROOT / "lib/layernet/images.py"]:
        text = path.read_text()
        assert not re.search(r"(?<!effective)\.match\(", text), path
        assert "re.match(" not in text, path
        assert "\\d" not in "".join(re.findall(r're\.compile\((r?"[^"]*")', text)), path     # ASCII digits only


# ----------------------------------------------------------------------------------------------- secrets
def test_the_key_family_and_its_neighbours():
    for q in KEY_QUALIFIERS:
        for form in (f"{q}_key", f"{q.upper()}_KEY", f"{q.capitalize()}Key", f"{q}key", f"{q}_keys"):
            assert is_secret_key(form), form
    for ok in ("routing_key", "partition_key", "key", "keys", "monkey", "sort_key", "kube_context", "trusted_ca_configmap"):
        assert not is_secret_key(ok), ok


@pytest.mark.parametrize("text", ["a." * 500_000, "a-" * 500_000, "a:" * 500_000, "eyJ-" * 250_000, "a://" * 250_000,
                                  " a:b@" * 200_000, "?sig=" * 200_000, "-----BEGIN " * 100_000, "a=" * 500_000])
def test_secret_shapes_of_a_megabyte_complete(text):
    """Completes (the timing is benchmarks/secret_shapes.py); a quadratic pattern would take minutes here."""
    assert looks_secret(text) is False
    assert looks_secret(text + f" https://u:{SECRET}@h.contoso.com") is True


@pytest.mark.parametrize("field", ["images.envoy", "allowlist.extra_hosts", "levels.3.name", "telemetry.eventhubs.hub"])
@pytest.mark.parametrize("unit", ["a.", "a-"])
def test_a_megabyte_value_is_refused_as_a_process(field, unit, tmp_path):
    raw = base()
    value = unit * 500_000
    setp(field, [value] if field == "allowlist.extra_hosts" else value)(raw)
    f = write(raw, tmp_path)
    proc = subprocess.run([LAYERNET, "validate", "--site", str(f)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "(1000000 characters)" in proc.stderr
    assert len(proc.stderr) < 5000
    _check(proc.stderr)


@pytest.mark.parametrize("text", [f"client_secret={SECRET}", f"sas_token={SECRET}", f"storage_key={SECRET}",
                                  f"AccountKey={SECRET}", f"x?sv=1&sig={SECRET}", f"pull:{SECRET}@registry.contoso.com/x:v1",
                                  f"https://u:{SECRET}@h.contoso.com", f"password = {SECRET}"])
def test_one_secret_detection_for_site_values_and_az_commands(text):
    """The site's values, -p/-s parameters and the az command lines of stages 02-03 share one detection."""
    from layernet.azure.runner import secret_in

    assert looks_secret(text)
    why = secret_in(["az", "x", "--value", text])
    assert why and SECRET not in why
