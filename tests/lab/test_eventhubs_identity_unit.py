"""Event Hubs identity pieces without a lab: the lab Entra's tokens and JWKS, managed identities, the role
assignments ARM holds turned into the broker's ACLs, the dataflow's endpoint authentication, the operator's
receiver assignment. The lab tests (tests/stages/test_telemetry_identity_lab.py) run them together."""
from __future__ import annotations

import json
import stat
import time

import jwt
import pytest
from starlette.testclient import TestClient

from kafka_admin import AdminDouble

from layernet.azure import eventhubs_access as access
from layernet.lab import eventhubs_rbac as rbac
from layernet.lab.cloud import entra
from layernet.lab.cloud.arm.view import role_assignments
from layernet.lab.dataflow import KafkaAuth, MappingError, kafka_auth
from layernet.rbac import OWNER, RECEIVER, SENDER

TENANT = "6248b80a-8b8c-5d81-894e-96df29f29734"
NS = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ehns"
AUD = "https://ehns.servicebus.windows.net"


@pytest.fixture
def cloud(tmp_path):
    d = entra.Directory.load_or_create(tmp_path / "entra.json", TENANT)
    signer = entra.Signer(tmp_path / "token-signing.key")
    return tmp_path, d, signer, TestClient(entra.build(d, signer), base_url="https://login.microsoftonline.com")


