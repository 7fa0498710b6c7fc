"""The endpoint catalog, its expansion for a site, and THE host-matching function."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from layernet.allowlist import AllowList, Endpoint, catalog, catalog_groups, effective_allowlist, host_matches
from layernet.site import SiteError, check_host, known_locations, load_site

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "params" / "lab.yaml"
LAYERNET = str(Path(sys.executable).parent / "layernet")


def lab(**overrides) -> "AllowList":
    return effective_allowlist(load_site(LAB, {k.replace("__", "."): v for k, v in overrides.items()}))


def hosts(al: AllowList) -> set[str]:
    return {e.host for e in al.entries}


# ----------------------------------------------------------------------------------------------- host_matches
@pytest.mark.parametrize("pattern, name, expected", [
    # exact names
    ("management.azure.com", "management.azure.com", True),
    ("management.azure.com", "xmanagement.azure.com", False),
    ("management.azure.com", "management.azure.com.evil.example", False),
    ("management.azure.com", "evil.management.azure.com", False),
    ("management.azure.com", "management.azure.co", False),
    # wildcard: one or more labels below the suffix, never the apex
    ("*.blob.core.windows.net", "acct.blob.core.windows.net", True),
    ("*.blob.core.windows.net", "a.b.c.blob.core.windows.net", True),
    ("*.blob.core.windows.net", "blob.core.windows.net", False),
    ("*.blob.core.windows.net", "xblob.core.windows.net", False),
    # Envoy keeps "*.x" as the key ".x", so the SNI ".x" itself matches (measured on the lab, tests/harden)
    ("*.blob.core.windows.net", ".blob.core.windows.net", True),
    ("*.blob.core.windows.net", "acct.blob.core.windows.net.evil.example", False),
    ("*.blob.core.windows.net", "acct.core.windows.net", False),
    # case-insensitive on both sides (Envoy lowercases the SNI and the configured names)
    ("management.azure.com", "MANAGEMENT.Azure.COM", True),
    ("*.Blob.Core.Windows.Net", "ACCT.blob.core.windows.net", True),
    ("MCR.microsoft.com", "mcr.MICROSOFT.com", True),
    # trailing dot: a different name for Envoy, matches nothing written without one
    ("management.azure.com", "management.azure.com.", False),
    ("*.blob.core.windows.net", "acct.blob.core.windows.net.", False),
    ("management.azure.com.", "management.azure.com.", True),
    # Envoy compares suffixes only: whatever is left of the suffix just has to be non-empty
    ("*.example.com", "..example.com", True),
    ("*.example.com", "a..example.com", True),
    # empty / missing
    ("management.azure.com", "", False),
    ("management.azure.com", None, False),
    ("", "management.azure.com", False),
    ("*.example.com", None, False),
    # a '*' that is not a leading '*.' label is no wildcard (Envoy rejects such server_names)
    ("a.*.example.com", "a.b.example.com", False),
    ("*example.com", "myexample.com", False),
])
def test_host_matches(pattern, name, expected):
    assert host_matches(pattern, name) is expected


def envoy_server_name_match(pattern: str, name: str) -> bool:
    """Envoy's filter-chain lookup for a single configured server name (FilterChainManagerImpl):
    lowercase both; exact match; else for every '.' from index 1 on (not the last character), the suffix
    starting at that dot is looked up among the wildcard names stored as their '.suffix'."""
    pattern, name = pattern.lower(), name.lower()
    if not name:
        return False
    if name == pattern:
        return True
    if not pattern.startswith("*."):
        return False
    stored = pattern[1:]
    if name == stored:          # the wildcard's own key: an exact lookup of ".suffix" finds it
        return True
    pos = name.find(".", 1)
    while pos != -1 and pos < len(name) - 1:
        if name[pos:] == stored:
            return True
        pos = name.find(".", pos + 1)
    return False


LABEL = st.text(alphabet="abcxyz019-", min_size=1, max_size=6)
LABELS = st.lists(LABEL, min_size=1, max_size=4)


@given(suffix=LABELS, prefix=st.lists(LABEL, min_size=0, max_size=3), other=LABELS, use_suffix=st.booleans())
def test_wildcard_property(suffix, prefix, other, use_suffix):
    """`*.`+suffix matches name iff name ends with '.'+suffix and has more labels."""
    name_labels = prefix + (suffix if use_suffix else other)
    name = ".".join(name_labels)
    dotted = "." + ".".join(suffix)
    expected = name.endswith(dotted) and len(name_labels) > len(suffix)
    assert host_matches("*" + dotted, name) is expected
    assert host_matches("*" + dotted, "." .join(suffix)) is False  # never the apex


@given(labels=LABELS, flips=st.lists(st.booleans(), min_size=30, max_size=30))
def test_exact_and_case_property(labels, flips):
    name = ".".join(labels)
    shouted = "".join(c.upper() if f else c for c, f in zip(name, flips + [False] * len(name)))
    assert host_matches(name, shouted)
    assert host_matches("*." + name, "x." + shouted)
    assert not host_matches(name, name + ".")
    assert not host_matches(name, "x" + name)


@settings(max_examples=500)
@given(pattern=st.text(alphabet="ab.*", min_size=1, max_size=8), name=st.text(alphabet="abAB.", max_size=10))
def test_agrees_with_envoy_lookup(pattern, name):
    """Differential check against Envoy's lookup algorithm, on odd names too (empty labels, dots)."""
    if "*" in pattern and not (pattern.startswith("*.") and "*" not in pattern[1:]):
        return  # Envoy refuses partial wildcards in server_names; check_host refuses them in site files
    if pattern == "*.":
        return  # no suffix at all: never an allow-list host (check_host refuses it)
    assert host_matches(pattern, name) == envoy_server_name_match(pattern, name)


