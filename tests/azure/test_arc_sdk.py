"""Stage 02 through the SDK (the executor the lab uses) and the verification shared by real sites and the lab,
against the HTTPS ARM double of tests/doubles: exact requests, the connected-cluster body with the agent's
public key, LRO handling, idempotent re-plan, polling until Connected or the timeout, and the failure hint."""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_der_public_key
from arm_double import ArmDouble, StaticToken
from sites import example_site

from layernet.azure import arc as az_arc  # noqa: E402
from layernet.azure.clients import Arm  # noqa: E402
from layernet.stages import arc  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"
OID = "51dfe1e8-70c6-4de5-a08e-e18aff23d815"


@pytest.fixture
def armd(tmp_path):
    d = ArmDouble(tmp_path)
    yield d
    d.close()


@pytest.fixture
def conn(armd):
    return Arm(SUB, StaticToken(), armd.url, str(armd.ca), extra={"polling_interval": 0})


class Agents:
    """Where the agents' feature settings live for these tests (the lab's target keeps them with its agent
    stand-ins; ARM does not hold them)."""

    def __init__(self):
        self.features: dict[str, list] = {}

    def enable(self, level, features):
        self.features[level] = sorted(set(self.features.get(level, [])) | set(features))
        return f"{level}: {', '.join(self.features[level])}"


AGENTS = Agents()


@pytest.fixture(autouse=True)
def agents(monkeypatch):
    from layernet.targets.cluster import Cluster

    AGENTS.features.clear()
    monkeypatch.setattr(Cluster, "arc_features", lambda self, level: AGENTS.features.get(level, []))
    return AGENTS


def site_sdk(**arc_over):
    return example_site(arc={"executor": "sdk", "custom_locations_oid": OID, **arc_over})


def connect_when_put(armd: ArmDouble, status="Connected"):
    armd.on_put["connectedclusters"] = lambda r: r["properties"].update(
        connectivityStatus=status, agentVersion="1.21.10", lastConnectivityTime="2026-12-01T22:00:00Z")


def quiet(_m):
    pass


def test_sdk_executor_makes_the_arm_calls_of_the_plan(armd, conn):
    connect_when_put(armd)
    site = site_sdk()
    p = arc.plan(site, arm=conn)
    assert p.executor == "sdk"
    assert [s.action for s in p.changes][:7] == ["register provider"] * 6 + ["create resource group"]
    ex = az_arc.SdkExecutor(site, conn, key_size=2048, on_features=AGENTS.enable)
    arc.apply(p, site, arm=conn, executor=ex, progress=quiet)
    assert [r.path.split("/")[4] for r in armd.calls("POST", "/register")] == list(site.arc.providers)
    rg = [r for r in armd.calls("PUT") if r.path.lower().endswith("/resourcegroups/rg-plant-example")]
    assert len(rg) == 1 and rg[0].body == {"location": "eastus"}
    puts = armd.calls("PUT", "/connectedClusters/")
    assert [r.path.rsplit("/", 1)[1] for r in puts] == ["aio-plant-l4", "aio-plant-l3", "aio-plant-l2"]
    body = puts[0].body
    pub = body["properties"].pop("agentPublicKeyCertificate")
    assert body == {"location": "eastus", "identity": {"type": "SystemAssigned"},
                    "properties": {"distribution": "k3s", "infrastructure": "generic",
                                   "oidcIssuerProfile": {"enabled": True},
                                   "securityProfile": {"workloadIdentity": {"enabled": True}},
                                   "arcAgentProfile": {"agentAutoUpgrade": "Disabled"}}}
    # base64 of the PKCS#1 RSAPublicKey DER of the key the executor keeps for the agents
    der = base64.b64decode(pub)
    assert der == ex.keys["level4"].public_key().public_bytes(serialization.Encoding.DER,
                                                              serialization.PublicFormat.PKCS1)
    # every call carried an api-version and the bearer token; the LRO status URL was followed
    assert all("api-version" in r.query for r in armd.requests)
    assert {r.authorization for r in armd.requests} == {"Bearer test-token"}
    assert armd.calls("GET", "/connectedClusters/aio-plant-l2/operationStatuses/")
    # a second plan finds everything in place
    again = arc.plan(site, arm=conn)
    assert again.empty, again.table()