def token(client, client_id, secret, scope=AUD + "/.default"):
    return client.post(f"/{TENANT}/oauth2/v2.0/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                           "client_secret": secret, "scope": scope})


def test_tokens_are_rs256_v1_with_a_kid_from_the_jwks_at_the_discovery_url(cloud):
    state, d, signer, client = cloud
    cid, secret = next(iter(d.clients.items()))
    r = token(client, cid, secret)
    assert r.status_code == 200, r.text
    tok = r.json()["access_token"]
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "RS256"
    keys = client.get(f"/{TENANT}/discovery/v2.0/keys").json()["keys"]
    assert [k["kid"] for k in keys] == [header["kid"]] and keys[0]["kty"] == "RSA"
    assert entra.jwks_url(TENANT) == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    # verify with the published key only, as Kafka's validator does
    pub = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(tok, pub, algorithms=["RS256"], audience=AUD, issuer=f"https://sts.windows.net/{TENANT}/")
    assert claims["ver"] == "1.0" and claims["tid"] == TENANT and claims["appid"] == cid
    assert claims["oid"] == claims["sub"] == entra.service_principal_oid(cid)   # a service principal: its own
    assert claims["exp"] - claims["iat"] == entra.TOKEN_SECONDS
    assert client.get("/someone-else/discovery/v2.0/keys").status_code == 400
    assert client.get(f"/{TENANT}/v2.0/.well-known/openid-configuration").json()["id_token_signing_alg_values_supported"] == ["RS256"]


def test_a_managed_identity_gets_tokens_for_its_principal_and_the_file_stays_private(cloud):
    state, d, signer, client = cloud
    ext = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/c4/providers/" \
          "Microsoft.KubernetesConfiguration/extensions/aio"
    cred = entra.register_identity(state / "entra.json", "AAAA0000-0000-0000-0000-000000000001", ext)
    assert cred == entra.register_identity(state / "entra.json", "aaaa0000-0000-0000-0000-000000000001", ext)
    assert stat.S_IMODE((state / "entra.json").stat().st_mode) == 0o600
    claims = jwt.decode(token(client, cred["client_id"], cred["secret"]).json()["access_token"],
                        options={"verify_signature": False})
    assert claims["oid"] == claims["sub"] == "aaaa0000-0000-0000-0000-000000000001"
    assert claims["appid"] == cred["client_id"] == entra.identity_client_id(cred["principal_id"])
    assert claims["xms_mirid"] == ext and claims["aud"] == AUD
    assert token(client, cred["client_id"], "wrong").status_code == 401
    with pytest.raises(ValueError):
        entra.register_identity(state / "entra.json", "p", ext, kind="Federated")


def test_the_clock_rehearsal_only_skews_the_named_clients(cloud):
    state, d, signer, client = cloud
    sp, secret = next(iter(d.clients.items()))
    cred = entra.register_identity(state / "entra.json", "bbbb0000-0000-0000-0000-000000000002", "/x")
    entra.set_clock_offset(state, -7200, [cred["client_id"]])
    skewed = jwt.decode(token(client, cred["client_id"], cred["secret"]).json()["access_token"],
                        options={"verify_signature": False})
    plain = jwt.decode(token(client, sp, secret).json()["access_token"], options={"verify_signature": False})
    assert skewed["exp"] < time.time() - 3000 < plain["exp"]
    entra.set_clock_offset(state, 0)
    assert not (state / entra.REHEARSAL_FILE).exists()
    again = jwt.decode(token(client, cred["client_id"], cred["secret"]).json()["access_token"],
                       options={"verify_signature": False})
    assert again["exp"] > time.time()


def store(tmp_path, *assignments):
    res = {}
    for i, (scope, role, principal) in enumerate(assignments):
        rid = f"{scope}/providers/Microsoft.Authorization/roleAssignments/r{i}"
        res[rid.lower()] = {"id": rid, "type": "Microsoft.Authorization/roleAssignments", "properties": {
            "roleDefinitionId": f"/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/{role}",
            "principalId": principal}}
    res["/x"] = {"id": "/x", "type": "Microsoft.EventHub/namespaces", "properties": {}}
    path = tmp_path / "arm-store.json"
    path.write_text(json.dumps({"resources": res}))
    return path


def test_role_assignments_become_acls_on_the_principal_and_nothing_else(tmp_path):
    path = store(tmp_path, (NS, SENDER, "P-SEND"), (NS + "/eventhubs/hub1", RECEIVER, "p-recv"),
                 ("/subscriptions/s1/resourceGroups/rg", OWNER, "p-own"),
                 ("/subscriptions/s1/resourceGroups/other", SENDER, "p-elsewhere"),
                 (NS, "acdd72a7-3385-48ef-bd42-f606fba81ae7", "p-reader"))          # Reader: no data access
    got = role_assignments(path)
    assert sorted(a["principal"] for a in got) == ["p-elsewhere", "p-own", "p-reader", "p-recv", "p-send"]
    assert [a["id"] for a in got] == sorted(a["id"] for a in got)
    acls = rbac.desired_acls(got, NS)
    assert {a for a in acls if a[0] == "User:p-send"} == {("User:p-send", "TOPIC", "*", "WRITE"),
                                                          ("User:p-send", "TOPIC", "*", "DESCRIBE")}
    assert {a for a in acls if a[0] == "User:p-recv"} == {
        ("User:p-recv", "TOPIC", "hub1", "READ"), ("User:p-recv", "TOPIC", "hub1", "DESCRIBE"),
        ("User:p-recv", "GROUP", "*", "READ"), ("User:p-recv", "GROUP", "*", "DESCRIBE")}
    assert {a for a in acls if a[0] == "User:p-own"} == {("User:p-own", "TOPIC", "*", "ALL"),
                                                         ("User:p-own", "GROUP", "*", "ALL")}
    assert not [a for a in acls if a[0] in ("User:p-elsewhere", "User:p-reader")]
    assert rbac.covers(NS.upper(), NS) == "*" and rbac.covers(NS + "/eventhubs/h/x", NS) is None


def test_apply_acls_adds_the_missing_and_revokes_what_no_assignment_grants():
    admin = AdminDouble()
    want = {("User:a", "TOPIC", "*", "WRITE")}
    added, removed = rbac.apply_acls(admin, want, rbac.current_acls(admin))
    assert added == [("User:a", "TOPIC", "*", "WRITE")] and removed == []
    assert [(b.principal, b.name, b.operation.name) for b in admin.created] == [("User:a", "*", "WRITE")]
    assert rbac.current_acls(admin) == want
    want = {("User:b", "TOPIC", "*", "WRITE")}
    added, removed = rbac.apply_acls(admin, want, rbac.current_acls(admin))
    assert added == [("User:b", "TOPIC", "*", "WRITE")] and removed == [("User:a", "TOPIC", "*", "WRITE")]
    assert [(f.principal, f.operation.name) for f in admin.deleted] == [("User:a", "WRITE")]
    assert rbac.current_acls(admin) == want
    assert rbac.apply_acls(admin, want, rbac.current_acls(admin)) == ([], [])      # in step: nothing sent


def test_the_sync_follows_the_assignments_arm_holds(tmp_path):
    admin = AdminDouble()
    path = store(tmp_path, (NS, SENDER, "p-send"))
    assert rbac.sync_once(admin, path, NS) == ([("User:p-send", "TOPIC", "*", "DESCRIBE"),
                                                ("User:p-send", "TOPIC", "*", "WRITE")], [])
    path = store(tmp_path, (NS, RECEIVER, "p-recv"))                   # the sender's assignment deleted
    added, removed = rbac.sync_once(admin, path, NS)
    assert {a[0] for a in added} == {"User:p-recv"} and {a[0] for a in removed} == {"User:p-send"}
    assert {a[0] for a in rbac.current_acls(admin)} == {"User:p-recv"}


@pytest.mark.parametrize("call, arg", [("create_acls", []), ("create_acls", [("User:a", "TOPIC", "*", "WRITE")]),
                                       ("create_acls", "twice"), ("delete_acls", []), ("delete_acls", ["x"]),
                                       ("describe_acls", "x")])
def test_the_admin_double_refuses_what_the_real_client_refuses(call, arg):
    """The real AdminClient refuses these before it sends anything (its broker address is a closed loopback port)."""
    import logging

    from confluent_kafka.admin import AdminClient

    if arg == "twice":
        b = rbac._binding(("User:a", "TOPIC", "*", "WRITE"))
        arg = [b, b]
    real = AdminClient({"bootstrap.servers": "127.0.0.1:1", "logger": logging.getLogger("admin-contract")})
    refusals = []
    for client in (real, AdminDouble()):
        with pytest.raises((TypeError, ValueError)) as info:
            getattr(client, call)(arg, request_timeout=1)
        refusals.append((type(info.value), str(info.value)))
    assert refusals[0] == refusals[1]


def test_the_dataflow_authenticates_as_its_endpoint_says():
    host = "ehns.servicebus.windows.net"
    assert kafka_auth({"authentication": {"method": "SystemAssignedManagedIdentity",
                                          "systemAssignedManagedIdentitySettings": {}}}, host) == \
        KafkaAuth("system", scope=f"https://{host}/.default")
    assert kafka_auth({"authentication": {"method": "SystemAssignedManagedIdentity",
                                          "systemAssignedManagedIdentitySettings": {"audience": "https://x/"}}},
                      host).scope == "https://x/.default"
    ua = kafka_auth({"authentication": {"method": "UserAssignedManagedIdentity", "userAssignedManagedIdentitySettings": {
        "clientId": "ABC", "tenantId": TENANT}}}, host)
    assert ua == KafkaAuth("user", scope=f"https://{host}/.default", client_id="abc", tenant_id=TENANT)
    assert kafka_auth({"authentication": {"method": "Sasl", "saslSettings": {"saslType": "Plain",
                                                                             "secretRef": "s"}}}, host).method == "connection_string"
    with pytest.raises(MappingError, match="clientId"):
        kafka_auth({"authentication": {"method": "UserAssignedManagedIdentity",
                                       "userAssignedManagedIdentitySettings": {}}}, host)
    with pytest.raises(MappingError, match="X509Certificate"):
        kafka_auth({"authentication": {"method": "X509Certificate"}}, host)


def test_the_operators_receiver_assignment_is_stable_and_names_role_and_scope():
    r = access.receiver_record("s1", NS, "op-1")
    assert r == access.receiver_record("s1", NS, "op-1") != access.receiver_record("s1", NS, "op-2")
    assert r["id"].startswith(NS + "/providers/Microsoft.Authorization/roleAssignments/")
    assert access.role_of(r["body"]) == RECEIVER and access.scope_of(r["id"]) == NS
    assert r["body"]["properties"]["principalId"] == "op-1"
    assert access.missing_text(RECEIVER, NS, "the operator") == f"the operator needs Azure Event Hubs Data Receiver on {NS}"


def test_the_operator_is_the_oid_of_its_token():
    class Cred:
        def __init__(self, claims):
            self.claims = claims

        def get_token(self, scope):
            return type("T", (), {"token": jwt.encode(self.claims, "k" * 32, algorithm="HS256")})()

    class Arm:
        url = "https://management.azure.com"

        def __init__(self, claims):
            self.c = Cred(claims)

        def cred(self):
            return self.c

    assert access.operator(Arm({"oid": "o1", "idtyp": "app", "appid": "a"})) == \
        {"principal": "o1", "type": "ServicePrincipal", "name": "a"}
    assert access.operator(Arm({"oid": "o2", "upn": "me@x", "scp": "user_impersonation"}))["type"] == "User"
    assert "no oid" in access.operator(Arm({"appid": "a"}))["error"]


def test_the_egress_dataflow_gets_the_identity_file_or_the_connection_string_as_the_site_says(tmp_path):
    from layernet.site import load_site
    from layernet.lab.telemetry_services import identity_path, services

    lab = load_site(__import__("pathlib").Path(__file__).resolve().parents[2] / "params" / "lab.yaml")
    mi = {s.name: s for s in services(lab, tmp_path)}
    eh = mi["level4/dataflow"]
    assert eh.eventhubs and not eh.needs_connection_string
    assert eh.argv[eh.argv.index("--identity") + 1] == str(identity_path(tmp_path, "level4"))
    assert not mi["level3/dataflow"].eventhubs and "--identity" not in mi["level3/dataflow"].argv
    cs = {s.name: s for s in services(lab.model_copy(update={"telemetry": lab.telemetry.model_copy(update={
        "eventhubs": lab.telemetry.eventhubs.model_copy(update={"auth": "connection_string"})})}), tmp_path)}
    assert cs["level4/dataflow"].eventhubs and cs["level4/dataflow"].needs_connection_string


def test_the_loopback_harness_sends_to_event_hubs_with_the_connection_string():
    from layernet.telemetry.loopback import loopback_site
    from layernet.lab.telemetry_services import services

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    site = loopback_site(root / "params" / "lab.yaml")       # the sample says managed_identity
    assert site.telemetry.eventhubs.auth == "connection_string"
    assert {s.name: s for s in services(site, root)}["level4/dataflow"].needs_connection_string