# ----------------------------------------------------------------------------------------------- catalog
SAMPLE = {"<region>": "eastus", "<eventhubs_namespace>": "plant-ehns", "<storage_account>": "plantsr",
          "<gateway_prefix>": "plantgw"}


def expand(host: str) -> str:
    for ph, v in SAMPLE.items():
        host = host.replace(ph, v)
    return host


@pytest.mark.parametrize("endpoint", catalog(), ids=lambda e: f"{e.group}:{e.host}")
def test_catalog_entry_is_valid(endpoint: Endpoint):
    assert "<" not in expand(endpoint.host), "unknown placeholder"
    assert check_host(expand(endpoint.host)) is None
    assert endpoint.group in catalog_groups()
    assert endpoint.ports and all(1 <= p <= 65535 for p in endpoint.ports)
    assert endpoint.purpose
    assert set(endpoint.clouds) <= {"public", "usgov", "china"} and endpoint.clouds


# Reference facts, section 4 (Azure public cloud). Placeholders as the catalog spells them:
# <eventhubs_namespace> = <ns>, <storage_account> = <account>, <gateway_prefix> = <prefix>.
PUBLIC_SECTION_4 = {
    # Arc-enabled Kubernetes (core)
    "management.azure.com": [443],
    "<region>.dp.kubernetesconfiguration.azure.com": [443],
    "login.microsoftonline.com": [443],
    "<region>.login.microsoft.com": [443],
    "login.windows.net": [443],
    "mcr.microsoft.com": [443],
    "*.data.mcr.microsoft.com": [443],
    "gbl.his.arc.azure.com": [443],
    "*.his.arc.azure.com": [443],
    "linuxgeneva-microsoft.azurecr.io": [443],
    "dl.k8s.io": [443],
    "k8connecthelm.azureedge.net": [443],
    # Arc cluster connect and custom locations
    "guestnotificationservice.azure.com": [443],
    "*.guestnotificationservice.azure.com": [443],
    "sts.windows.net": [443],
    "*.servicebus.windows.net": [443],
    "<region>.obo.arc.azure.com": [8084],
    "k8sconnectcsp.azureedge.net": [443],
    # optional
    "graph.microsoft.com": [443],
    "*.arc.azure.net": [443],
    # Arc gateway
    "<gateway_prefix>.gw.arc.azure.com": [443],
    "<region>.his.arc.azure.com": [443],
    "<region>.data.mcr.microsoft.com": [443],
    # Azure IoT Operations extras
    "graph.windows.net": [443],
    "*.azurecr.io": [443],
    "*.blob.core.windows.net": [443],
    "*.vault.azure.net": [443],
    "<storage_account>.blob.core.windows.net": [443],
    # Event Hubs (Kafka 9093 and HTTPS 443; AMQP 5671/5672 is not used by the data flows)
    "<eventhubs_namespace>.servicebus.windows.net": [443, 9093],
    # monitoring
    "*.ods.opinsights.azure.com": [443],
    "*.oms.opinsights.azure.com": [443],
    "*.monitoring.azure.com": [443],
    "*.prod.microsoftmetrics.com": [443],
    "*.prod.hot.ingestion.msftcloudes.com": [443],
    "dc.services.visualstudio.com": [443],
}
USGOV_SECTION_4 = {
    "management.usgovcloudapi.net", "<region>.dp.kubernetesconfiguration.azure.us", "login.microsoftonline.us",
    "<region>.login.microsoftonline.us", "gbl.his.arc.azure.us", "usgv.his.arc.azure.us",
    "guestnotificationservice.azure.us", "*.guestnotificationservice.azure.us", "*.servicebus.usgovcloudapi.net",
    "usgovvirginia.obo.arc.azure.us", "mcr.microsoft.com", "dl.k8s.io",
}
CHINA_SECTION_4 = {
    "management.chinacloudapi.cn", "<region>.dp.kubernetesconfiguration.azure.cn", "login.chinacloudapi.cn",
    "mcr.azk8s.cn", "gbl.his.arc.azure.cn", "*.servicebus.chinacloudapi.cn", "<region>.obo.arc.azure.cn",
}
ARC_GATEWAY = {
    "<gateway_prefix>.gw.arc.azure.com", "management.azure.com", "<region>.obo.arc.azure.com",
    "login.microsoftonline.com", "<region>.login.microsoft.com", "gbl.his.arc.azure.com",
    "<region>.his.arc.azure.com", "mcr.microsoft.com", "<region>.data.mcr.microsoft.com",
}