def test_default_agent_key_is_rsa_4096():
    key, pub = az_arc.new_agent_key()
    assert key.key_size == 4096
    der = base64.b64decode(pub)
    pk = key.public_key()
    assert der == pk.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert der != pk.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_der_public_key(der).public_numbers() == pk.public_numbers()


def test_failed_connect_lro_fails_the_stage(armd, conn):
    def fail(r):
        r["properties"]["provisioningState"] = "Failed"
        r["properties"]["error"] = {"code": "ConnectFailed", "message": "agent key rejected"}
    armd.on_put["connectedclusters"] = fail
    site = site_sdk()
    p = arc.plan(site, arm=conn)
    from azure.core.exceptions import HttpResponseError
    with pytest.raises(HttpResponseError, match="agent key rejected"):
        arc.apply(p, site, arm=conn, executor=az_arc.SdkExecutor(site, conn, key_size=2048, on_features=AGENTS.enable), progress=quiet)


def test_verify_reports_connected_clusters(armd, conn):
    connect_when_put(armd)
    site = site_sdk()
    arc.apply(arc.plan(site, arm=conn), site, arm=conn, executor=az_arc.SdkExecutor(site, conn, key_size=2048, on_features=AGENTS.enable),
              progress=quiet)
    rows = arc.verify(site, arm=conn, interval=0, progress=quiet)
    assert [r["level"] for r in rows] == ["level4"] * 4 + ["level3"] * 4 + ["level2"] * 4
    assert all(r["ok"] for r in rows), rows
    by = {(r["level"], r["check"]): r["observed"] for r in rows}
    assert by[("level3", "connectivity status")] == "Connected"
    assert by[("level3", "agent version")] == "1.21.10"
    assert by[("level3", "last connectivity time")] == "2026-12-01T22:00:00Z"
    assert arc.failed(rows) is None
    assert list(arc.verify_table(rows).columns) == ["level", "check", "expected", "observed", "ok", "hint"]


def test_verify_waits_for_the_site_timeout_and_names_logs_and_refused_hosts(armd, conn):
    connect_when_put(armd, status="Connecting")
    site = site_sdk(onboarding_timeout={"level4": 480, "level3": 960, "level2": 960})
    arc.apply(arc.plan(site, arm=conn), site, arm=conn, executor=az_arc.SdkExecutor(site, conn, key_size=2048, on_features=AGENTS.enable),
              progress=quiet)
    # level4 comes up after the second poll; level2 stays Connecting
    polls = {"n": 0}
    l4 = f"/subscriptions/{SUB}/resourcegroups/rg-plant-example/providers/microsoft.kubernetes/connectedclusters/aio-plant-l4"
    l3 = l4.replace("aio-plant-l4", "aio-plant-l3")
    now = [0.0]

    def sleep(s):
        now[0] += 100.0
        polls["n"] += 1
        if polls["n"] == 2:
            armd.store[l4]["properties"]["connectivityStatus"] = "Connected"
            armd.store[l3]["properties"]["connectivityStatus"] = "Connected"

    lines: list[str] = []
    rows = arc.verify(site, arm=conn, interval=100, sleep=sleep, clock=lambda: now[0], progress=lines.append,
                      refused={"level2": ["gbl.his.arc.azure.com", "eastus.his.arc.azure.com"]})
    ok = {(r["level"], r["check"]): r["ok"] for r in rows}
    assert ok[("level4", "connectivity status")] and ok[("level3", "connectivity status")]
    assert not ok[("level2", "connectivity status")]
    bad = next(r for r in rows if r["level"] == "level2" and r["check"] == "connectivity status")
    assert bad["observed"] == "Connecting"
    assert "aio-plant-l2 is Connecting after 960 s" in bad["hint"]
    assert "~/.azure/pre_onboarding_check_logs/aio-plant-l2-*" in bad["hint"]
    assert "refused at level2: eastus.his.arc.azure.com, gbl.his.arc.azure.com" in bad["hint"]
    assert now[0] == 1000.0                               # polled until level2's 960 s were up, not longer
    assert any("level2: aio-plant-l2 still Connecting after 960 s" in l for l in lines)
    assert arc.failed(rows).startswith("level2: connectivity status is Connecting")


