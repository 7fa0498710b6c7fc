"""The AIO extension stand-in's pure parts: listener ports from ARM listener resources, the mosquitto configuration
it writes, and the desired-vs-live comparison the sdk executor's skips rest on."""
from __future__ import annotations

from pathlib import Path

from layernet.azure import aio_sdk
from layernet.lab import aioext

ROOT = Path(__file__).resolve().parents[2]


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
    # stage 03's default listener authenticates with service account tokens, which the lab does not check: no
    # anonymous client either
    sat = [{"name": "default", "port": 18883, "tls": True, "auth": "unmodelled", "trusted_ca": None}]
    assert "allow_anonymous false" in aioext.mosquitto_conf("10.1.2.3", sat, "/s.crt", "/s.key", "/log").splitlines()


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
        configured = [(p["name"], p["port"], p["tls"], p["auth"] != "anonymous") for p in aioext.listener_ports(res, auths)]
        assert sorted(probed[r.level]) == sorted(configured) == [("default", 18883, True, True),
                                                                 ("default-insecure", 1883, False, False)]


def test_the_broker_reads_the_trusted_ca_config_map_and_refuses_clients_without_its_certificates(tmp_path):
    """The stand-in's broker on loopback, its cluster API played by KubeApiDouble (plain HTTP): without the ConfigMap
    the X.509 listener stays down, naming it; with it, mosquitto requires a client certificate that CA signed."""
    import json
    import time

    import pytest

    from layernet.lab import pki
    from layernet.lab.dataflow import MqttTls, connect_mqtt
    from layernet.render.telemetry import render
    from layernet.telemetry.loopback import free_port, loopback_site
    from kube_double import KubeApiDouble

    host = "127.73.3.1"
    site = loopback_site(ROOT / "params" / "lab.yaml", net=73, port=free_port([host], 18960), mode="x509")
    ca_dir = tmp_path / "ca"
    ca, _ = pki.ensure_ca(ca_dir)
    cert, key = pki.issue_cert(ca_dir, tmp_path, "client", "layernet-mqtt-client", server=False, client=True)
    api = KubeApiDouble()
    cfg = aioext.config(site, "level3", "/cluster", ca_dir, tmp_path)
    cfg["kube"] = {"server": api.host, "cert": str(cert), "key": str(key)}
    (tmp_path / aioext.LISTENERS_FILE).write_text(json.dumps(dict(zip(
        ("listeners", "authentications"), aioext.from_records(render(site)["level3"])))))
    ext = aioext.Extension(cfg)
    ext.status["extensions"]["x"] = {"type": aioext.IOT_OPERATIONS, "state": "Installed"}
    try:
        ext.ensure_broker()
        assert ext.broker is None
        assert "layernet-mqtt-ca does not exist" in ext.status["broker"]["error"]
        api.objects["/api/v1/namespaces/azure-iot-operations/configmaps/layernet-mqtt-ca"] = {
            "kind": "ConfigMap", "data": {"ca.crt": ca.read_text()}}
        ext._retry_at = 0.0
        ext.ensure_broker()
        assert ext.broker is not None and ext.status["broker"]["error"] is None, ext.status["broker"]
        port = site.telemetry.mqtt.effective_port
        for tls in (MqttTls(str(ca)), None):
            with pytest.raises((ConnectionError, OSError)):
                connect_mqtt(host, port, "no-certificate", tls, timeout=3).loop_stop()
        c = connect_mqtt(host, port, "with-certificate", MqttTls(str(ca), str(cert), str(key)), timeout=5)
        c.disconnect()
        c.loop_stop()
        # the ConfigMap gone (or the API away): the running broker keeps the CA it has
        api.objects.clear()
        pid, ext._retry_at = ext.broker.pid, 0.0
        time.sleep(0.01)
        ext.ensure_broker()
        assert ext.broker.pid == pid and "trusted CA not read again" in ext.status["broker"]["note"]
    finally:
        ext.stop_broker()
        api.close()


def test_the_mqtt_checks_on_a_real_broker_round_trip_see_a_refusal_and_name_a_closed_port(tmp_path):
    """Stage 03's MQTT checks (one verify session each) against mosquitto on loopback: a round trip on the anonymous
    listener, a refusing CONNACK on one that takes no anonymous clients, and a closed port named as such."""
    import subprocess

    from layernet.telemetry.loopback import free_port, wait_port

    host = "127.73.4.1"
    open_, locked = free_port([host], 18980), free_port([host], 19000)
    ports = [{"name": "open", "port": open_, "tls": False},
             {"name": "locked", "port": locked, "tls": False, "auth": "unmodelled"}]
    conf = tmp_path / "m.conf"
    conf.write_text(aioext.mosquitto_conf(host, ports, None, None, str(tmp_path / "m.log")))
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(host, open_, 5)
        wait_port(host, locked, 5)
        ok, seen = aioext.mqtt_round_trip(host, open_, timeout=3)
        assert ok and seen.startswith("round trip in"), seen
        assert aioext.mqtt_refuses_anonymous(host, open_, timeout=3) == (False, "an anonymous client was let in")
        refused, seen = aioext.mqtt_refuses_anonymous(host, locked, timeout=3)
        assert refused and "anonymous client refused (CONNACK" in seen, seen
        assert not aioext.mqtt_round_trip(host, locked, timeout=2)[0]
    finally:
        broker.terminate()
        broker.wait(5)
    ok, seen = aioext.mqtt_round_trip(host, open_, timeout=1)
    assert not ok and "refused" in seen, seen
