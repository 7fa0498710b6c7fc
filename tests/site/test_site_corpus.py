"""The site file: the broken corpus, valid files, -p overrides, the error text and `layernet validate`."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layernet.site import Problem, Site, SiteError, load_site, validate_site

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).parent / "broken"
EXPECTED: dict[str, list[list[str]]] = yaml.safe_load((BROKEN / "expected.yaml").read_text())
LAB = ROOT / "params" / "lab.yaml"
EXAMPLE = ROOT / "params" / "site-example.yaml"
LAYERNET = shutil.which("layernet", path=str(Path(sys.executable).parent)) or str(Path(sys.executable).parent / "layernet")


def problems_of(path: Path, overrides=None) -> list[Problem]:
    with pytest.raises(SiteError) as info:
        load_site(path, overrides)
    return info.value.problems


# ----------------------------------------------------------------------------------------------- corpus
def test_corpus_is_complete():
    files = sorted(p.name for p in BROKEN.glob("*.yaml") if p.name != "expected.yaml")
    assert files == sorted(EXPECTED), "every broken file needs an entry in expected.yaml and vice versa"
    assert len(files) >= 24


@pytest.mark.parametrize("fname", sorted(EXPECTED))
def test_broken_site(fname):
    path = BROKEN / fname
    problems = problems_of(path)
    got = [(p.path, p.expected) for p in problems]
    # every expected problem is reported with its exact path and key phrase ...
    for want_path, phrase in EXPECTED[fname]:
        assert any(p == want_path and phrase.lower() in e.lower() for p, e in got), (
            f"{fname}: no problem at {want_path!r} containing {phrase!r}; got {got}")
    # ... and nothing else (no noise, no duplicates)
    assert sorted(p for p, _ in got) == sorted(p for p, _ in EXPECTED[fname]), got
    for p in problems:
        assert p.file == str(path)


def test_broken_file_is_derived_from_a_valid_base():
    """The corpus files differ from a valid site by their one break: the untouched base loads."""
    base = (BROKEN / "host-scheme.yaml").read_text().replace('extra_hosts: ["https://x.y"]', "extra_hosts: []")
    site = validate_site(yaml.safe_load(base), "base")
    assert [lv.name for lv in site.chain] == ["level4", "level3", "level2"]


def test_multi_error_lists_every_problem_at_once():
    problems = problems_of(BROKEN / "multi-error.yaml")
    assert len(problems) == 5
    assert {p.path for p in problems} == {
        "colour", "levels[1].node_ip", "levels[2].dns_override", "azure.location", "allowlist.extra_hosts[0]"}
    text = str(SiteError(problems))
    assert text.startswith(f"5 problem(s) in site file {BROKEN / 'multi-error.yaml'}:")
    assert text.count("\n  - ") == 5


def test_problems_carry_the_bad_value():
    by_path = {p.path: p.value for p in problems_of(BROKEN / "multi-error.yaml")}
    assert by_path["levels[1].node_ip"] == "192.168.113.10"
    assert by_path["azure.location"] == "atlantis"
    assert by_path["allowlist.extra_hosts[0]"] == "graph.microsoft.com/"
    assert by_path["colour"] == "blue"
    assert by_path["levels[2].dns_override"] is False


def test_missing_file():
    problems = problems_of(ROOT / "params" / "no-such-site.yaml")
    assert problems[0].path == "(file)"
    assert "must exist" in problems[0].expected


def test_missing_levels_still_reports_the_rest():
    raw = yaml.safe_load(LAB.read_text())
    del raw["levels"]
    raw["azure"]["location"] = "atlantis"
    with pytest.raises(SiteError) as info:
        validate_site(raw, "x.yaml")
    paths = {p.path for p in info.value.problems}
    assert {"levels", "azure.location"} <= paths


def test_subscription_must_be_a_real_guid():
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["azure"]["subscription_id"] = "-" * 36
    with pytest.raises(SiteError) as info:
        validate_site(raw, "x.yaml")
    assert [(p.path, p.value) for p in info.value.problems] == [("azure.subscription_id", "-" * 36)]


# ----------------------------------------------------------------------------------------------- valid files
@pytest.mark.parametrize("path", [LAB, EXAMPLE], ids=["lab", "site-example"])
def test_valid_files_load(path):
    site = load_site(path)
    assert isinstance(site, Site)
    assert [lv.name for lv in site.chain] == ["level4", "level3", "level2"]
    assert [str(lv.node_ip) for lv in site.chain] == ["192.168.104.10", "192.168.103.10", "192.168.102.10"]
    assert str(site.admin.jump_box_ip) == "192.168.0.50"
    assert site.egress_level == "level4"


def test_site_example_is_a_kube_template():
    site = load_site(EXAMPLE)
    assert site.target == "kube"
    assert [lv.kube_context for lv in site.chain] == ["level4", "level3", "level2"]
    assert site.azure.subscription_id == "00000000-0000-0000-0000-000000000000"
    assert [str(ip) for ip in site.egress.dns_upstream] == ["192.168.104.2"]
    text = EXAMPLE.read_text()
    # every field of the model appears (commented or set) in the template
    for field in list(Site.model_fields) + ["kube_context", "dns_upstream", "pod_cidr", "service_cidr",
                                             "reaches_azure", "subscription_id", "tenant_id", "drop_hosts"]:
        if field == "lab":  # lab-only settings live in params/lab.yaml
            continue
        assert f"{field}:" in text, field


# ----------------------------------------------------------------------------------------------- overrides
def test_override_by_index():
    site = load_site(LAB, ["levels[1].node_ip=192.168.103.20"])
    assert str(site.level("level3").node_ip) == "192.168.103.20"


def test_override_by_level_name():
    site = load_site(LAB, ["levels.level3.proxy=false", "levels.level3.reaches_azure=false",
                           "levels.level2.reaches_azure=false", "levels.level2.dns_override=false",
                           # levels that reach nothing carry their images (layernet.images)
                           "images.mode.level3=import", "images.mode.level2=import"])
    assert site.level("level3").proxy is False


def test_override_by_level_name_is_validated():
    problems = problems_of(LAB, ["levels.level3.proxy=false"])
    assert [(p.path, p.value) for p in problems] == [("levels[1].proxy", False)]
    assert "level3 must run a proxy" in problems[0].expected


def test_override_location_and_dict_form():
    assert load_site(LAB, ["azure.location=westeurope"]).azure.location == "westeurope"
    assert load_site(LAB, {"azure.location": "westeurope"}).azure.location == "westeurope"


def test_override_value_is_yaml():
    site = load_site(LAB, ["levels[1].dns_upstream=[192.0.2.53, 192.0.2.54]", "description="])
    assert [str(ip) for ip in site.level("level3").dns_upstream] == ["192.0.2.53", "192.0.2.54"]
    assert site.description == ""


def test_override_applies_before_validation():
    problems = problems_of(LAB, ["levels[1].node_ip=192.168.113.10"])
    assert [(p.path, p.value) for p in problems] == [("levels[1].node_ip", "192.168.113.10")]
    assert "inside the level's network 192.168.103.0/24" in problems[0].expected


@pytest.mark.parametrize("override, path, phrase", [
    ("azure.location", "azure.location", "must look like key.path=value"),
    ("=westeurope", "(override)", "needs a field path"),
    ("levels[7].node_ip=192.168.103.20", "levels[7].node_ip", "index [7] does not exist"),
    ("levels.level9.proxy=true", "levels.level9.proxy", "no list item named 'level9'"),
    ("name.first=x", "name.first", "does not lead to a settable field"),
    ("description=[unclosed", "description", "a YAML value after '='"),
])
def test_bad_override_syntax(override, path, phrase):
    problems = problems_of(LAB, [override])
    assert [p.path for p in problems] == [path]
    assert phrase in problems[0].expected


def test_override_of_unknown_key_is_rejected():
    problems = problems_of(LAB, ["azure.regoin=westeurope"])
    assert [p.path for p in problems] == ["azure.regoin"]
    assert "unknown key" in problems[0].expected


def test_overrides_leave_the_file_alone():
    before = LAB.read_text()
    load_site(LAB, ["azure.location=westeurope"])
    assert LAB.read_text() == before


# ----------------------------------------------------------------------------------------------- the message
def test_error_message_names_file_path_value_and_expectation():
    path = BROKEN / "node-ip-outside-network.yaml"
    with pytest.raises(SiteError) as info:
        load_site(path)
    msg = str(info.value)
    assert f"1 problem(s) in site file {path}:" in msg
    assert (f"{path}: levels[1].node_ip: got '192.168.113.10'; "
            "an address inside the level's network 192.168.103.0/24") in msg


def test_error_message_for_a_missing_value():
    msg = str(SiteError(problems_of(BROKEN / "resource-group-missing.yaml")))
    assert "azure.resource_group: got (missing); this field is required" in msg


# ----------------------------------------------------------------------------------------------- CLI
def _validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, "validate", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_validate_good_file():
    res = _validate("--site", "params/lab.yaml")
    assert res.returncode == 0, res.stderr
    assert "valid site 'lab' (level4 -> level3 -> level2, target lab)" in res.stdout


def test_cli_validate_example_with_override():
    res = _validate("--site", "params/site-example.yaml", "-p", "azure.location=westeurope")
    assert res.returncode == 0, res.stderr


def test_cli_validate_broken_file():
    res = _validate("--site", str(BROKEN / "multi-error.yaml"))
    assert res.returncode == 2
    assert res.stdout == ""
    assert "5 problem(s)" in res.stderr
    for path in ("colour", "levels[1].node_ip", "levels[2].dns_override", "azure.location", "allowlist.extra_hosts[0]"):
        assert f": {path}: got " in res.stderr


def test_cli_validate_bad_override():
    res = _validate("--site", "params/lab.yaml", "-p", "azure.location")
    assert res.returncode == 2
    assert "must look like key.path=value" in res.stderr


# ----------------------------------------------------------------------------------------------- host names
@pytest.mark.parametrize("host, phrase", [
    ("graph.microsoft.com/", "use 'graph.microsoft.com'"),
    ("https://x.y", "drop 'https://'"),
    ("http://historian.contoso.com/api", "drop 'http://'"),
    ("host:443", "without a port"),
    ("a.*.b.com", "a wildcard only as a whole leading label"),
    ("*.com", "followed by at least two labels"),
    ("*contoso.com", "a wildcard only as a whole leading label"),
    ("management.azure.com.", "without a trailing dot"),
    ("localhost", "at least two labels"),
    ("-bad.contoso.com", "'-bad' is not"),
    ("under_score.contoso.com", "'under_score' is not"),
    ("", "a host name such as"),
    (None, "a host name such as"),
])
def test_check_host_rejects(host, phrase):
    from layernet.site import check_host

    assert phrase in (check_host(host) or "")


@pytest.mark.parametrize("host", ["management.azure.com", "*.blob.core.windows.net", "Mixed.Case.Example.com",
                                  "xn--bcher-kva.example.com", "a-b.c-d.example"])
def test_check_host_accepts(host):
    from layernet.site import check_host

    assert check_host(host) is None


def test_network_with_host_bits_is_rejected():
    problems = problems_of(LAB, ["levels[1].network=192.168.103.10/24"])
    assert [p.path for p in problems] == ["levels[1].network"]
    assert "CIDR form" in problems[0].expected