def test_verify_of_a_missing_cluster_says_so(armd, conn):
    site = site_sdk()
    rows = arc.verify(site, arm=conn, interval=1, timeouts={"level4": 0, "level3": 0, "level2": 0},
                      progress=quiet, sleep=lambda s: None)
    first = rows[0]
    assert first["observed"] == "absent" and not first["ok"]
    assert "does not exist in ARM" in first["hint"]
    assert "no refused host seen at level4" in first["hint"]


def test_clients_take_the_injected_endpoint_credential_and_ca(armd, conn, monkeypatch):
    cred = StaticToken()
    a = Arm(SUB, cred, armd.url, str(armd.ca))
    for make in (a.resources, a.deployments, a.connected_kubernetes, a.iotoperations, a.extensions):
        client = make()
        assert client._config.credential is cred
        assert client._config.base_url == armd.url
    a.resources().resource_groups.check_existence("nope")
    assert cred.scopes == (armd.url + "/.default",)
    # without the CA bundle the double's certificate is not trusted
    from azure.core.exceptions import ServiceRequestError
    with pytest.raises(ServiceRequestError):
        Arm(SUB, cred, armd.url, True, extra={"retry_total": 0}).resources().resource_groups.check_existence("x")


def test_a_cluster_that_went_offline_is_named_with_its_last_contact(armd, conn):
    connect_when_put(armd)
    site = site_sdk()
    arc.apply(arc.plan(site, arm=conn), site, arm=conn, executor=az_arc.SdkExecutor(site, conn, key_size=2048, on_features=AGENTS.enable),
              progress=quiet)
    l3 = f"/subscriptions/{SUB}/resourcegroups/rg-plant-example/providers/microsoft.kubernetes/connectedclusters/aio-plant-l3"
    armd.store[l3]["properties"]["connectivityStatus"] = "Offline"      # e.g. level3's Envoy stopped
    rows = arc.verify(site, arm=conn, interval=1, timeouts={"level4": 0, "level3": 0, "level2": 0},
                      progress=quiet, sleep=lambda s: None)
    bad = [r for r in rows if not r["ok"]]
    assert [(r["level"], r["check"], r["observed"]) for r in bad] == [("level3", "connectivity status", "Offline")]
    assert "the agents stopped reaching Azure (last seen 2026-12-01T22:00:00Z)" in bad[0]["hint"]
    assert "from level3 up to the egress level" in bad[0]["hint"]
    assert "pre_onboarding" not in bad[0]["hint"]


def test_changed_settings_are_a_put_that_keeps_the_agents_key(armd, conn):
    connect_when_put(armd)
    site = site_sdk()
    ex = az_arc.SdkExecutor(site, conn, key_size=2048, on_features=AGENTS.enable)
    arc.apply(arc.plan(site, arm=conn), site, arm=conn, executor=ex, progress=quiet)
    first = armd.calls("PUT", "/connectedClusters/aio-plant-l4")[0].body["properties"]["agentPublicKeyCertificate"]
    changed = site_sdk(auto_upgrade=True)
    p = arc.plan(changed, arm=conn)
    assert [(s.level, s.action) for s in p.changes] == [(lv, "update cluster settings")
                                                        for lv in ("level4", "level3", "level2")]
    assert "agentAutoUpgrade 'Disabled' -> 'Enabled'" in p.changes[0].reason
    arc.apply(p, changed, arm=conn, executor=az_arc.SdkExecutor(changed, conn, key_size=2048, on_features=AGENTS.enable), progress=quiet)
    puts = armd.calls("PUT", "/connectedClusters/aio-plant-l4")
    assert len(puts) == 2
    assert puts[1].body["properties"]["agentPublicKeyCertificate"] == first
    assert puts[1].body["properties"]["arcAgentProfile"] == {"agentAutoUpgrade": "Enabled"}
    assert arc.plan(changed, arm=conn).empty
