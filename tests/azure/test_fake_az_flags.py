"""The fake `az` refuses what the real one refuses: for every command the plans use it knows the flags accepted at
the pinned CLI and extension versions (tests/doubles/az_flags.json, with where each list came from) and fails on
an unknown or a deprecated flag. Every command line the stage 02 and 03 plans build passes it."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from fakecli import FLAGS, FakeCli, az_flag_error
from sites import example_site

from layernet.azure import aio as az_aio  # noqa: E402
from layernet.azure import arc as az_arc  # noqa: E402

DATA = json.loads(FLAGS.read_text())


def plan_command_lines() -> list[list[str]]:
    """Every az command line stage 02 and 03 can build (changes and reads), over the site variants that add flags."""
    out: list[list[str]] = [list(az_arc.OID_COMMAND), ["az", "account", "show", "--query", "id", "-o", "tsv"]]
    for site in (example_site(), example_site(arc={"gateway_resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/g/providers/"
                                                   "Microsoft.HybridCompute/gateways/gw", "auto_upgrade": True}),
                 example_site(aio={"schema_registry_role": False, "cli_version": "1.2.0"})):
        for ns in site.arc.providers:
            out += [["az", "provider", "register", "-n", ns], ["az", "provider", "show", "-n", ns, "-o", "json"]]
        rg = site.azure.resource_group
        out += [["az", "group", "create", "-l", site.azure.location, "-g", rg], ["az", "group", "exists", "-n", rg]]
        for t in az_arc.targets(site):
            out += [az_arc.connect_argv(site, t, "oid"), az_arc.update_argv(site, t), az_arc.features_argv(site, t, "oid"),
                    ["az", "connectedk8s", "show", "-n", t.cluster, "-g", rg, "-o", "json"],
                    ["az", "connectedk8s", "delete", "-n", t.cluster, "-g", rg, "--kube-config", "k", "--kube-context",
                     "c", "-y"]]
        for r in az_aio.levels(site):
            i = az_aio.ids(site, r)
            out += [az_aio.storage_argv(site, r), az_aio.container_argv(r), az_aio.registry_argv(site, r, i["storage"]),
                    az_aio.namespace_argv(site, r), az_aio.role_argv("p", i["container"]), az_aio.init_argv(site, r),
                    az_aio.create_argv(site, r, i["registry"], i["namespace"]), az_aio.listener_argv(site, r),
                    ["az", "extension", "add", "--upgrade", "--name", "azure-iot-ops", "--version", "1.2.0"],
                    ["az", "extension", "show", "--name", "azure-iot-ops", "-o", "json"],
                    ["az", "storage", "account", "show", "-n", r.storage_account, "-g", rg, "-o", "json"],
                    ["az", "storage", "container", "exists", "-n", r.container, "--account-name", r.storage_account,
                     "--auth-mode", "login", "-o", "json"],
                    ["az", "iot", "ops", "schema", "registry", "show", "-n", r.registry, "-g", rg, "-o", "json"],
                    ["az", "iot", "ops", "ns", "show", "-n", r.adr_namespace, "-g", rg, "-o", "json"],
                    ["az", "k8s-extension", "list", "--cluster-name", r.cluster, "--cluster-type", "connectedClusters",
                     "-g", rg, "-o", "json"],
                    ["az", "iot", "ops", "show", "-n", r.instance, "-g", rg, "-o", "json"],
                    ["az", "role", "assignment", "list", "--assignee", "p", "--role", az_aio.STORAGE_BLOB_DATA_CONTRIBUTOR,
                     "--scope", i["container"], "-o", "json"],
                    ["az", "resource", "show", "--ids", az_aio.insecure_listener_id(site, r), "--api-version",
                     az_aio.LISTENER_API, "-o", "json"]]
    return out


def test_every_command_line_the_plans_build_is_one_the_pinned_clis_accept():
    lines = plan_command_lines()
    known = {" ".join(a[1:1 + len(c.split())]) for a in lines for c in DATA["commands"]
             if a[1:1 + len(c.split())] == c.split()}
    assert len(known) >= 25                       # the data covers the commands, so each line was checked
    assert [(shlex.join(a), az_flag_error(a[1:])) for a in lines if az_flag_error(a[1:])] == []


def test_every_command_s_flags_name_their_source():
    for cmd, spec in DATA["commands"].items():
        src = DATA["sources"][spec["from"]]
        assert src["source"] and spec["flags"], cmd
    assert DATA["sources"]["azure-iot-ops"]["version"] == "1.8.0a1"


@pytest.mark.parametrize("args, words", [
    (["storage", "account", "create", "-n", "sa", "-g", "rg", "--hierarchical-namespace", "true"],
     "--hierarchical-namespace is deprecated"),
    (["iot", "ops", "create", "-g", "rg", "--cluster", "c", "--broker-listener-type", "LoadBalancer"],
     "--broker-listener-type is deprecated in azure-iot-ops 1.8.0a1"),
    (["iot", "ops", "schema", "registry", "create", "-g", "rg", "-n", "sr", "--storage-account", "x"],
     "unrecognized arguments: --storage-account (azure-iot-ops 1.8.0a1)"),
    (["connectedk8s", "connect", "-n", "c", "-g", "rg", "--enable-gateway"], "unrecognized arguments: --enable-gateway"),
    (["role", "assignment", "create", "--assignee-object-id=p", "--principal", "x"], "unrecognized arguments: --principal"),
])
def test_an_unknown_or_deprecated_flag_is_refused(args, words):
    assert words in (az_flag_error(args) or "")


def test_the_fake_binary_exits_2_like_az_before_any_canned_answer(tmp_path, monkeypatch):
    cli = FakeCli(tmp_path, monkeypatch)
    cli.on("az", "storage", "account", "create", stdout="{}")
    ok = subprocess.run(["az", "storage", "account", "create", "-n", "sa", "-g", "rg", "--hns", "true"],
                        capture_output=True, text=True)
    assert ok.returncode == 0
    bad = subprocess.run(["az", "storage", "account", "create", "-n", "sa", "-g", "rg", "--hierarchical-namespace", "true"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "ERROR: az storage account create: --hierarchical-namespace is deprecated" in bad.stderr
    # commands outside the plans keep the canned behaviour
    cli.on("az", "version", stdout="{}")
    assert subprocess.run(["az", "version", "--anything"], capture_output=True, text=True).returncode == 0
