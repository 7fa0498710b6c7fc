"""Section defaults follow the target (layernet.site.defaults): a lab site that has only the network sections gets
the executors the lab runs, a real site the az CLI; and a lab egress level must resolve with the lab's DNS.

Every site here is another plant than params/lab.yaml (tests/doubles/plants.py): four levels named dmz, plant,
area, cell, on 10.20.x.0/24, with the lab's cloud on 203.0.113.0/24.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from arm_double import ArmDouble, StaticToken
from plants import plant_site, write

from layernet.azure.clients import Arm  # noqa: E402
from layernet.site import SiteError, load_site  # noqa: E402
from layernet.site.defaults import LAB_CUSTOM_LOCATIONS_OID, TARGET_DEFAULTS, with_target_defaults  # noqa: E402

LAYERNET = str(Path(sys.executable).parent / "layernet")
SUB = "00000000-0000-0000-0000-000000000000"


def _validate(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, "validate", "--site", str(path), *extra], capture_output=True, text=True,
                          timeout=120)


def test_a_network_only_lab_site_gets_the_lab_executors(tmp_path):
    site = load_site(write(plant_site("lab"), tmp_path))
    assert [lv.name for lv in site.chain] == ["dmz", "plant", "area", "cell"]
    assert (site.arc.executor, site.aio.executor) == ("sdk", "sdk")
    assert site.arc.custom_locations_oid == LAB_CUSTOM_LOCATIONS_OID
    assert site.arc.node_preflight is False and site.arc.timeout("cell") == 120
    assert site.azure.schema_registry_storage == "plschemas"          # named after the lab's prefix
    assert {site.aio.for_level(site, n).storage_account for n in ("dmz", "cell")} == {"plschemas"}


def test_the_same_plant_as_a_real_site_gets_az(tmp_path):
    site = load_site(write(plant_site("kube"), tmp_path))
    assert (site.arc.executor, site.aio.executor) == ("az", "az")
    assert site.arc.custom_locations_oid is None and site.arc.node_preflight is True
    assert site.azure.schema_registry_storage is None


def test_what_the_file_or_p_sets_wins(tmp_path):
    raw = plant_site("lab")
    raw["arc"] = {"executor": "az", "node_preflight": True}
    f = write(raw, tmp_path)
    site = load_site(f, ["aio.executor=arm", "aio.release_tag=v1.2.36", "azure.schema_registry_storage=mine01"])
    assert (site.arc.executor, site.arc.node_preflight, site.aio.executor) == ("az", True, "arm")
    assert site.arc.custom_locations_oid == LAB_CUSTOM_LOCATIONS_OID   # not set: still the lab's
    assert site.azure.schema_registry_storage == "mine01"


def test_defaults_are_one_table_and_idempotent():
    raw = plant_site("lab")
    once = with_target_defaults(raw)
    assert with_target_defaults(once) == once and "arc" not in raw        # the input is not changed
    assert set(TARGET_DEFAULTS) == {"lab", "kube"}
    for section, fields in TARGET_DEFAULTS["lab"].items():
        assert set(fields) <= set(once[section])
    # a missing required section stays missing: the model names it, not one of its fields
    no_azure = {k: v for k, v in raw.items() if k != "azure"}
    with pytest.raises(SiteError) as info:
        from layernet.site import validate_site
        validate_site(no_azure, "x.yaml")
    assert "azure" in [p.path for p in info.value.problems]


def test_the_validate_command_passes_a_network_only_lab_site(tmp_path):
    proc = _validate(write(plant_site("lab", levels=3, names=("edge", "ops", "line"), base=31), tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "edge -> ops -> line, target lab" in proc.stdout


@pytest.fixture
def arm(tmp_path):
    d = ArmDouble(tmp_path)
    yield d, Arm(SUB, StaticToken(), d.url, str(d.ca), extra={"polling_interval": 0})
    d.close()


def test_stage_02_plans_with_the_sdk_on_a_lab_site_without_an_arc_section(tmp_path, arm):
    """Before: the az executor, and "az is not logged in on this jump box"."""
    from layernet.stages import arc

    double, conn = arm
    site = load_site(write(plant_site("lab"), tmp_path))
    p = arc.plan(site, arm=conn)
    assert p.executor == "sdk"
    connects = [s for s in p.changes if s.action.startswith("connect")]
    assert [s.level for s in connects] == ["dmz", "plant", "area", "cell"]
    assert not any(s.detail.startswith("az ") for s in p.steps)


def test_stage_03_resources_on_a_lab_site_without_an_aio_section(tmp_path, arm):
    from layernet.azure import aio_sdk

    _, conn = arm
    site = load_site(write(plant_site("lab"), tmp_path))
    steps = aio_sdk.steps(site, conn, aio_sdk.observe(site, conn))
    targets = [s.target for s in steps]
    assert "plschemas" in targets and any(t == "k3s-cell-ops" for t in targets), targets


# ----------------------------------------------------------------------------------------------- lab DNS (regression 4)
@pytest.mark.parametrize("ups, phrase", [
    (["8.8.8.8"], "is outside it"),
    (["198.51.100.53"], "is outside it"),                       # params/lab.yaml's cloud, not this plant's
    (["203.0.113.10"], "TLS front"),
    (["203.0.113.53", "203.0.113.54"], "the lab runs one internet DNS"),
])
def test_a_lab_egress_dns_upstream_outside_the_cloud_network_is_refused(tmp_path, ups, phrase):
    raw = plant_site("lab")
    raw["levels"][0]["dns_upstream"] = ups
    f = write(raw, tmp_path)
    proc = _validate(f)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{f}: levels[0].dns_upstream[" in proc.stderr and phrase in proc.stderr
    assert "inside lab.cloud_network 203.0.113.0/24, e.g. 203.0.113.53" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_real_sites_resolver_and_address_plan_are_its_own(tmp_path):
    """target kube: any resolver, and networks where the lab's cloud would sit are the plant's to use."""
    raw = plant_site("kube")
    raw["levels"][0]["dns_upstream"] = ["8.8.8.8"]
    raw["admin"] = {"network": "198.51.100.0/24", "jump_box_ip": "198.51.100.9"}
    assert _validate(write(raw, tmp_path)).returncode == 0
    raw["target"] = "lab"
    for lv in raw["levels"]:
        lv.pop("kube_context")
    proc = _validate(write(raw, tmp_path))
    assert proc.returncode == 2 and "lab.cloud_network" in proc.stderr and "admin.network" in proc.stderr
