"""Image sources: references, the static check against the allow list, the air-gap import plan, validation."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layernet import images
from layernet.allowlist import effective_allowlist
from layernet.errors import InputError
from layernet.images import DEFAULTS, ImageRef, import_plan, level_images, parse_ref, registry_hosts, render_import
from layernet.render import render_site
from layernet.site import Site, SiteError, load_site
from layernet.site.images import check, require

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "params" / "lab.yaml"
EXAMPLE = ROOT / "params" / "site-example.yaml"
LAYERNET = shutil.which("layernet", path=str(Path(sys.executable).parent)) or str(Path(sys.executable).parent / "layernet")
HUB_ENVOY = "envoyproxy/envoy:v1.40.0"
HUB_HOSTS = ["registry-1.docker.io", "auth.docker.io", "production.cloudflare.docker.com",
             "production.cloudfront.docker.com",
             "docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com"]


def raw_lab() -> dict:
    return yaml.safe_load(LAB.read_text())


def site_of(raw: dict) -> Site:
    """A model-valid site, without the cross-checks (so the check under test sees what validation would)."""
    return Site.model_validate(raw)


def with_images(raw: dict, **section) -> dict:
    raw = copy.deepcopy(raw)
    raw["images"] = {**(raw.get("images") or {}), **section}
    return raw


def with_extra_hosts(raw: dict, *hosts) -> dict:
    raw = copy.deepcopy(raw)
    raw["allowlist"]["extra_hosts"] = list(raw["allowlist"].get("extra_hosts") or []) + list(hosts)
    return raw


# ----------------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("text, registry, port, repository, tag", [
    ("mcr.microsoft.com/oss/v2/envoyproxy/envoy:v1.34.10", "mcr.microsoft.com", None, "oss/v2/envoyproxy/envoy", "v1.34.10"),
    ("python:3.12-slim", "docker.io", None, "library/python", "3.12-slim"),
    ("envoyproxy/envoy:v1.40.0", "docker.io", None, "envoyproxy/envoy", "v1.40.0"),
    ("docker.io/python:3.12", "docker.io", None, "library/python", "3.12"),
    ("index.docker.io/envoyproxy/envoy:v1.40.0", "docker.io", None, "envoyproxy/envoy", "v1.40.0"),
    ("Registry.Plant.Example:5000/mirror/envoy:v1", "registry.plant.example", 5000, "mirror/envoy", "v1"),
    ("plantacr.azurecr.io/envoy@sha256:" + "a" * 64, "plantacr.azurecr.io", None, "envoy", None),
])
def test_parse_good_references(text, registry, port, repository, tag):
    ref = parse_ref(text)
    assert (ref.registry, ref.port, ref.repository, ref.tag) == (registry, port, repository, tag)
    assert ref.pull_port == (port or 443)


@pytest.mark.parametrize("text, why", [
    ("envoyproxy/envoy", "pinned tag or digest"),
    ("mcr.microsoft.com/oss/v2/envoyproxy/envoy:latest", "instead of 'latest'"),
    ("https://mcr.microsoft.com/x:1", "no scheme"),
    ("mcr.microsoft.com/Envoy:v1", "lower-case"),
    ("localhost:5000/envoy:v1", "fully qualified registry host"),
    ("registry.plant.example:99999/envoy:v1", "registry port"),
    ("mcr.microsoft.com/envoy@sha256:xyz", "digest"),
    ("mcr.microsoft.com/envoy:v 1", "no spaces"),
    ("", "a text such as"),
])
def test_parse_bad_references(text, why):
    with pytest.raises(ValueError) as info:
        parse_ref(text)
    assert why in str(info.value)


def test_registry_hosts_include_the_data_endpoints():
    assert registry_hosts(parse_ref(DEFAULTS["public"]["envoy"])) == ["mcr.microsoft.com", "*.data.mcr.microsoft.com"]
    assert registry_hosts(parse_ref(HUB_ENVOY)) == HUB_HOSTS
    assert registry_hosts(parse_ref("ghcr.io/org/img:1")) == ["ghcr.io", "pkg-containers.githubusercontent.com"]
    assert registry_hosts(parse_ref("plantacr.azurecr.io/envoy:1")) == ["plantacr.azurecr.io", "*.blob.core.windows.net"]
    assert registry_hosts(parse_ref("registry.plant.example/envoy:1")) == ["registry.plant.example"]


def test_site_registry_hosts_replace_the_built_in_list():
    site = site_of(with_images(raw_lab(), registry_hosts={"plantacr.azurecr.io": ["plantacr.eastus.data.azurecr.io"]}))
    assert registry_hosts(parse_ref("plantacr.azurecr.io/envoy:1"), site) == [
        "plantacr.azurecr.io", "plantacr.eastus.data.azurecr.io"]


# ----------------------------------------------------------------------------------------------- defaults
def test_defaults_come_from_mcr_and_pass_for_lab_and_example():
    for path in (LAB, EXAMPLE):
        site = load_site(path)
        assert check(site, str(path)) == []
        refs = {li.image for li in level_images(site)}
        assert refs == {DEFAULTS["public"]["envoy"], DEFAULTS["public"]["probe"]}
        assert all(parse_ref(r).registry == "mcr.microsoft.com" for r in refs)


def test_which_level_runs_which_image():
    site = load_site(LAB)
    assert [(li.level, li.role) for li in level_images(site)] == [
        ("level4", "envoy"), ("level4", "probe"), ("level3", "envoy"), ("level3", "probe"), ("level2", "probe")]


def test_china_defaults_use_the_mirror_its_allow_list_has():
    raw = raw_lab()
    raw["azure"].update(cloud="china", location="chinaeast2")
    site = site_of(raw)
    assert site.images.reference("envoy", "china").startswith("mcr.azk8s.cn/")
    assert check(site) == []
    # the public default would not be reachable there
    assert check(site_of(with_images(raw, envoy=DEFAULTS["public"]["envoy"])))


# ----------------------------------------------------------------------------------------------- the check
def test_docker_hub_envoy_fails_on_every_proxy_level_naming_level_image_and_hosts():
    problems = check(site_of(with_images(raw_lab(), envoy=HUB_ENVOY)), "lab.yaml")
    assert [p.path for p in problems] == ["images.envoy", "images.envoy"]
    for p, level in zip(problems, ["level4", "level3"]):
        assert p.file == "lab.yaml" and p.value == HUB_ENVOY
        assert f"an image {level} can fetch" in p.expected
        assert ", ".join(HUB_HOSTS) in p.expected
        assert f"images.mode.{level}: import" in p.expected


def test_probe_image_is_checked_on_every_level():
    problems = check(site_of(with_images(raw_lab(), probe="python:3.12-slim")))
    assert [p.path for p in problems] == ["images.probe"] * 3
    assert [p.expected.split(" can fetch")[0] for p in problems] == [
        "an image level4", "an image level3", "an image level2"]


def test_allowing_the_hosts_makes_it_pass_and_each_missing_host_is_named():
    raw = with_images(raw_lab(), envoy=HUB_ENVOY)
    assert check(site_of(with_extra_hosts(raw, *HUB_HOSTS))) == []
    problems = check(site_of(with_extra_hosts(raw, *HUB_HOSTS[:2])))
    assert problems and all("reach production.cloudflare.docker.com, production.cloudfront.docker.com, docker-images-prod."
                            in p.expected for p in problems)
    assert all("registry-1.docker.io" not in p.expected for p in problems)


def test_plant_mirror_in_extra_hosts_passes():
    raw = with_images(raw_lab(), envoy="registry.plant.example/envoyproxy/envoy:v1.34.10",
                      probe="registry.plant.example/python:3.12")
    assert check(site_of(raw))
    assert check(site_of(with_extra_hosts(raw, {"host": "registry.plant.example", "ports": [443],
                                                 "purpose": "plant registry mirror"}))) == []


def test_registry_on_a_port_the_proxies_do_not_carry():
    raw = with_extra_hosts(with_images(raw_lab(), probe="registry.plant.example:5000/python:3.12"),
                           {"host": "registry.plant.example", "ports": [5000]})
    problems = check(site_of(raw))
    below = [p for p in problems if "level4" not in p.expected.split(":")[0]]
    assert below and all("not the registry's port 5000; use a registry on port 443" in p.expected for p in below)


def test_data_endpoints_must_be_reachable_too():
    raw = copy.deepcopy(raw_lab())
    raw["allowlist"]["drop_hosts"] = ["*.data.mcr.microsoft.com"]
    problems = check(site_of(raw))
    # only the data endpoints are missing: the registry host itself is still allowed
    assert len(problems) == 5 and all("does not let it reach *.data.mcr.microsoft.com on port 443" in p.expected
                                      for p in problems)
    # a narrower entry the site chose (like the Arc gateway group's regional one) counts
    assert check(site_of(with_extra_hosts(raw, "eastus.data.mcr.microsoft.com"))) == []


def test_import_mode_skips_the_pull_check_for_that_level_only():
    raw = with_images(raw_lab(), envoy=HUB_ENVOY, mode={"level3": "import"})
    problems = check(site_of(raw))
    assert len(problems) == 1 and "an image level4 can fetch" in problems[0].expected
    assert check(site_of(with_images(raw, default_mode="import"))) == []


def test_level_that_reaches_nothing_must_import():
    raw = raw_lab()
    raw["levels"][2].update(reaches_azure=False, dns_override=False)
    problems = check(site_of(raw))
    assert len(problems) == 1 and problems[0].path == "images.probe"
    assert "level2 reaches nothing outside the plant (reaches_azure: false)" in problems[0].expected
    assert problems[0].expected.endswith("carry the image: images.mode.level2: import")
    assert "Allow those hosts" not in problems[0].expected
    assert check(site_of(with_images(raw, mode={"level2": "import"}))) == []


def test_section_mistakes_are_reported_by_field():
    problems = check(site_of(with_images(raw_lab(), envoy="envoyproxy/envoy", mode={"level9": "import"},
                                         registry_hosts={"r.example.com": ["https://x.example.com"]})))
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {"images.envoy", "images.mode.level9", "images.registry_hosts.r.example.com[0]"}
    assert "pinned tag or digest" in by_path["images.envoy"].expected
    assert "names a level (level4, level3, level2)" in by_path["images.mode.level9"].expected


def test_check_uses_the_given_allow_list():
    site = site_of(with_images(raw_lab(), envoy=HUB_ENVOY))
    wide = effective_allowlist(site_of(with_extra_hosts(raw_lab(), *HUB_HOSTS)))
    assert check(site, allowlist=wide) == []
    assert check(site)


def test_image_rows_for_reports():
    rows = images.image_rows(site_of(with_images(raw_lab(), envoy=HUB_ENVOY, mode={"level3": "import"})))
    by = {(r["level"], r["role"]): r for r in rows}
    assert by[("level4", "envoy")]["ok"] is False and "registry-1.docker.io" in by[("level4", "envoy")]["note"]
    assert by[("level3", "envoy")]["ok"] is True and by[("level3", "envoy")]["mode"] == "import"
    assert by[("level2", "probe")]["ok"] is True and by[("level2", "probe")]["hosts"] == "mcr.microsoft.com, *.data.mcr.microsoft.com"


# ----------------------------------------------------------------------------------------------- validation
def test_load_site_rejects_an_image_outside_the_allow_list():
    with pytest.raises(SiteError) as info:
        load_site(LAB, [f"images.envoy={HUB_ENVOY}"])
    text = str(info.value)
    assert text.startswith(f"2 problem(s) in site file {LAB}:")
    assert f"images.envoy: got '{HUB_ENVOY}'; an image level4 can fetch" in text
    assert "registry-1.docker.io" in text
    assert load_site(LAB, [f"images.envoy={HUB_ENVOY}", "images.default_mode=import"]).images.default_mode == "import"


def test_layernet_validate_exits_2_naming_level_image_and_host():
    proc = subprocess.run([LAYERNET, "validate", "--site", str(LAB), "-p", "images.probe=python:3.12-slim"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "images.probe" in l]
    assert len(lines) == 3
    assert all("got 'python:3.12-slim'" in l and "auth.docker.io" in l for l in lines)
    assert any("an image level2 can fetch" in l for l in lines)
    ok = subprocess.run([LAYERNET, "validate", "--site", str(LAB)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_require_raises_an_input_error():
    with pytest.raises(InputError) as info:
        require(site_of(with_images(raw_lab(), envoy=HUB_ENVOY)), "lab.yaml")
    assert info.value.exit_code == 2 and "lab.yaml: images.envoy" in str(info.value)
    require(load_site(LAB))


# ----------------------------------------------------------------------------------------------- air gap
def test_import_plan_lists_archives_and_exact_commands_per_node():
    site = site_of(with_images(raw_lab(), mode={"level3": "import", "level2": "import"}, archive_dir="/srv/images/"))
    steps = import_plan(site)
    assert [(s.level, s.node, s.role) for s in steps] == [
        ("level3", "192.168.103.10", "envoy"), ("level3", "192.168.103.10", "probe"), ("level2", "192.168.102.10", "probe")]
    probe = steps[1]
    assert probe.archive == "mcr.microsoft.com_azurelinux_base_python_3.12.tar"
    assert probe.path == "/srv/images/mcr.microsoft.com_azurelinux_base_python_3.12.tar"
    assert probe.command == "sudo k3s ctr images import /srv/images/mcr.microsoft.com_azurelinux_base_python_3.12.tar"
    assert import_plan(site, "level4") == []


def test_render_import_sheet():
    site = site_of(with_images(raw_lab(), mode={"level3": "import"}, platform="linux/arm64"))
    text = render_import(site, "level3")
    envoy = DEFAULTS["public"]["envoy"]
    archive = images.archive_name(envoy)
    assert f"docker pull --platform linux/arm64 {envoy}\n" in text
    assert f"docker save -o {archive} {envoy}\n" in text
    assert "node 192.168.103.10 (level3)" in text
    assert f"sudo k3s ctr images import /var/lib/layernet/images/{archive}\n" in text
    assert f"| {archive} | {envoy} | envoy |" in text
    assert render_import(site, "level3") == text          # deterministic
    assert images.render_import_all(site) == text
    assert images.render_import_all(load_site(LAB)) == ""


def test_render_site_writes_the_sheet_for_importing_levels_only():
    site = site_of(with_images(raw_lab(), mode={"level2": "import"}))
    arts = render_site(site, effective_allowlist(site), "kube")
    sheets = [a for a in arts if a.kind == "images"]
    assert [(a.level, a.name) for a in sheets] == [("level2", "images-import.md")]
    assert sheets[0].content == render_import(site, "level2")
    assert not [a for a in render_site(site, effective_allowlist(site), "lab") if a.kind == "images"]


def test_archive_names_are_distinct_file_names():
    names = {images.archive_name(r) for r in ("a.example.com/x:1", "a.example.com/x:2", "a.example.com/x/y:1",
                                              "a.example.com/x@sha256:" + "b" * 64)}
    assert len(names) == 4 and all("/" not in n and ":" not in n and n.endswith(".tar") for n in names)


def test_image_ref_is_a_value():
    assert parse_ref("python:3.12") == ImageRef("python:3.12", "docker.io", None, "library/python", "3.12", None)


def test_kube_probe_job_uses_the_site_image_and_never_pulls_on_importing_levels():
    from layernet.targets.kube import KubeTarget

    site = site_of(with_images(raw_lab(), probe="registry.plant.example/python:3.12", mode={"level2": "import"}))
    t = KubeTarget(site)
    pods = {lv: t.probe_job(lv, f"layernet-probe-{lv}-x")[1]["spec"]["template"]["spec"]["containers"][0]
            for lv in ("level3", "level2")}
    assert {c["image"] for c in pods.values()} == {"registry.plant.example/python:3.12"}
    assert pods["level3"]["imagePullPolicy"] == "IfNotPresent" and pods["level2"]["imagePullPolicy"] == "Never"
    assert pods["level2"]["command"][0] == "python3"


def test_advice_names_the_registry_of_the_sites_cloud():
    raw = raw_lab()
    raw["azure"].update(cloud="china", location="chinaeast2")
    problems = check(site_of(with_images(raw, envoy=HUB_ENVOY)))
    assert problems and all("use a registry the list allows (mcr.azk8s.cn," in p.expected for p in problems)
