"""Stage 00 library: validation table, topology picture, tools, allow-list table."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from layernet.stages import preflight
from layernet.site import load_site

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "params" / "lab.yaml"


@pytest.fixture(scope="module")
def site():
    return load_site(LAB)


def test_validation_lists_problems_as_rows(tmp_path: Path):
    assert preflight.validation(str(LAB)).empty
    bad = tmp_path / "bad.yaml"
    bad.write_text(LAB.read_text().replace("location: eastus", "location: mars").replace("number: 3", "number: 4"))
    df = preflight.validation(str(bad))
    assert set(df["field"]) >= {"azure.location", "levels[1].number"}
    assert (df["file"] == str(bad)).all()


def test_site_path_resolution(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("LAYERNET_SITE", raising=False)
    assert preflight.resolve_site_path("") == LAB
    other = tmp_path / "x.yaml"
    monkeypatch.setenv("LAYERNET_SITE", str(other))
    assert preflight.resolve_site_path("") == other
    assert preflight.resolve_site_path(str(LAB)) == LAB


def test_topology_picture_is_valid_svg_with_every_level(site):
    svg = preflight.topology_picture(site)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    text = " ".join(t for t in root.itertext())
    for lv in site.levels:
        assert lv.name in text and str(lv.node_ip) in text
    assert "Internet / Azure" in text and "192.168.0.50" in text
    assert "DNS override → 192.168.104.10" in text and "DNS override → 192.168.103.10" in text
    assert text.count("Envoy: SNI allow list") == 2
    assert "TLS 443, 8084, 9093 (SNI)" in text and "MQTT 8883" in text     # the hops come from the flows model (x509)
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing loaded from anywhere


def test_levels_table_order_and_roles(site):
    df = preflight.levels_table(site)
    assert list(df["level"]) == ["level4", "level3", "level2"]
    assert list(df["proxy"]) == ["yes", "yes", ""]
    assert list(df["dns_override"]) == ["", "yes", "yes"]
    assert list(df["parent"]) == ["(internet)", "level4", "level3"]


def test_tools_and_missing_tool_error(site):
    df = preflight.tools(site)
    assert set(df["tool"]) == {"envoy", "coredns", "nft", "ip"}
    envoy = df[df["tool"] == "envoy"].iloc[0]
    assert envoy["found"] == "yes" and envoy["version"].count(".") == 2
    broken = df.copy()
    broken.loc[broken["tool"] == "coredns", "found"] = "MISSING"
    with pytest.raises(RuntimeError, match=r"coredns: make setup"):
        preflight.require_tools(broken)
    preflight.require_tools(df[df["found"] == "yes"])


def test_kube_site_lists_contexts(site, tmp_path: Path, monkeypatch):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: level4\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: level4, context: {cluster: c, user: u}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    example = load_site(REPO / "params" / "site-example.yaml")
    df = preflight.tools(example)
    ctx = df[df["tool"].str.startswith("kube context")].set_index("tool")["found"].to_dict()
    assert ctx == {"kube context level4": "yes", "kube context level3": "MISSING", "kube context level2": "MISSING"}


def test_allowlist_table(site):
    df = preflight.allowlist_table(site)
    assert list(df.columns) == ["host", "ports", "group", "purpose", "needed by"]
    assert "management.azure.com" in set(df["host"]) and "eastus.obo.arc.azure.com" in set(df["host"])



def test_kube_site_without_kubeconfig_says_what_to_do(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    example = load_site(REPO / "params" / "site-example.yaml")
    df = preflight.tools(example)
    with pytest.raises(RuntimeError, match=r"kube context level3: no usable kubeconfig .*add context level3 for level3's cluster"):
        preflight.require_tools(df)


def test_topology_display_carries_a_text_alternative(site):
    pic = preflight.topology_display(site)
    alt = pic.metadata["alt"]
    assert alt.startswith("Topology of site lab: level2 192.168.102.10 -> level3 192.168.103.10 -> level4")
    assert pic.data == preflight.topology_picture(site)


def test_validation_view_names_the_valid_file_or_lists_every_problem():
    from layernet.stages import preflight

    ok = preflight.validation_view("params/lab.yaml")
    assert "Valid site file" in ok.data and "lab.yaml" in ok.data
    bad = preflight.validation_view("params/lab.yaml", ["levels.level3.node_ip=10.9.9.9<b>", "name=Bad Name"])
    html = bad._repr_html_() if hasattr(bad, "_repr_html_") else bad.data
    assert "levels[1].node_ip" in html or "node_ip" in html
    assert "<b>" not in html and "&lt;b&gt;" in html          # a bad value is shown, escaped, never as markup


def test_the_summary_names_hosts_a_role_requires_that_the_site_dropped():
    site = load_site(LAB)
    assert preflight.summary(site)["required_hosts_dropped"] == []
    assert "Required by a role" not in preflight.summary_text(site)
    dropped = load_site(LAB, ['allowlist.drop_hosts=["sts.windows.net"]'])
    assert preflight.summary(dropped)["required_hosts_dropped"] == ["sts.windows.net:443 (arc-agents)"]
    assert "not on the allow list:** sts.windows.net:443 (arc-agents)" in preflight.summary_text(dropped)
