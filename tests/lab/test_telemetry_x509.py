"""The recommended MQTT variant between levels: TLS on the listener port with X.509 client certificates.
On loopback with real mosquitto brokers that require a client certificate: the dataflows, the connector and the
taps present theirs and every message arrives enriched; a client without a certificate is refused."""
from __future__ import annotations

import pytest

from layernet.lab.dataflow import MqttTls, connect_mqtt
from layernet.render.telemetry import find, render
from layernet.telemetry.loopback import LoopbackFlow, free_port, loopback_site
from layernet.telemetry.verify import analyse, observe

NET = 75
HOSTS = [f"127.{NET}.{n}.1" for n in (4, 3, 2)]


@pytest.fixture(scope="module")
def site():
    return loopback_site("params/lab.yaml", net=NET, port=free_port(HOSTS, 18980), opc_port=free_port(HOSTS[2:], 50550),
                         rate_hz=20, mode="x509")


@pytest.fixture(scope="module")
def flow(site, tmp_path_factory):
    with LoopbackFlow(site, tmp_path_factory.mktemp("telemetry-x509")) as f:
        yield f


def test_rendered_endpoint_asks_for_tls_and_a_client_certificate(site):
    ep = find(render(site)["level2"], "dataflowEndpoints", "to-level3")[0]["body"]["properties"]["mqttSettings"]
    assert ep["tls"]["mode"] == "Enabled" and ep["authentication"]["method"] == "X509Certificate"
    assert ep["host"] == f"{HOSTS[1]}:{site.telemetry.mqtt.effective_port}"


def test_every_message_arrives_over_mutual_tls(site, flow):
    route_list, got = observe(site, 8.0, brokers=flow.brokers(), tls=flow.tap_tls(), started=flow.start_connector)
    a = analyse(route_list, got["records"])
    assert a.problems == [], a.problems
    assert a.summary["messages"] >= 40 and a.summary["lost"] == 0
    assert (a.hops["bad_or_unenriched"] == 0).all()
    for _, rows in a.hops.groupby("route"):
        assert rows["sequence_gaps"].nunique() == 1          # no gap added on the way


def test_the_stage_s_window_options_work_over_mutual_tls(site, flow):
    """Stage 04's settle (wait_flowing) and adaptive minimum go through the same TLS taps as the window itself."""
    if not any(name.endswith("-connector") for name in flow.procs):
        flow.start_connector()
    route_list, got = observe(site, 2.0, brokers=flow.brokers(), tls=flow.tap_tls(), settle=10.0, min_judged=30)
    a = analyse(route_list, got["records"])
    assert a.problems == [] and got["kafka_error"] is None
    assert a.summary["messages"] >= 30 and a.summary["lost"] == 0
    assert got["window_s"] >= 3.0          # 2 s judge nothing (the 2 s grace): it went on until 30 were judged


def test_a_client_without_certificate_is_refused(site, flow):
    host, port = flow.brokers()["level3"]
    with pytest.raises((ConnectionError, OSError)):
        c = connect_mqtt(host, port, "no-cert", MqttTls(flow.certs["ca"]), timeout=3)
        c.disconnect()
        c.loop_stop()
    with pytest.raises((ConnectionError, OSError)):
        c = connect_mqtt(host, port, "plain", None, timeout=3)
        c.disconnect()
        c.loop_stop()
