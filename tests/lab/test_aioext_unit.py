"""The AIO extension stand-in's pure parts: listener ports from ARM listener resources, the mosquitto configuration
it writes, and the desired-vs-live comparison the sdk executor's skips rest on."""
from __future__ import annotations

from layernet.azure import aio_sdk
from layernet.lab import aioext


def test_listener_ports_follow_the_resources_tls_mode():
    listeners = [{"name": "default", "properties": aio_sdk.LISTENERS["default"]},
                 {"name": "default-insecure", "properties": aio_sdk.LISTENERS["default-insecure"]},
                 {"name": "plain", "properties": {"ports": [{"port": 8883, "tls": {"mode": "Disabled"}}]}}]
    assert aioext.listener_ports(listeners) == [{"name": "default-insecure", "port": 1883, "tls": False},
                                                {"name": "plain", "port": 8883, "tls": False},
                                                {"name": "default", "port": 18883, "tls": True}]


def test_mosquitto_conf_binds_each_listener_to_the_node_and_tls_only_where_asked():
    ports = [{"name": "default-insecure", "port": 1883, "tls": False}, {"name": "default", "port": 18883, "tls": True}]
    conf = aioext.mosquitto_conf("10.1.2.3", ports, "/c.crt", "/c.key", "/log").splitlines()
    assert "per_listener_settings true" in conf and "listener 1883 10.1.2.3" in conf and "listener 18883 10.1.2.3" in conf
    tls_at = conf.index("listener 18883 10.1.2.3")
    assert conf.index("certfile /c.crt") > tls_at and conf.index("keyfile /c.key") > tls_at
    plain_block = conf[conf.index("listener 1883 10.1.2.3"):tls_at]
    assert not any(l.startswith(("certfile", "keyfile")) for l in plain_block)


def test_differences_name_the_fields_live_does_not_hold():
    want = {"location": "East US", "properties": {"a": 1, "b": {"c": [1, {"d": "x"}]}}}
    have = {"location": "eastus", "properties": {"a": 1, "b": {"c": [1, {"d": "x", "extra": 2}]},
                                                  "provisioningState": "Succeeded"}, "systemData": {}}
    assert aio_sdk.differences(want, have) == []
    have["properties"]["b"]["c"][1]["d"] = "y"
    have["properties"]["a"] = 2
    assert aio_sdk.differences(want, have) == ["properties.a", "properties.b.c[1].d"]
    assert aio_sdk.differences(want, {"properties": {"a": 1, "b": {"c": [1]}}}) == ["location", "properties.b.c"]


def test_desired_resources_in_waves_with_one_shared_account():
    from pathlib import Path

    from layernet.site import load_site

    site = load_site(Path(__file__).resolve().parents[2] / "params" / "lab.yaml")
    res = aio_sdk.desired(site, "sub")
    assert [r.level for r in res if r.action == "create storage account"] == ["level4"]
    by = {(r.level, r.action, r.name): r for r in res}
    inst = by[("level3", "create: instance", "aio-l3-ops")]
    assert inst.body["extendedLocation"]["name"].endswith("/customLocations/aio-l3-cl")
    assert inst.body["properties"]["schemaRegistryRef"]["resourceId"].endswith("/schemaRegistries/aio-l3-sr")
    # a resource's wave is after the waves of what it needs
    w = {r.action: r.wave for r in res if r.level == "level2"}
    assert w["create container"] < w["assign Storage Blob Data Contributor"]
    assert w["init: extension microsoft.certmanagement"] < w["create: extension microsoft.iotoperations"] \
        < w["create: custom location"] < w["create: instance"] < w["create: broker"] < w["create: broker listener"]
