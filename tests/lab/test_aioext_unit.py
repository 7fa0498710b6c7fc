"""The AIO extension stand-in's pure parts: listener ports from ARM listener resources, the mosquitto configuration
it writes, and the desired-vs-live comparison the sdk executor's skips rest on."""
from __future__ import annotations

from layernet.azure import aio_sdk
from layernet.lab import aioext


def test_listener_ports_follow_the_resources_tls_mode():
    listeners = [{"name": "default", "properties": aio_sdk.LISTENERS["default"]},
                 {"name": "default-insecure", "properties": aio_sdk.LISTENERS["default-insecure"]},
                 {"name": "plain", "properties": {"ports": [{"port": 8883, "tls": {"mode": "Disabled"}}]}}]
    auths = [{"name": "default", "properties": {"authenticationMethods": [{"method": "ServiceAccountToken"}]}}]
    got = aioext.listener_ports(listeners, auths)
    assert [(p["name"], p["port"], p["tls"], p["auth"]) for p in got] == [
        ("default-insecure", 1883, False, "anonymous"), ("plain", 8883, False, "anonymous"),
        ("default", 18883, True, "unmodelled")]


def x509_site(mode: str = "x509"):
    from pathlib import Path

    from layernet.site import load_site

    return load_site(Path(__file__).resolve().parents[2] / "params" / "lab.yaml", [f"telemetry.mqtt.mode={mode}"])


def test_the_rendered_x509_listener_requires_a_certificate_from_the_config_maps_ca():
    from layernet.render.telemetry import render

    site = x509_site()
    ports = aioext.listener_ports(*aioext.from_records(render(site)["level3"]))
    assert ports == [{"name": "publiclistener", "port": 8883, "tls": True, "auth": "x509",
                      "trusted_ca": "layernet-mqtt-ca"}]
    conf = aioext.mosquitto_conf("10.1.2.3", ports, "/s.crt", "/s.key", "/log", {"layernet-mqtt-ca": "/ca.pem"})
    block = conf.split("listener 8883 10.1.2.3", 1)[1].splitlines()
    assert {"allow_anonymous false", "require_certificate true", "cafile /ca.pem", "certfile /s.crt"} <= set(block)
    assert "allow_anonymous true" not in block


def test_a_listener_is_anonymous_only_without_authentication_and_a_dangling_reference_is_refused():
    import pytest

    from layernet.render.telemetry import render

    anon = aioext.listener_ports(*aioext.from_records(render(x509_site("anonymous"))["level3"]))
    assert [(p["port"], p["auth"]) for p in anon] == [(1883, "anonymous")]
    listeners, _ = aioext.from_records(render(x509_site())["level3"])
    with pytest.raises(ValueError, match="authenticationRef 'x509-authn' names no broker authentication"):
        aioext.listener_ports(listeners, [])
    plain = [{"name": "l", "properties": {"ports": [{"port": 8883, "authenticationRef": "a"}]}}]
    auth = [{"name": "a", "properties": {"authenticationMethods": [{"method": "X509", "x509Settings": {
        "trustedClientCaCert": "ca"}}]}}]
    with pytest.raises(ValueError, match="X509 authentication needs TLS"):
        aioext.listener_ports(plain, auth)


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


def test_stage_03_probes_the_ports_its_listener_resources_give_the_broker():
    from layernet.azure import aio as az_aio
    from layernet.stages import aio

    site = x509_site()
    probed = aio.broker_listeners(site)
    auths = [{"name": "default", "properties": {"authenticationMethods": [{"method": "ServiceAccountToken"}]}}]
    for r in az_aio.levels(site):
        res = [{"name": n, "properties": az_aio.LISTENERS[n]} for n in az_aio.listener_names(r)]
        configured = [(p["name"], p["port"], p["tls"]) for p in aioext.listener_ports(res, auths)]
        assert sorted(probed[r.level]) == sorted(configured) == [("default", 18883, True), ("default-insecure", 1883, False)]