def catalog_ports(cloud: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for e in catalog():
        if cloud in e.clouds:
            out.setdefault(e.host, set()).update(e.ports)
    return out


def test_catalog_covers_public_section_4_exactly():
    got = catalog_ports("public")
    assert set(PUBLIC_SECTION_4) - set(got) == set(), "endpoints of the reference missing from the catalog"
    assert set(got) - set(PUBLIC_SECTION_4) == set(), "catalog entries the reference does not list"
    for host, ports in PUBLIC_SECTION_4.items():
        assert got[host] == set(ports), host


def test_catalog_covers_usgov_and_china():
    assert USGOV_SECTION_4 <= set(catalog_ports("usgov"))
    assert CHINA_SECTION_4 <= set(catalog_ports("china"))
    assert catalog_ports("usgov")["usgovvirginia.obo.arc.azure.us"] == {8084}
    assert catalog_ports("china")["<region>.obo.arc.azure.cn"] == {8084}


def test_arc_gateway_group_is_the_minimal_set():
    assert {e.host for e in catalog() if e.group == "arc-gateway"} == ARC_GATEWAY


def test_catalog_groups():
    assert {"arc-core", "arc-cluster-connect", "aio", "eventhubs", "monitoring", "arc-gateway"} <= set(catalog_groups())
    assert {e.group for e in catalog()} <= set(catalog_groups())


# ----------------------------------------------------------------------------------------------- effective list
def test_lab_allowlist_expands_region_and_names():
    al = lab()
    h = hosts(al)
    assert {"eastus.dp.kubernetesconfiguration.azure.com", "eastus.login.microsoft.com",
            "eastus.obo.arc.azure.com", "layernet-lab-ehns.servicebus.windows.net",
            "layernetlabsr.blob.core.windows.net", "management.azure.com", "*.servicebus.windows.net"} <= h
    assert not any("<" in x for x in h)
    assert {e.group for e in al.entries} == {"arc-core", "arc-cluster-connect", "aio", "eventhubs"}
    assert al.ports() == [443, 8084, 9093]
    assert al.hosts_for_port(8084) == ["eastus.obo.arc.azure.com"]
    assert al.hosts_for_port(9093) == ["layernet-lab-ehns.servicebus.windows.net"]
    assert al.notes == ()
    assert all(check_host(x) is None for x in h)


def test_region_follows_location():
    h = hosts(lab(azure__location="westeurope"))
    assert "westeurope.dp.kubernetesconfiguration.azure.com" in h
    assert "westeurope.obo.arc.azure.com" in h
    assert not any("eastus" in x for x in h)


def test_usgov_location_gives_usgov_hosts():
    h = hosts(lab(azure__cloud="usgov", azure__location="usgovvirginia"))
    assert {"management.usgovcloudapi.net", "usgovvirginia.dp.kubernetesconfiguration.azure.us",
            "login.microsoftonline.us", "usgovvirginia.login.microsoftonline.us", "gbl.his.arc.azure.us",
            "usgovvirginia.obo.arc.azure.us", "*.servicebus.usgovcloudapi.net", "mcr.microsoft.com",
            "dl.k8s.io", "layernet-lab-ehns.servicebus.usgovcloudapi.net"} <= h
    assert not any(x.endswith(".azure.com") or x == "login.microsoftonline.com" for x in h)


def test_china_cloud():
    h = hosts(lab(azure__cloud="china", azure__location="chinaeast2"))
    assert {"management.chinacloudapi.cn", "chinaeast2.dp.kubernetesconfiguration.azure.cn", "mcr.azk8s.cn",
            "chinaeast2.obo.arc.azure.cn", "dl.k8s.io"} <= h
    assert "management.azure.com" not in h


def test_groups_are_respected():
    al = lab(allowlist__groups=["arc-core"])
    assert {e.group for e in al.entries} == {"arc-core"}
    assert "eastus.obo.arc.azure.com" not in hosts(al)
    al = lab(allowlist__groups=["monitoring"], images__default_mode="import")   # no registry allowed: images carried
    assert hosts(al) == {"*.ods.opinsights.azure.com", "*.oms.opinsights.azure.com", "*.monitoring.azure.com",
                         "*.prod.microsoftmetrics.com", "*.prod.hot.ingestion.msftcloudes.com",
                         "dc.services.visualstudio.com"}


def test_extra_hosts_string_and_mapping_forms():
    al = lab(allowlist__extra_hosts=["Historian.Contoso.com",
                                     {"host": "*.opc.contoso.com", "ports": [8084, 443], "purpose": "OPC UA gateway"}])
    by_host = {e.host: e for e in al.entries}
    hist = by_host["historian.contoso.com"]
    assert (hist.ports, hist.group, hist.purpose) == ((443,), "site-extra", "site-specific")
    opc = by_host["*.opc.contoso.com"]
    assert (opc.ports, opc.group, opc.purpose) == ((443, 8084), "site-extra", "OPC UA gateway")
    assert al.ports() == [443, 8084, 9093]
    # a port no proxy listens on could never work: the site is refused
    with pytest.raises(SiteError, match=r"extra_hosts\[0\]\.ports\[0\]: got 4840; a port the proxies listen on"):
        lab(allowlist__extra_hosts=[{"host": "*.opc.contoso.com", "ports": [4840]}])


def test_extra_host_already_in_catalog_merges_ports():
    al = lab(allowlist__extra_hosts=[{"host": "management.azure.com", "ports": [8084]}])
    (entry,) = [e for e in al.entries if e.host == "management.azure.com"]
    assert entry.ports == (443, 8084)
    assert entry.group == "arc-core"


def test_drop_hosts_and_note_for_absent_host():
    al = lab(allowlist__drop_hosts=["*.vault.azure.net", "Graph.Windows.net"])
    h = hosts(al)
    assert "*.vault.azure.net" not in h and "graph.windows.net" not in h
    assert "management.azure.com" in h
    assert al.notes == ()
    # dropping a host that no selected group has does nothing: the site is refused
    with pytest.raises(SiteError, match=r"drop_hosts\[2\]: got 'not.in.the.list.com'; a host of a selected group"):
        lab(allowlist__drop_hosts=["*.vault.azure.net", "Graph.Windows.net", "not.in.the.list.com"])


def test_placeholders_without_value_are_left_out_with_a_note():
    # no dataflow sends to Event Hubs, so the site may leave the namespace unset; each level names its own schema
    # registry storage, so the site-wide one may be unset
    al = lab(azure__eventhubs_namespace=None, azure__schema_registry_storage=None,
             allowlist__groups=["aio", "eventhubs", "arc-gateway"], telemetry__dataflows=[],
             telemetry__eventhubs_from_levels=[],
             **{f"aio__levels__{lv}__schema_registry__storage_account": f"plant{lv}sr" for lv in ("level4", "level3", "level2")})
    h = hosts(al)
    assert not any("<" in x for x in h)
    assert not any(x.endswith(".gw.arc.azure.com") for x in h)
    assert "*.blob.core.windows.net" in h and "eastus.his.arc.azure.com" in h
    assert set(al.notes) == {
        "<storage_account>.blob.core.windows.net left out: set the site value for <storage_account>",
        "<eventhubs_namespace>.servicebus.windows.net left out: set the site value for <eventhubs_namespace>",
        "<gateway_prefix>.gw.arc.azure.com left out: set the site value for <gateway_prefix>",
    }


def test_effective_allowlist_is_deterministic():
    assert lab() == lab()
    entries = lab().entries
    assert list(entries) == sorted(entries, key=lambda e: (e.group, e.host))


def test_every_location_expands_to_valid_hosts():
    for cloud in ("public", "usgov", "china"):
        for loc in known_locations(cloud):
            al = lab(azure__cloud=cloud, azure__location=loc,
                     allowlist__groups=list(catalog_groups()))
            assert all(check_host(x) is None for x in hosts(al)), (cloud, loc)


# ----------------------------------------------------------------------------------------------- match
def test_match_prefers_exact_over_wildcard():
    al = lab()
    assert al.match("linuxgeneva-microsoft.azurecr.io").group == "arc-core"
    assert al.match("linuxgeneva-microsoft.azurecr.io").host == "linuxgeneva-microsoft.azurecr.io"
    assert al.match("other.azurecr.io").host == "*.azurecr.io"
    assert al.match("layernet-lab-ehns.servicebus.windows.net", 443).host == "layernet-lab-ehns.servicebus.windows.net"
    assert al.match("LAYERNET-LAB-EHNS.servicebus.windows.net", 9093).group == "eventhubs"
    assert al.match("relay1.servicebus.windows.net", 443).host == "*.servicebus.windows.net"


def test_match_respects_ports_and_refuses_the_rest():
    al = lab()
    assert al.match("relay1.servicebus.windows.net", 9093) is None
    assert al.match("management.azure.com", 8084) is None
    assert al.allows("eastus.obo.arc.azure.com", 8084)
    assert not al.allows("eastus.obo.arc.azure.com", 443)
    for name in ("management.azure.com.evil.example", "xmanagement.azure.com", "evil.example",
                 "azurecr.io", "management.azure.com.", "", None):
        assert al.match(name) is None, name
        assert not al.allows(name, 443)


def test_match_prefers_longer_wildcard():
    al = AllowList((Endpoint("*.example.com", (443,), "a", "short"), Endpoint("*.b.example.com", (443,), "b", "long"),
                    Endpoint("x.b.example.com", (443,), "c", "exact")))
    assert al.match("a.b.example.com").purpose == "long"
    assert al.match("a.c.example.com").purpose == "short"
    assert al.match("x.b.example.com").purpose == "exact"
    assert al.match("b.example.com").purpose == "short"


def test_rows_and_frame():
    al = lab()
    rows = al.rows()
    assert len(rows) == len(al.entries)
    assert {"host": "layernet-lab-ehns.servicebus.windows.net", "ports": "443, 9093", "group": "eventhubs",
            "purpose": "Event Hubs Kafka endpoint (9093) and HTTPS/AMQP over WebSockets (443)",
            "needed by": "required: eventhubs-egress (9093)"} in rows
    by_host = {r["host"]: r["needed by"] for r in rows}
    assert by_host["mcr.microsoft.com"] == "required: arc-agents, aio-extensions; optional: jump-box"
    assert by_host["graph.windows.net"] == "optional: aio-extensions"
    frame = al.to_frame()
    assert list(frame.columns) == ["host", "ports", "group", "purpose", "needed by"]
    assert len(frame) == len(rows)


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_allowlist_prints_a_table():
    res = subprocess.run([LAYERNET, "allowlist", "--site", "params/lab.yaml"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["host", "ports", "group", "purpose", "needed by"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[2:] if not line.endswith(" entries")]
    al = lab()
    assert len(rows) == len(al.entries)
    assert ["management.azure.com", "443", "arc-core", "Azure Resource Manager", "required: arc-agents, jump-box"] in rows
    assert ["eastus.obo.arc.azure.com", "8084", "arc-cluster-connect", "Cluster connect on-behalf-of endpoint",
            "required: arc-agents"] in rows
    assert lines[-1] == f"{len(al.entries)} entries"


def test_cli_allowlist_shows_notes_and_rejects_bad_site():
    res = subprocess.run([LAYERNET, "allowlist", "--site", "params/lab.yaml", "-p",
                          "allowlist.groups=[arc-core, arc-cluster-connect, aio, eventhubs, arc-gateway]"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "note: <gateway_prefix>.gw.arc.azure.com left out: set the site value for <gateway_prefix>" in res.stdout
    res = subprocess.run([LAYERNET, "allowlist", "--site", "params/lab.yaml", "-p", "allowlist.drop_hosts=[nothing.example.com]"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "allowlist.drop_hosts[0]: got 'nothing.example.com'" in res.stderr
    res = subprocess.run([LAYERNET, "allowlist", "--site", "params/lab.yaml", "-p", "allowlist.extra_hosts=[graph.microsoft.com/]"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "allowlist.extra_hosts[0]: got 'graph.microsoft.com/'" in res.stderr


def test_an_arc_gateway_replaces_the_direct_arc_endpoints():
    gw = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.HybridCompute/gateways/gw1"
    direct = effective_allowlist(load_site("params/site-example.yaml"))
    site = load_site("params/site-example.yaml", [f"arc.gateway_resource_id={gw}",
                                                  "arc.gateway_endpoint=abc123.gw.arc.azure.com"])
    al = effective_allowlist(site)
    groups = {e.group for e in al.entries}
    assert "arc-gateway" in groups and not groups & {"arc-core", "arc-cluster-connect"}
    hosts = {e.host for e in al.entries}
    assert "abc123.gw.arc.azure.com" in hosts and "guestnotificationservice.azure.com" not in hosts
    assert "guestnotificationservice.azure.com" in {e.host for e in direct.entries}
    # without the gateway's host the entry is left out with a note naming what to set
    bare = effective_allowlist(load_site("params/site-example.yaml", [f"arc.gateway_resource_id={gw}"]))
    assert any("gw.arc.azure.com" in n and "gateway_prefix" in n for n in bare.notes)


def test_match_many_equals_match_on_every_pair():
    """The audit names entries for many (name, port) pairs at once; the answer is `match`'s for each, also for
    names that only look close (case, a trailing dot, the bare suffix of a wildcard, empty)."""
    site = load_site("params/site-example.yaml")
    al = effective_allowlist(site)
    names = [e.host.replace("*", "x") for e in al.entries] + [e.host.replace("*.", "") for e in al.entries]
    names += [n.upper() for n in names] + [n + "." for n in names[:10]] + ["", None, "evil.example", "K.example"]
    pairs = [(n, p) for n in names for p in (443, 8084, 9093, 1883)]
    want = {(n, p): al.match(n, p).host for n, p in pairs if al.match(n, p)}
    assert al.match_many(pairs) == want and len(want) > 20


# ----------------------------------------------------------------------------------------------- roles
def test_each_role_needs_the_hosts_the_catalog_marks_for_it():
    from layernet.allowlist import role_needs

    site = load_site(ROOT / "params" / "lab.yaml")
    required = {(n.role, n.host, n.ports) for n in role_needs(site, required_only=True)}
    assert ("arc-agents", "sts.windows.net", (443,)) in required
    assert ("arc-agents", "eastus.obo.arc.azure.com", (8084,)) in required
    assert ("aio-extensions", "layernetlabsr.blob.core.windows.net", (443,)) in required
    assert ("eventhubs-egress", "layernet-lab-ehns.servicebus.windows.net", (9093,)) in required   # not 443
    optional = {(n.role, n.host) for n in role_needs(site) if not n.required}
    assert ("aio-extensions", "*.vault.azure.net") in optional and ("arc-agents", "sts.windows.net") not in optional
    # a gateway site: the agents need the gateway's set, not the direct Arc groups
    gw = load_site(ROOT / "params" / "lab.yaml", [
        "arc.gateway_resource_id=/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
        "Microsoft.HybridCompute/gateways/gw1", "arc.gateway_endpoint=abc123.gw.arc.azure.com"])
    agents = {n.host for n in role_needs(gw, "arc-agents", required_only=True)}
    assert "abc123.gw.arc.azure.com" in agents and "sts.windows.net" not in agents


def test_a_dropped_required_host_is_named_with_its_role():
    from layernet.allowlist import missing_required

    assert missing_required(load_site(ROOT / "params" / "lab.yaml")) == []
    site = load_site(ROOT / "params" / "lab.yaml", ['allowlist.drop_hosts=["sts.windows.net", "graph.windows.net"]'])
    assert [(n.role, n.host) for n in missing_required(site)] == [("arc-agents", "sts.windows.net")]   # graph: optional


def test_a_need_is_required_or_optional_on_ports_the_entry_lists():
    from layernet.allowlist import parse_need

    assert parse_need("required", (443, 9093)) == (True, (443, 9093))
    assert parse_need("optional on 9093", (443, 9093)) == (False, (9093,))
    with pytest.raises(ValueError, match="required or optional"):
        parse_need("needed", (443,))
    with pytest.raises(ValueError, match="does not list"):
        parse_need("required on 8084", (443,))


@pytest.mark.parametrize("text", ["required\n", "optional on 443\n", " required", "required on 443,", "needed"])
def test_a_catalog_need_is_read_whole(text):
    """The catalog's `required` / `optional [on PORTS]` is matched as a whole value: a trailing line break is refused."""
    from layernet.allowlist import parse_need

    with pytest.raises(ValueError, match="write required or optional"):
        parse_need(text, (443, 8084))
    assert parse_need("optional on 8084", (443, 8084)) == (False, (8084,))
