"""Stage 02 on a real site with the az executor: exact command lines and their order per level, skips when a
level is already Connected with the same settings, retries, drift, node preflight, and no secret on any argv.
The `az`, `kubectl` and `helm` on PATH are the fakes of tests/doubles (they record argv, answer canned JSON)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from fakecli import FakeCli
from sites import example_site

from layernet.azure import arc as az_arc  # noqa: E402
from layernet.azure.runner import Runner, secret_in  # noqa: E402
from layernet.errors import DriftError, InputError, StageFailed  # noqa: E402
from layernet.site.arc import DEFAULT_PROVIDERS  # noqa: E402
from layernet.stages import arc  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"
OID = "51dfe1e8-70c6-4de5-a08e-e18aff23d815"
CLUSTERS = {"level4": "aio-plant-l4", "level3": "aio-plant-l3", "level2": "aio-plant-l2"}
MUTATING = ("register", "create", "connect", "enable-features", "update")


def connected(name: str, **over) -> dict:
    props = {"connectivityStatus": "Connected", "provisioningState": "Succeeded", "agentVersion": "1.21.10",
             "oidcIssuerProfile": {"enabled": True}, "securityProfile": {"workloadIdentity": {"enabled": True}},
             "arcAgentProfile": {"agentAutoUpgrade": "Disabled"}}
    props.update(over)
    return {"id": f"/subscriptions/{SUB}/resourceGroups/rg-plant-example/providers/Microsoft.Kubernetes/"
                  f"connectedClusters/{name}", "name": name, "properties": props}


HELM_ON = {"systemDefaultValues": {"clusterconnect-agent": {"enabled": True},
                                   "customLocations": {"enabled": True, "oid": OID}}}
NODES = {"items": [{"metadata": {"name": "node-a"}}]}


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    cfg = tmp_path / "kubeconfig"
    cfg.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    return str(cfg)


@pytest.fixture
def cli(tmp_path, monkeypatch, kubeconfig):
    c = FakeCli(tmp_path, monkeypatch)
    c.on("az", "account", "show", stdout=SUB)
    return c


def fresh(cli: FakeCli, registered=("Microsoft.Kubernetes",), sysctls=("8192", "524288", "100000")):
    for ns in DEFAULT_PROVIDERS:
        cli.on("az", "provider", "show", "-n", ns,
               stdout={"namespace": ns, "registrationState": "Registered" if ns in registered else "NotRegistered"})
    cli.on("az", "group", "exists", stdout="false")
    for name in CLUSTERS.values():
        cli.on("az", "connectedk8s", "show", "-n", name, rc=3,
               stderr=f"(ResourceNotFound) The Resource 'Microsoft.Kubernetes/connectedClusters/{name}' was not found.")
    cli.on("az", "ad", "sp", "show", stdout=OID)
    for ctx in CLUSTERS:
        base = ["--kubeconfig", str(Path(cli.dir).parent / "kubeconfig"), "--context", ctx]
        cli.on("kubectl", *base, "get", "nodes", stdout=NODES)
        cli.on("kubectl", *base, "get", "pods", stdout="pod/web-1\n", times=1)
        cli.on("kubectl", *base, "debug", stdout="\n".join(sysctls))
        cli.on("kubectl", *base, "get", "pods", stdout="pod/web-1\npod/node-debugger-node-a-x7k2p\n")
        cli.on("kubectl", *base, "delete", "pod", stdout="pod deleted")
    # the mutating commands all succeed
    for verb in (["provider", "register"], ["group", "create"], ["connectedk8s", "connect"],
                 ["connectedk8s", "enable-features"], ["connectedk8s", "update"]):
        cli.on("az", *verb, stdout="{}")
    return cli


def mutating(cli: FakeCli) -> list[list[str]]:
    out = []
    for argv in cli.calls("az"):
        if argv[:2] in (["provider", "register"], ["group", "create"]) or (
                argv[0] == "connectedk8s" and argv[1] in ("connect", "enable-features", "update")):
            out.append(["az"] + argv)
    return out


def quiet(_msg: str) -> None:
    pass


def test_plan_of_a_fresh_site_lists_the_exact_commands_in_order(cli, kubeconfig):
    fresh(cli)
    site = example_site()
    p = arc.plan(site, runner=Runner(sleep=lambda s: None))
    rows = [(s.level, s.action, s.skip) for s in p.steps]
    assert rows[0] == ("site", "derive custom locations oid", True)
    providers = [s for s in p.steps if s.action == "register provider"]
    assert [s.target for s in providers] == DEFAULT_PROVIDERS
    assert [s.skip for s in providers] == [ns == "Microsoft.Kubernetes" for ns in DEFAULT_PROVIDERS]
    assert providers[0].detail == "az provider register -n Microsoft.ExtendedLocation"
    group = next(s for s in p.steps if s.action == "create resource group")
    assert group.detail == "az group create -l eastus -g rg-plant-example" and not group.skip
    levels = [(s.level, s.action) for s in p.steps if s.level != "site"]
    assert levels == [(lv, a) for lv in ("level4", "level3", "level2")
                      for a in ("check node settings", "connect cluster", "enable features")]
    connect = {s.level: s.detail for s in p.steps if s.action == "connect cluster"}
    assert shlex.split(connect["level4"]) == [
        "az", "connectedk8s", "connect", "-n", "aio-plant-l4", "-g", "rg-plant-example", "--location", "eastus",
        "--custom-locations-oid", OID, "--onboarding-timeout", "480", "--enable-oidc-issuer",
        "--enable-workload-identity", "--disable-auto-upgrade", "--kube-config", kubeconfig, "--kube-context", "level4"]
    assert "--onboarding-timeout 960" in connect["level2"] and "--kube-context level2" in connect["level2"]
    feats = next(s for s in p.steps if s.action == "enable features" and s.level == "level3")
    assert shlex.split(feats.detail) == [
        "az", "connectedk8s", "enable-features", "-n", "aio-plant-l3", "-g", "rg-plant-example",
        "--custom-locations-oid", OID, "--features", "cluster-connect", "custom-locations",
        "--kube-config", kubeconfig, "--kube-context", "level3"]
    # planning changed nothing in Azure, and the node reader removed its debugger pod
    assert mutating(cli) == []
    deletes = [a for a in cli.calls("kubectl") if "delete" in a]
    assert len(deletes) == 3 and all("node-debugger-node-a-x7k2p" in a for a in deletes)
    assert p.table().shape == (len(p.steps), 6)


def test_apply_runs_exactly_the_planned_changes_and_records_each(cli, tmp_path):
    fresh(cli)
    site = example_site()
    p = arc.plan(site, runner=Runner(sleep=lambda s: None))
    lines: list[str] = []
    rows = arc.apply(p, site, run_dir=tmp_path / "run", runner=Runner(sleep=lambda s: None), progress=lines.append)
    ran = [shlex.join(a) for a in mutating(cli)]
    assert ran == [s.detail for s in p.changes]
    assert len(rows) == len(p.changes) and all(r["ok"] for r in rows)
    assert any("level4: connect cluster aio-plant-l4" in l for l in lines)
    assert "  level4 | {}" in lines          # the command's own output, streamed as it arrives
    rec = tmp_path / "run" / "arc"
    cmds = sorted(rec.glob("*.cmd"))
    connect_files = [f for f in cmds if "connect-cluster" in f.name]
    assert len(connect_files) == 3
    assert connect_files[0].read_text().startswith("az connectedk8s connect -n aio-plant-l4")
    assert connect_files[0].with_suffix(".rc").read_text().startswith("0")
    assert connect_files[0].with_suffix(".out").exists() and connect_files[0].with_suffix(".err").exists()


def test_no_command_carries_a_secret(cli, tmp_path):
    fresh(cli)
    site = example_site()
    p = arc.plan(site, runner=Runner(sleep=lambda s: None))
    arc.apply(p, site, run_dir=tmp_path, runner=Runner(sleep=lambda s: None), progress=quiet)
    calls = cli.calls()
    assert len(calls) > 20
    for argv in calls:
        assert secret_in(argv) is None, argv
        assert not any(a in ("--password", "-p", "--client-secret", "--service-principal") for a in argv), argv
    with pytest.raises(InputError, match="secret on the command line"):
        Runner().run(["az", "login", "--service-principal", "-u", "x", "--password", "hunter2"])
    with pytest.raises(InputError) as info:
        Runner().run(["az", "x", "--connection-string", "Endpoint=sb://a/;SharedAccessKey=abc"])
    assert "abc" not in str(info.value)
    assert [a for a in cli.calls() if "login" in a] == []


def test_a_level_connected_with_the_same_settings_is_skipped(cli):
    for ns in DEFAULT_PROVIDERS:
        cli.on("az", "provider", "show", "-n", ns, stdout={"registrationState": "Registered"})
    cli.on("az", "group", "exists", stdout="true")
    for lv, name in CLUSTERS.items():
        cli.on("az", "connectedk8s", "show", "-n", name, stdout=connected(name))
        cli.on("helm", "get", "values", stdout=HELM_ON)
    site = example_site(arc={"node_preflight": False, "custom_locations_oid": OID})
    p = arc.plan(site, runner=Runner())
    assert p.empty, p.table()
    assert {s.reason for s in p.steps if s.action == "connect cluster"} == {"Connected with the same settings (Succeeded)"}
    assert all(s.skip for s in p.steps)
    rows = arc.apply(p, site, runner=Runner(), progress=quiet)
    assert rows == [] and mutating(cli) == []
    # an OID in the site is used as is: nothing derives it
    assert not [a for a in cli.calls("az") if a[:2] == ["ad", "sp"]]


def test_different_settings_become_an_update_and_missing_features_enable_features(cli):
    for ns in DEFAULT_PROVIDERS:
        cli.on("az", "provider", "show", "-n", ns, stdout={"registrationState": "Registered"})
    cli.on("az", "group", "exists", stdout="true")
    cli.on("az", "connectedk8s", "show", "-n", "aio-plant-l4",
           stdout=connected("aio-plant-l4", arcAgentProfile={"agentAutoUpgrade": "Enabled"}))
    cli.on("az", "connectedk8s", "show", "-n", "aio-plant-l3", stdout=connected("aio-plant-l3"))
    cli.on("az", "connectedk8s", "show", "-n", "aio-plant-l2",
           stdout=connected("aio-plant-l2", connectivityStatus="Offline"))
    cli.on("helm", "get", "values", "azure-arc", "-n", "azure-arc-release", "-o", "json", "--kubeconfig",
           str(Path(cli.dir).parent / "kubeconfig"), "--kube-context", "level4",
           stdout={"systemDefaultValues": {"clusterconnect-agent": {"enabled": True}}})   # level4: no custom locations
    cli.on("helm", "get", "values", stdout=HELM_ON)
    site = example_site(arc={"node_preflight": False, "custom_locations_oid": OID})
    p = arc.plan(site, runner=Runner())
    by = {(s.level, s.action): s for s in p.steps}
    up = by[("level4", "update cluster settings")]
    assert not up.skip and "agentAutoUpgrade 'Enabled' -> 'Disabled'" in up.reason
    assert up.detail.startswith("az connectedk8s update -n aio-plant-l4 -g rg-plant-example --auto-upgrade false")
    assert not by[("level4", "enable features")].skip and "custom-locations" in by[("level4", "enable features")].reason
    assert by[("level3", "connect cluster")].skip and by[("level3", "enable features")].skip
    manual = by[("level2", "reconnect cluster (manual)")]
    assert not manual.skip and manual.reason.startswith("exists but Offline")
    assert manual.detail == ("az connectedk8s delete -n aio-plant-l2 -g rg-plant-example --kube-config "
                             f"{Path(cli.dir).parent / 'kubeconfig'} --kube-context level2 -y")
    with pytest.raises(StageFailed, match="level2: aio-plant-l2 needs the operator; nothing was applied"):
        arc.apply(p, site, runner=Runner(), progress=quiet)
    assert mutating(cli) == []


def test_gateway_and_feature_settings_reach_the_command_line(cli):
    fresh(cli)
    gw = f"/subscriptions/{SUB}/resourceGroups/rg-gw/providers/Microsoft.HybridCompute/gateways/gw1"
    site = example_site(arc={"gateway_resource_id": gw, "oidc_issuer": False, "auto_upgrade": True,
                             "custom_locations_oid": OID, "node_preflight": False})
    p = arc.plan(site, runner=Runner())
    connect = shlex.split(next(s.detail for s in p.steps if s.action == "connect cluster"))
    assert connect[-2:] == ["--gateway-resource-id", gw]
    assert "--enable-oidc-issuer" not in connect and "--disable-auto-upgrade" not in connect
    assert "--enable-workload-identity" in connect


def test_transient_failures_are_retried_and_recorded(cli, tmp_path):
    fresh(cli)
    cli.rules = [r for r in cli.rules if r["match"][:2] != ["connectedk8s", "connect"]]
    cli.on("az", "connectedk8s", "connect", rc=1, times=1,
           stderr="(TooManyRequests) Status code 429: the request was throttled\n")
    cli.on("az", "connectedk8s", "connect", rc=1, times=1, stderr="ConnectionResetError: connection reset by peer\n")
    cli.on("az", "connectedk8s", "connect", stdout="{}")
    site = example_site(arc={"node_preflight": False})
    naps: list[float] = []
    runner = Runner(sleep=naps.append, backoff=2.0)
    p = arc.plan(site, runner=runner)
    rows = arc.apply(p, site, run_dir=tmp_path, runner=runner, progress=quiet)
    first = next(r for r in rows if r["action"] == "connect cluster")
    assert first["attempts"] == 3 and first["retried_for"] == "throttled by ARM (429), connection reset"
    assert naps == [2.0, 4.0]
    rc_file = next(f for f in sorted((tmp_path / "arc").glob("*.rc")) if "level4-connect" in f.name)
    assert "retried for: throttled by ARM (429), connection reset" in rc_file.read_text()


def test_a_pre_onboarding_timeout_is_not_retried_and_names_the_logs(cli, tmp_path):
    fresh(cli)
    cli.rules = [r for r in cli.rules if r["match"][:2] != ["connectedk8s", "connect"]]
    cli.on("az", "connectedk8s", "connect", rc=1,
           stderr="The pre-onboarding diagnostic checks timed out. Please check the logs.\n")
    site = example_site(arc={"node_preflight": False})
    runner = Runner(sleep=lambda s: pytest.fail("must not retry"))
    p = arc.plan(site, runner=runner)
    with pytest.raises(StageFailed) as info:
        arc.apply(p, site, run_dir=tmp_path, runner=runner, progress=quiet)
    msg = str(info.value)
    assert "level4: connect cluster aio-plant-l4 failed (exit 1, 1 attempt(s))" in msg
    assert "~/.azure/pre_onboarding_check_logs/aio-plant-l4-*" in msg
    assert str(tmp_path / "arc") in msg
    # nothing after the failing step ran
    assert [a[2] for a in mutating(cli) if a[1] == "connectedk8s"] == ["connect"]


def test_a_permanent_failure_fails_at_once(cli):
    fresh(cli)
    cli.rules = [r for r in cli.rules if r["match"][:2] != ["group", "create"]]
    cli.on("az", "group", "create", rc=1, stderr="(AuthorizationFailed) The client does not have authorization\n")
    site = example_site(arc={"node_preflight": False})
    runner = Runner(sleep=lambda s: pytest.fail("must not retry"))
    p = arc.plan(site, runner=runner)
    with pytest.raises(StageFailed, match="create resource group rg-plant-example failed .*AuthorizationFailed"):
        arc.apply(p, site, runner=runner, progress=quiet)


def test_apply_refuses_when_the_live_state_drifted(cli):
    fresh(cli)
    site = example_site(arc={"node_preflight": False})
    p = arc.plan(site, runner=Runner())
    cli.rules = [r for r in cli.rules if r["match"][:2] != ["group", "exists"]]
    cli.on("az", "group", "exists", stdout="true")      # someone created the group meanwhile
    with pytest.raises(DriftError, match="live state changed"):
        arc.apply(p, site, runner=Runner(), progress=quiet)
    assert mutating(cli) == []


def test_low_node_settings_block_apply_and_unreadable_ones_become_a_manual_check(cli):
    fresh(cli, sysctls=("128", "524288", "100000"))
    site = example_site()
    p = arc.plan(site, runner=Runner())
    low = [s for s in p.steps if s.action == "raise node settings (manual)"]
    assert len(low) == 3 and "node-a: fs.inotify.max_user_instances=128 (< 8192)" in low[0].reason
    assert "sudo sysctl -w fs.inotify.max_user_instances=8192" in low[0].detail
    with pytest.raises(StageFailed, match="node settings too low; nothing was applied"):
        arc.apply(p, site, runner=Runner(), progress=quiet)
    assert mutating(cli) == []


def test_unreadable_node_settings_are_a_manual_check_row(cli):
    fresh(cli)
    cli.rules = [r for r in cli.rules if "debug" not in r["match"]]
    cli.rules.insert(0, {"tool": "kubectl", "match": [], "stdout": "", "rc": 1, "times": None, "used": 0,
                         "stderr": 'Error from server (Forbidden): pods "node-debugger" is forbidden\n'})
    cli._save()
    site = example_site()
    p = arc.plan(site, runner=Runner())
    manual = [s for s in p.steps if s.action == "check node settings (manual)"]
    assert len(manual) == 3 and all(s.skip for s in manual)
    assert "Forbidden" in manual[0].reason and "fs.file-max>=100000" in manual[0].reason


def test_wrong_subscription_or_no_login_is_an_input_error(tmp_path, monkeypatch, kubeconfig):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "account", "show", stdout="11111111-1111-1111-1111-111111111111")
    with pytest.raises(InputError, match="az account set --subscription 00000000-0000-0000-0000-000000000000"):
        arc.plan(example_site(), runner=Runner())
    cli.rules.clear()
    cli.on("az", "account", "show", rc=1, stderr="Please run 'az login' to setup account.")
    with pytest.raises(InputError, match="run `az login`"):
        arc.plan(example_site(), runner=Runner())
    assert mutating(cli) == []


# ----------------------------------------------------------------------------------------------- the arc section
def _problems(overrides):
    from layernet.site import SiteError, load_site

    with pytest.raises(SiteError) as info:
        load_site(Path(__file__).resolve().parents[2] / "params" / "site-example.yaml", overrides)
    return {p.path: p.expected for p in info.value.problems}


def test_arc_section_errors_name_their_field():
    got = _problems(["arc.onboarding_timeout.level3=5", "arc.custom_locations_oid=not-a-guid",
                     "arc.features=[cluster-connect, cluster-connect]", "arc.providers=[Microsoft.Kubernetes, 'bad name']",
                     "arc.gateway_resource_id=/subscriptions/x/gateways/g", "arc.executor=helm"])
    assert set(got) == {"arc.onboarding_timeout.level3", "arc.custom_locations_oid", "arc.features",
                        "arc.providers", "arc.gateway_resource_id", "arc.executor"}
    assert "greater than or equal to" in got["arc.onboarding_timeout.level3"]
    assert "az ad sp show --id bc313c14-388c-4e7d-a58e-70017303ee3b" in got["arc.custom_locations_oid"]
    assert "each feature once" in got["arc.features"]
    assert "Microsoft.HybridCompute/gateways" in got["arc.gateway_resource_id"]


def test_arc_cross_checks_need_the_whole_site():
    from layernet.site.checks.arc import check
    from layernet.site.checks.doc import Doc

    site = example_site(arc={"onboarding_timeout": {"level4": 480, "level9": 600}})
    problems = check(Doc("x.yaml", site.model_dump(mode="json"), site))
    assert [(p.path, p.value) for p in problems] == [("arc.onboarding_timeout.level9", 600)]
    assert "level4, level3, level2" in problems[0].expected
    raw = {"levels": [{"name": "level4"}, {"name": "level2", "reaches_azure": False}],
           "azure": {"clusters": {}}, "arc": {}}
    assert [p.path for p in check(Doc("x.yaml", raw))] == ["azure.clusters.level4"]


def test_connected_levels_are_not_read_again_by_the_node_preflight(cli):
    fresh(cli)
    cli.rules = [r for r in cli.rules if r["match"][:4] != ["connectedk8s", "show", "-n", "aio-plant-l4"]]
    cli.rules.insert(0, {"tool": "az", "match": ["connectedk8s", "show", "-n", "aio-plant-l4"], "rc": 0,
                         "stdout": json.dumps(connected("aio-plant-l4")), "stderr": "", "times": None, "used": 0})
    cli.on("helm", "get", "values", stdout=HELM_ON)
    cli._save()
    p = arc.plan(example_site(), runner=Runner())
    pre = {s.level: s for s in p.steps if "node settings" in s.action}
    assert pre["level4"].skip and "not read again" in pre["level4"].reason
    assert pre["level3"].reason.startswith("1 node(s) ok")
    assert not [a for a in cli.calls("kubectl") if "level4" in a]
    assert [a for a in cli.calls("kubectl") if "level3" in a and "debug" in a]


def test_helm_is_found_where_connectedk8s_downloads_it(tmp_path, monkeypatch):
    from layernet.azure.arc import helm_binary

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert helm_binary() == "helm"
    for version in ("v3.12.2", "v3.14.0"):
        exe = tmp_path / ".azure" / "helm" / version / "linux-amd64" / "helm"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    assert helm_binary() == str(tmp_path / ".azure/helm/v3.14.0/linux-amd64/helm")


@pytest.mark.parametrize("out", ["-" * 36, "51dfe1e8-70c6-4de5-a08e-e18aff23d81g", "51dfe1e870c64de5a08ee18aff23d815aaaa"])
def test_a_derived_oid_must_be_a_guid(cli, out):
    """az's answer is checked with the site's GUID rule (whole value), not a shape of 36 hex digits and dashes."""
    cli.on("az", "ad", "sp", "show", stdout=out)
    with pytest.raises(StageFailed, match="could not derive the Custom Locations object id"):
        az_arc.AzLive(Runner()).oid()


def test_a_derived_guid_is_taken_as_az_prints_it(cli):
    cli.on("az", "ad", "sp", "show", stdout=OID + "\n")
    assert az_arc.AzLive(Runner()).oid() == OID
