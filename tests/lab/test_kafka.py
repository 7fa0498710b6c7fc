"""Apache Kafka as the lab's Event Hubs namespace (layernet.lab.kafka).

Unit tests render the broker's files and handle the connection string and the front's routes in a temporary
state folder. The lab tests build their own lab (prefix `ek`, address plan 10.87.0.0/16), start the real broker
and prove it the way real traffic goes: a confluent-kafka client in a level's namespace resolves the namespace's
name with that level's DNS, goes through the cloud's TLS front (and the proxy chain from a lower level),
produces and consumes with the Event Hubs client settings; a wrong password, a plaintext client and a wrong
server name are refused. The lab is ALWAYS taken down at the end."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import labs
from layernet.lab import LabError, kafka

ROOT = Path(__file__).resolve().parents[2]
LAB_SITE = ROOT / "params" / "lab.yaml"
PLAN = labs.plan(__file__)
PREFIX = PLAN.prefix
CS_RE = re.compile(r"^Endpoint=sb://layernet-lab-ehns\.servicebus\.windows\.net/;SharedAccessKeyName=\w+;"
                   r"SharedAccessKey=[A-Za-z0-9+/]{43}=$")


def make_site(prefix: str = PREFIX):
    return labs.site(labs.Plan(prefix, PLAN.octet))


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr("layernet.paths.LAB_STATE", tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------------------------- unit
def test_properties_advertise_the_namespace_and_bind_loopback_only(state):
    site = make_site()
    props = kafka.render_properties(site, kafka._paths(site))
    conf = dict(line.split("=", 1) for line in props.splitlines() if line and not line.startswith("#"))
    assert conf["advertised.listeners"].split(",")[0] == "EVENTHUBS://layernet-lab-ehns.servicebus.windows.net:9093"
    listeners = conf["listeners"].split(",")
    assert [l.split("://")[1].rsplit(":", 1)[0] for l in listeners] == ["127.0.0.1"] * 3
    assert f"EVENTHUBS://127.0.0.1:{kafka.LISTEN_PORT}" in listeners
    assert "EVENTHUBS:SASL_SSL" in conf["listener.security.protocol.map"].split(",")
    assert conf["listener.name.eventhubs.sasl.enabled.mechanisms"] == "OAUTHBEARER,PLAIN"
    assert conf["process.roles"] == "broker,controller" and conf["auto.create.topics.enable"] == "false"
    assert conf["ssl.keystore.type"] == "PEM" and conf["ssl.keystore.location"].endswith("broker.pem")
    assert "password" not in props.lower() and "SharedAccessKey" not in props
    assert "-Xmx256m" in kafka.argv(site)


def test_tokens_are_checked_by_kafkas_own_validator_against_the_entra_jwks(state):
    from layernet.lab import azure as lab_azure

    site = make_site()
    props = kafka.render_properties(site, kafka._paths(site))
    conf = dict(line.split("=", 1) for line in props.splitlines() if line and not line.startswith("#"))
    tenant = lab_azure.tenant_id(site)
    jwks = f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys"
    assert conf["listener.name.eventhubs.oauthbearer.sasl.server.callback.handler.class"] == (
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler")
    # 4.1's default DefaultJwtValidator checks no signature without a key resolver: the broker's one is named
    assert conf["sasl.oauthbearer.jwt.validator.class"] == "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator"
    assert conf["sasl.oauthbearer.jwks.endpoint.url"] == jwks == kafka.jwks_url(site)
    assert conf["sasl.oauthbearer.expected.audience"] == "https://layernet-lab-ehns.servicebus.windows.net"
    assert conf["sasl.oauthbearer.expected.issuer"] == f"https://sts.windows.net/{tenant}/"
    assert conf["sasl.oauthbearer.sub.claim.name"] == "oid"
    jaas = conf["listener.name.eventhubs.oauthbearer.sasl.jaas.config"]
    assert 'ssl.truststore.type="PEM"' in jaas and str(kafka._paths(site)["ca"]) in jaas and jaas.endswith(";")
    assert conf["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert conf["super.users"].split(";") == ["User:ANONYMOUS", "User:$ConnectionString"]
    assert conf["allow.everyone.if.no.acl.found"] == "false"
    # Kafka 4 fetches only allow-listed URLs: exactly the JWKS
    allowed = [a for a in kafka.argv(site) if a.startswith("-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=")]
    assert allowed == [f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks}"]
    assert not any(a.startswith("-Djdk.net.hosts.file") for a in kafka.argv(site))
    assert any(a.startswith("-Djdk.net.hosts.file") for a in kafka.argv(site, jwks_resolves=False))


def test_jaas_accepts_exactly_the_connection_string():
    cs = "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=abc+/=="
    text = kafka.render_jaas(cs)
    assert re.findall(r'user_(\S+)="([^"]*)"', text) == [("$ConnectionString", cs)]
    assert "PlainLoginModule required" in text and text.strip().endswith("};")
    with pytest.raises(LabError):
        kafka.render_jaas('bad"quote')


def test_connection_string_is_per_lab_private_and_renewed_after_stop(state):
    site, other = make_site(), make_site("ey")
    cs = kafka.connection_string(site)
    assert CS_RE.match(cs), "connection string shape"
    path = kafka.kafka_dir(site) / "connection-string"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert kafka.connection_string(site) == cs
    assert kafka.connection_string(other) != cs
    assert kafka.env_var(site) == site.telemetry.eventhubs.connection_string_env == kafka.ENV_VAR
    assert kafka.client_env(site, {}) == {kafka.ENV_VAR: cs}
    assert kafka.stop(site) is False                       # nothing running: only the secret goes
    assert not path.exists()
    assert kafka.connection_string(site) != cs


def test_redact_hides_the_connection_string_and_its_key(state):
    site = make_site()
    cs = kafka.connection_string(site)
    key = cs.rsplit("SharedAccessKey=", 1)[1]
    out = kafka.redact(f"boom {cs} and {key}", site)
    assert key not in out and out == "boom *** and ***"


def test_routes_merge_with_other_entries_and_remove_only_ours(state):
    site = make_site()
    path = kafka.routes_path(site)
    path.parent.mkdir(parents=True)
    other = {"names": ["other.example"], "port": 443, "backend": "127.0.0.1:18443"}
    path.write_text(json.dumps([other]))
    kafka.add_route(site)
    kafka.add_route(site)                                   # idempotent
    entries = json.loads(path.read_text())
    assert entries == [other, {"names": ["layernet-lab-ehns.servicebus.windows.net", "*.servicebus.windows.net"],
                               "port": 9093, "backend": f"127.0.0.1:{kafka.LISTEN_PORT}"}]
    kafka.remove_route(site)
    assert json.loads(path.read_text()) == [other]


def test_hubs_and_host_come_from_the_site():
    site = make_site()
    assert kafka.hubs(site) == [site.telemetry.eventhubs.hub]
    bare = SimpleNamespace(azure=SimpleNamespace(eventhubs_namespace="Ns1", cloud="usgov"))
    assert kafka.hubs(bare) == [kafka.DEFAULT_HUB]
    assert kafka.host(bare) == "ns1.servicebus.usgovcloudapi.net"
    with pytest.raises(LabError, match="azure.eventhubs_namespace"):
        kafka.host(SimpleNamespace(azure=SimpleNamespace(eventhubs_namespace=None, cloud="public")))


def test_client_config_is_what_event_hubs_needs(state, monkeypatch):
    site = make_site()
    monkeypatch.setenv(kafka.ENV_VAR, "Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b")
    conf = kafka.client_config(site)
    assert conf["bootstrap.servers"] == "layernet-lab-ehns.servicebus.windows.net:9093"
    assert (conf["security.protocol"], conf["sasl.mechanism"], conf["sasl.username"]) == ("SASL_SSL", "PLAIN",
                                                                                          "$ConnectionString")
    assert conf["sasl.password"] == os.environ[kafka.ENV_VAR]
    assert conf["ssl.ca.location"] == str(state / PREFIX / "ca" / "ca.crt")
    monkeypatch.delenv(kafka.ENV_VAR)
    with pytest.raises(LabError, match=kafka.ENV_VAR):
        kafka.client_config(site)


def test_status_row_only_after_start_and_failing_when_the_broker_died(state):
    site = make_site()
    assert kafka.status_row(site) is None
    dead = {"name": kafka.PROC_NAME, "ns": "ek-cloud", "pid": 2 ** 22 + 1, "start_time": 1, "argv": [], "log": ""}
    kafka._record_path(site).parent.mkdir(parents=True)
    kafka._record_path(site).write_text(json.dumps(dead))
    row = kafka.status_row(site)
    assert row["level"] == "eventhubs" and row["ok"] is False and "dead" in row["envoy"]
    assert not kafka.is_running(site)


def test_missing_build_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERNET_KAFKA_HOME", str(tmp_path))
    assert "make setup" in kafka.missing() and kafka.KAFKA_VERSION in kafka.missing()
    with pytest.raises(LabError, match="make setup"):
        kafka.start(make_site())


# ----------------------------------------------------------------------------------------------- lab
@pytest.fixture(scope="module")
def eh_lab():
    """Our own lab with the broker started; ALWAYS taken down afterwards."""
    from layernet.lab import commands

    labs.missing(commands.missing_requirements() or kafka.missing())
    site = make_site()
    clash = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
             if n.startswith(PREFIX + "-")]
    assert not clash or commands.state_dir(site).exists(), f"namespaces {clash} are not from this test's lab"
    with labs.running(site):
        info = kafka.start(site, progress=lambda m: print(m, file=sys.stderr))
        yield site, info


def egress_ns(site) -> str:
    return f"{site.lab.prefix}-{site.egress_level}"


@pytest.mark.lab
@pytest.mark.slow
def test_broker_ready_within_15_s_and_start_is_idempotent(eh_lab):
    from layernet.lab import commands

    site, info = eh_lab
    print(f"\nKafka start {info['seconds']} s, RSS {info['rss_mb']} MB", file=sys.stderr)
    assert info["started"] and info["seconds"] < kafka.READY_TIMEOUT
    assert info["host"] == "layernet-lab-ehns.servicebus.windows.net" and info["topics"] == kafka.hubs(site)
    again = kafka.start(site, event_hubs=kafka.hubs(site) + ["second-hub"])
    assert (again["started"], again["pid"]) == (False, info["pid"])
    assert again["topics"] == sorted(kafka.hubs(site) + ["second-hub"])
    assert kafka.is_running(site)
    d = kafka.kafka_dir(site)
    for name in ("connection-string", "jaas.conf", "tls/broker.pem"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    route = json.loads(kafka.routes_path(site).read_text())
    assert kafka.route(site) in route
    rows = [r for r in commands.status(site) if r["level"] == "eventhubs"]
    assert len(rows) == 1 and rows[0]["ok"] and str(info["pid"]) in rows[0]["envoy"]


@pytest.mark.lab
@pytest.mark.slow
def test_egress_level_produces_and_consumes_through_the_front(eh_lab):
    site, _ = eh_lab
    out = kafka.client_run(site, egress_ns(site), messages=20)
    assert out["errors"] == []
    assert out["resolved"] == ["198.51.100.10"]               # the egress level's DNS: the cloud's front
    assert out["brokers"] == ["layernet-lab-ehns.servicebus.windows.net:9093"]   # the advertised listener
    assert kafka.hubs(site)[0] in out["topics"]
    assert (out["produced"], out["consumed"]) == (20, 20)
    front = [json.loads(l) for l in (kafka._state_dir(site) / "cloud" / "front.jsonl").read_text().splitlines()]
    spliced = [f for f in front if f.get("sni") == kafka.host(site) and f.get("port") == 9093]
    assert spliced and all(f["backend"] == f"127.0.0.1:{kafka.LISTEN_PORT}" for f in spliced)
    egress_ip = str(next(lv.node_ip for lv in site.levels if lv.name == site.egress_level))
    assert {f["peer"].rsplit(":", 1)[0] for f in spliced} == {egress_ip}


@pytest.mark.lab
@pytest.mark.slow
def test_lower_level_reaches_it_through_the_proxy_chain(eh_lab):
    site, _ = eh_lab
    level = site.telemetry.eventhubs_from_levels[0]
    parent = site.parent(level)
    out = kafka.client_run(site, f"{site.lab.prefix}-{level}", messages=5)
    assert out["errors"] == [] and (out["produced"], out["consumed"]) == (5, 5)
    assert out["resolved"] == [str(parent.node_ip)]          # the level's DNS points at the parent's proxy


@pytest.mark.lab
@pytest.mark.slow
def test_wrong_password_is_refused(eh_lab):
    site, _ = eh_lab
    wrong = kafka.new_connection_string(site)
    out = kafka.client_run(site, egress_ns(site), messages=0, password=wrong, timeout=5)
    assert "brokers" not in out
    assert any("SASL authentication error: Authentication failed: Invalid username or password" in e
               for e in out["errors"]), out["errors"]
    assert kafka.connection_string(site) not in json.dumps(out)


@pytest.mark.lab
@pytest.mark.slow
def test_plaintext_client_is_refused(eh_lab):
    site, _ = eh_lab
    out = kafka.client_run(site, egress_ns(site), messages=0, protocol="PLAINTEXT", timeout=5,
                           extra={"debug": "broker"})
    assert "brokers" not in out
    assert any(re.search(r"Disconnected: connection (reset|closed) by peer", e) for e in out["errors"]), out["errors"]


@pytest.mark.lab
@pytest.mark.slow
def test_wrong_server_name_is_refused(eh_lab):
    site, _ = eh_lab
    out = kafka.client_run(site, egress_ns(site), messages=0, bootstrap="other-ns.servicebus.windows.net:9093",
                           timeout=5)
    assert "brokers" not in out
    assert any("SSL handshake failed" in e and "certificate verify failed" in e for e in out["errors"]), out["errors"]


@pytest.mark.lab
@pytest.mark.slow
def test_oauthbearer_tokens_are_validated_by_kafka_against_the_entra_jwks(eh_lab):
    """Kafka's own validator: a well-signed token for the namespace authenticates (and, with no role assignment,
    may do nothing); a token for another audience, an expired one and one signed by a key outside the JWKS (same
    kid) are refused, each with the validator's reason in the broker's log."""
    import time as _time

    from layernet.lab import commands
    from layernet.lab.cloud import entra

    site, _ = eh_lab
    signer = entra.Signer(commands.state_dir(site) / "cloud" / "token-signing.key")
    forger = entra.Signer()
    forger.kid = signer.kid                                  # a key the JWKS does not hold, under its kid
    tenant, aud, ns = kafka.tenant(site), kafka.audience(site), egress_ns(site)
    t0 = _time.time()
    who = "0b0e0000-0000-4000-8000-000000000001"
    ok = kafka.client_run(site, ns, messages=1, token=signer.issue(tenant, "c1", aud, principal_id=who), timeout=6)
    assert ok["brokers"] and not ok.get("produced"), ok          # authenticated, but no role: nothing allowed
    assert any("authorization failed" in e.lower() for e in ok["errors"]), ok
    cases = {"aud": signer.issue(tenant, "c1", "https://management.azure.com", principal_id=who),
             "exp": signer.issue(tenant, "c1", aud, principal_id=who, now=int(_time.time()) - 7200),
             "sig": forger.issue(tenant, "c1", aud, principal_id=who)}
    for name, tok in cases.items():
        out = kafka.client_run(site, ns, messages=0, token=tok, timeout=6)
        assert not out.get("brokers") and any("invalid_token" in e for e in out["errors"]), (name, out)
    reasons = " | ".join(kafka.refusals(site, since=t0, limit=20))
    assert f"User:{who} denied DESCRIBE on Topic" in reasons
    assert "Audience (aud) claim [https://management.azure.com] doesn't contain an acceptable identifier" in reasons
    assert "is on or after the Expiration Time" in reasons
    assert "signature" in reasons.lower(), reasons
    # the connection string still works beside the tokens
    assert kafka.client_run(site, ns, messages=2, timeout=6)["consumed"] == 2


@pytest.mark.lab
@pytest.mark.slow
def test_secret_stays_out_of_logs_and_configs(eh_lab):
    site, _ = eh_lab
    cs = kafka.connection_string(site)
    key = cs.rsplit("SharedAccessKey=", 1)[1]
    d = kafka.kafka_dir(site)
    for name in ("server.properties", "kafka.out", "log4j2.properties"):
        assert key not in (d / name).read_text(), name
    assert key not in json.dumps(kafka.status_row(site))
    assert key not in (kafka._state_dir(site) / "cloud" / "front.jsonl").read_text()


@pytest.mark.lab
@pytest.mark.slow
def test_lab_down_stops_and_cleans_the_broker(eh_lab):
    from layernet.lab import commands

    site, info = eh_lab
    commands.down(site)
    assert not kafka.is_running(site) and not os.path.exists(f"/proc/{info['pid']}")
    d = kafka.kafka_dir(site)
    assert not (d / "connection-string").exists() and not (d / "data").exists() and not (d / "tls").exists()
    routes = kafka.routes_path(site)
    assert not routes.exists() or kafka.host(site) not in routes.read_text()
    assert commands.leftovers(site) == []
