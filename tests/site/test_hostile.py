"""A corpus of hostile site files, each derived from params/lab.yaml by one break.

Every case must give exit code 2 and an error that names the field path and says what is expected, with no
traceback, no line longer than a screenful and no secret value in it: through `load_site` and through the
`layernet validate` command (in-process, so the corpus stays fast; a few cases also run as a real process).
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from layernet import cli
from layernet.site import SiteError, load_site

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "params" / "lab.yaml"
LAYERNET = str(Path(sys.executable).parent / "layernet")
SECRET = "Zq9SuperSecretValue7x"          # never appears in any output
EH_CONN = ("Endpoint=sb://plant.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
           f"SharedAccessKey={SECRET}=")
ST_CONN = f"DefaultEndpointsProtocol=https;AccountName=plantsr;AccountKey={SECRET};EndpointSuffix=core.windows.net"
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ" + SECRET + "In0.c2lnbmF0dXJlLXBhcnQ"
MAX_LINE = 1000


def base() -> dict:
    return yaml.safe_load(LAB.read_text())


def edit(fn: Callable[[dict], Any], *subs: tuple[str, str]) -> Callable[[], bytes]:
    """A file: lab.yaml loaded, changed by fn, dumped, then text substitutions (for YAML spellings like `yes`)."""
    def make() -> bytes:
        raw = base()
        fn(raw)
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=10_000)
        for old, new in subs:
            assert old in text, old
            text = text.replace(old, new)
        return text.encode("utf-8")
    return make


def text(t: str | bytes | Callable[[], str | bytes]) -> Callable[[], bytes]:
    def make() -> bytes:
        v = t() if callable(t) else t
        return v.encode("utf-8") if isinstance(v, str) else v
    return make


def replace_in_lab(old: str, new: str) -> Callable[[], bytes]:
    def make() -> bytes:
        src = LAB.read_text()
        assert old in src, old
        return src.replace(old, new, 1).encode("utf-8")
    return make


def setp(path: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted path (levels.1.node_ip) in the loaded document; a missing last key is added."""
    def fn(raw: dict) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        cur: Any = raw
        for p in parts[:-1]:
            cur = cur[p]
        cur[parts[-1]] = copy.deepcopy(value)
    return fn


def delp(path: str) -> Callable[[dict], None]:
    def fn(raw: dict) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        cur: Any = raw
        for p in parts[:-1]:
            cur = cur[p]
        del cur[parts[-1]]
    return fn


def host(h: Any) -> Callable[[dict], None]:
    return setp("allowlist.extra_hosts", [h])


def nested(depth: int, mapping: bool) -> str:
    inner = "x"
    for _ in range(depth):
        inner = f"{{a: {inner}}}" if mapping else f"[{inner}]"
    return LAB.read_text().replace("description:", f"colour: {inner}\ndescription:", 1)


def bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n" + LAB.read_text()


def many_values() -> str:
    hosts = "".join(f"    - h{i}.example.com\n" for i in range(60_000))
    return LAB.read_text().replace("  extra_hosts: []\n", "  extra_hosts:\n" + hosts)


# (id, file maker, field path that must be reported, phrase of what is expected)
CASES: list[tuple[str, Callable[[], bytes], str, str]] = [
    # ---- wrong types
    ("egress-list", edit(setp("egress_level", ["level4"])), "egress_level", "text"),
    ("egress-mapping", edit(setp("egress_level", {"name": "level4"})), "egress_level", "text"),
    ("parent-list", edit(setp("levels.1.parent", ["level4"])), "levels[1].parent", "text"),
    ("parent-mapping", edit(setp("levels.1.parent", {"level": 4})), "levels[1].parent", "text"),
    ("name-list", edit(setp("levels.0.name", ["level4"])), "levels[0].name", "text"),
    ("name-mapping", edit(setp("levels.0.name", {"a": 1})), "levels[0].name", "text"),
    ("name-int", edit(setp("levels.2.name", 2)), "levels[2].name", "text"),
    ("ports-scalar", edit(host({"host": "historian.contoso.com", "ports": 443})),
     "allowlist.extra_hosts[0].ports", "a list of port numbers"),
    ("ports-true", edit(host({"host": "historian.contoso.com", "ports": [True]})),
     "allowlist.extra_hosts[0].ports[0]", "not ports"),
    ("ports-yes", edit(host({"host": "historian.contoso.com", "ports": ["PORT"]}), ("- PORT", "- yes")),
     "allowlist.extra_hosts[0].ports[0]", "not ports"),
    ("ports-zero", edit(host({"host": "historian.contoso.com", "ports": [0]})),
     "allowlist.extra_hosts[0].ports[0]", "1-65535"),
    ("ports-too-big", edit(host({"host": "historian.contoso.com", "ports": [65536]})),
     "allowlist.extra_hosts[0].ports[0]", "1-65535"),
    ("ports-quoted", edit(host({"host": "historian.contoso.com", "ports": ["443"]})),
     "allowlist.extra_hosts[0].ports[0]", "a TCP port number"),
    ("ports-float", edit(host({"host": "historian.contoso.com", "ports": [443.5]})),
     "allowlist.extra_hosts[0].ports[0]", "a TCP port number"),
    ("node-ip-int", edit(setp("levels.0.node_ip", 1)), "levels[0].node_ip", "not a number"),
    ("node-ip-bool", edit(setp("levels.1.node_ip", True)), "levels[1].node_ip", "IPv4 address"),
    ("node-ip-list", edit(setp("levels.1.node_ip", ["192.168.103.10"])), "levels[1].node_ip", "IPv4 address"),
    ("network-int", edit(setp("levels.1.network", 3232261888)), "levels[1].network", "CIDR"),
    ("jump-box-int", edit(setp("admin.jump_box_ip", 3232235570)), "admin.jump_box_ip", "IPv4 address"),
    ("dns-upstream-scalar", edit(setp("levels.0.dns_upstream", "198.51.100.53")), "levels[0].dns_upstream", "a list"),
    ("dns-upstream-int", edit(setp("levels.0.dns_upstream", [1])), "levels[0].dns_upstream[0]", "IPv4 address"),
    ("number-string", edit(setp("levels.0.number", "4")), "levels[0].number", "whole number"),
    ("number-bool", edit(setp("levels.0.number", True)), "levels[0].number", "whole number"),
    ("proxy-int", edit(setp("levels.0.proxy", 1)), "levels[0].proxy", "true or false"),
    ("levels-mapping", edit(setp("levels", {"level4": {"number": 4}})), "levels", "a list"),
    ("levels-string", edit(setp("levels", "level4")), "levels", "a list"),
    ("admin-list", edit(setp("admin", ["192.168.0.0/24"])), "admin", "mapping"),
    ("azure-string", edit(setp("azure", "eastus")), "azure", "mapping"),
    ("allowlist-list", edit(setp("allowlist", ["arc-core"])), "allowlist", "mapping"),
    ("clusters-list", edit(setp("azure.clusters", ["aio-l4"])), "azure.clusters", "a mapping"),
    ("target-unknown", edit(setp("target", "k8s")), "target", "'lab' or 'kube'"),
    ("description-list", edit(setp("description", ["a", "b"])), "description", "text"),
    ("pod-cidr-int", edit(setp("levels.1.pod_cidr", 10)), "levels[1].pod_cidr", "CIDR"),
    ("refused-hosts-string", edit(setp("lab.refused_hosts", "evil.example")), "lab.refused_hosts", "a list"),
    ("lab-prefix-int", edit(setp("lab.prefix", 123)), "lab.prefix", "text"),
    ("telemetry-list", edit(setp("telemetry", ["level3"])), "telemetry", "mapping"),
    ("eventhubs-levels-string", edit(setp("telemetry.eventhubs_from_levels", "level3")),
     "telemetry.eventhubs_from_levels", "a list"),
    ("tenant-int", edit(setp("azure.tenant_id", 12345)), "azure.tenant_id", "text"),
    ("levels-seven", edit(lambda raw: raw["levels"].extend(
        {"name": f"extra{i}", "number": 0, "network": f"10.9.{i}.0/24", "node_ip": f"10.9.{i}.10"} for i in range(4))),
     "levels", "at most 6 entries"),
    ("dns-upstreams-nine", edit(setp("levels.0.dns_upstream", [f"198.51.100.{i}" for i in range(1, 10)])),
     "levels[0].dns_upstream", "at most 8 entries"),
    ("refused-hosts-many", edit(setp("lab.refused_hosts", ["evil.example"] * 101)), "lab.refused_hosts", "at most 100 entries"),
    ("unknown-keys-many", text(lambda: LAB.read_text() + "".join(f"unknown_{i}: {i}\n" for i in range(5000))),
     "unknown_0", "unknown key"),
    ("duplicate-long-key", text(lambda: LAB.read_text() + "k" * 1000 + ": 1\n" + "k" * 1000 + ": 2\n"),
     "line ", "each key once"),
    ("key-int", text(lambda: LAB.read_text() + "1: x\n"), "line ", "text keys"),
    ("key-yes", text(lambda: LAB.read_text() + "yes: x\n"), "line ", "'yes' reads as the bool True"),
    ("key-null", text(lambda: LAB.read_text() + "~: x\n"), "line ", "text keys"),
    ("terminal-escape", edit(setp("description", "plant \x1b[2J\x1b[31mred")), "description", "control characters"),
    ("bidi-override-host", edit(host("a\u202e.contoso.com")), "allowlist.extra_hosts[0]", "control characters"),
    ("nul-in-value", edit(setp("azure.location", "east\x00us")), "azure.location", "control characters"),
    ("site-name-newline", edit(setp("name", "la\nb")), "name", "letters, digits"),
    # ---- files that are not one UTF-8 YAML mapping
    ("binary", text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), "(file)", "binary"),
    ("latin-1", text(lambda: LAB.read_text().replace("Local lab", "Caf\u00e9 lab").encode("latin-1")),
     "(file)", "UTF-8"),
    ("utf-16", text(lambda: LAB.read_text().encode("utf-16")), "(file)", "binary"),
    ("empty", text(""), "(top level)", "empty file"),
    ("only-comments", text("# nothing here\n# at all\n"), "(top level)", "empty file"),
    ("top-level-list", text("- name: lab\n- target: lab\n"), "(top level)", "a mapping"),
    ("top-level-scalar", text("just words\n"), "(top level)", "a mapping"),
    ("nested-1000-lists", text(lambda: nested(1000, False)), "line ", "levels of nesting"),
    ("nested-1000-maps", text(lambda: nested(1000, True)), "line ", "levels of nesting"),
    ("multi-document", text(lambda: LAB.read_text() + "---\nname: other\n"), "line ", "one YAML document"),
    ("duplicate-top-key", text(lambda: LAB.read_text() + "target: kube\n"), "line ", "each key once: 'target'"),
    ("duplicate-level-key", replace_in_lab("    node_ip: 192.168.103.10\n",
                                           "    node_ip: 192.168.103.10\n    node_ip: 192.168.103.11\n"),
     "line ", "each key once: 'node_ip'"),
    ("alias-bomb", text(bomb), "line ", "alias expansion"),
    ("alias-recursive", text(lambda: LAB.read_text().replace("description:", "colour: &r [1, *r]\ndescription:", 1)),
     "line ", "an alias outside its anchor"),
    ("alias-undefined", text(lambda: LAB.read_text().replace("target: lab", "target: *nowhere", 1)),
     "line ", "an alias to a defined anchor"),
    ("tag-python", text(lambda: LAB.read_text().replace("description:", "description: !!python/object/apply:os.system [id]\nx:", 1)),
     "line ", "without tags"),
    ("tag-custom", text(lambda: LAB.read_text().replace("target: lab", "target: !Ref lab", 1)), "line ", "without tags"),
    ("invalid-yaml", text(lambda: LAB.read_text().replace("levels:\n", "levels: [\n", 1)), "line ", "valid YAML"),
    ("control-character", text(lambda: LAB.read_text().replace("Local lab", "Local \x07 lab", 1)), "(file)", "valid YAML"),
    ("too-large", text(lambda: LAB.read_text() + ("# " + "x" * 98 + "\n") * 50_000), "(file)", "at most 4 MB"),
    ("too-many-values", text(many_values), "line ", "at most 50,000 values"),
    ("complex-key", text(lambda: LAB.read_text() + "? [a, b]\n: 1\n"), "line ", "a plain key"),
    # ---- names
    ("level-name-traversal", edit(setp("levels.2.name", "../../x")), "levels[2].name", "a DNS label"),
    ("level-name-space", edit(setp("levels.2.name", "level 2")), "levels[2].name", "a DNS label"),
    ("level-name-empty", edit(setp("levels.2.name", "")), "levels[2].name", "a DNS label"),
    ("level-name-long", edit(setp("levels.2.name", "l" * 64)), "levels[2].name", "1-63 characters"),
    ("level-name-upper", edit(setp("levels.2.name", "LEVEL2")), "levels[2].name", "lowercase"),
    ("level-name-underscore", edit(setp("levels.2.name", "level_2")), "levels[2].name", "a DNS label"),
    ("level-name-slash", edit(setp("levels.2.name", "a/b")), "levels[2].name", "a DNS label"),
    ("level-name-lab-namespace", edit(setp("levels.2.name", "cloud")), "levels[2].name", "the lab names its own namespaces"),
    ("site-name-traversal", edit(setp("name", "../x")), "name", "letters, digits"),
    ("rg-trailing-dot", edit(setp("azure.resource_group", "rg-plant.")), "azure.resource_group", "not ending in '.'"),
    ("rg-too-long", edit(setp("azure.resource_group", "r" * 91)), "azure.resource_group", "1-90"),
    ("rg-space", edit(setp("azure.resource_group", "rg plant")), "azure.resource_group", "resource group"),
    ("cluster-leading-hyphen", edit(setp("azure.clusters.level3", "-aio")), "azure.clusters.level3", "connected-cluster"),
    ("cluster-too-long", edit(setp("azure.clusters.level3", "c" * 64)), "azure.clusters.level3", "1-63"),
    ("eventhubs-short", edit(setp("azure.eventhubs_namespace", "ehns")), "azure.eventhubs_namespace", "6-50"),
    ("eventhubs-digit-first", edit(setp("azure.eventhubs_namespace", "1plant-ehns")), "azure.eventhubs_namespace", "starting with a letter"),
    ("eventhubs-hyphen-last", edit(setp("azure.eventhubs_namespace", "plant-ehns-")), "azure.eventhubs_namespace", "ending with a letter or digit"),
    ("storage-upper", edit(setp("azure.schema_registry_storage", "LayernetSR")), "azure.schema_registry_storage", "lowercase"),
    ("storage-short", edit(setp("azure.schema_registry_storage", "sr")), "azure.schema_registry_storage", "3-24"),
    ("storage-hyphen", edit(setp("azure.schema_registry_storage", "layer-net")), "azure.schema_registry_storage", "no '-'"),
    ("subscription-word", edit(setp("azure.subscription_id", "my-subscription")), "azure.subscription_id", "GUID"),
    ("tenant-short-guid", edit(setp("azure.tenant_id", "0000-0000")), "azure.tenant_id", "GUID"),
    # ---- hosts
    ("host-long-s", edit(host("\u017ftorage.example.com")), "allowlist.extra_hosts[0]", "ASCII"),
    ("host-dotless-i", edit(host("h\u0131storian.contoso.com")), "allowlist.extra_hosts[0]", "punycode"),
    ("host-kelvin", edit(host("\u212aelvin.contoso.com")), "allowlist.extra_hosts[0]", "ASCII"),
    ("host-umlaut", edit(host("b\u00fccher.example.com")), "allowlist.extra_hosts[0]", "xn--bcher-kva.example.com"),
    ("host-ip", edit(host("10.0.0.1")), "allowlist.extra_hosts[0]", "not an IP address"),
    ("host-ipv6", edit(host("[::1]")), "allowlist.extra_hosts[0]", "not an IP address"),
    ("host-all-numeric", edit(host("123.456")), "allowlist.extra_hosts[0]", "all digits"),
    ("host-double-wildcard", edit(host("*.*.contoso.com")), "allowlist.extra_hosts[0]", "at most one leading"),
    ("drop-host-unicode", edit(setp("allowlist.drop_hosts", ["\u017fervicebus.windows.net"])), "allowlist.drop_hosts[0]", "ASCII"),
    ("refused-host-unicode", edit(setp("lab.refused_hosts", ["\u212a.example.com"])), "lab.refused_hosts[0]", "ASCII"),
    # ---- valid each on its own, but cannot work
    ("extra-host-port-without-listener", edit(host({"host": "opc.contoso.com", "ports": [4840]})),
     "allowlist.extra_hosts[0].ports[0]", "a port the proxies listen on"),
    ("ports-empty", edit(host({"host": "historian.contoso.com", "ports": []})),
     "allowlist.extra_hosts[0].ports", "at least one port"),
    ("drop-host-in-no-group", edit(setp("allowlist.drop_hosts", ["nothing.contoso.com"])),
     "allowlist.drop_hosts[0]", "in none"),
    ("allowlist-empty", edit(setp("allowlist.groups", [])), "allowlist.groups", "not empty"),
    ("cluster-name-missing", edit(delp("azure.clusters.level3")), "azure.clusters.level3", "connected-cluster name"),
    ("dns-upstream-unspecified", edit(setp("levels.0.dns_upstream", ["0.0.0.0"])), "levels[0].dns_upstream[0]", "unspecified or broadcast"),
    ("dns-upstream-broadcast", edit(setp("levels.0.dns_upstream", ["255.255.255.255"])), "levels[0].dns_upstream[0]", "broadcast"),
    ("dns-upstream-network-address", edit(setp("levels.0.dns_upstream", ["192.168.104.0"])), "levels[0].dns_upstream[0]", "network or broadcast address"),
    ("dns-upstream-multicast", edit(setp("levels.0.dns_upstream", ["224.0.0.251"])), "levels[0].dns_upstream[0]", "multicast"),
    ("jump-box-network-address", edit(setp("admin.jump_box_ip", "192.168.0.0")), "admin.jump_box_ip", "not its network or broadcast"),
    ("jump-box-broadcast", edit(setp("admin.jump_box_ip", "192.168.0.255")), "admin.jump_box_ip", "not its network or broadcast"),
    ("cloud-network-overlaps-level", edit(setp("lab.cloud_network", "192.168.104.0/25")), "lab.cloud_network", "levels[0].network"),
    ("cloud-network-overlaps-admin", edit(setp("lab.cloud_network", "192.168.0.0/16")), "lab.cloud_network", "does not overlap"),
    ("refused-host-allowed", edit(setp("lab.refused_hosts", ["management.azure.com"])), "lab.refused_hosts[0]", "a host the allow list refuses"),
    ("telemetry-unknown-level", edit(setp("telemetry.eventhubs_from_levels", ["level9"])), "telemetry.eventhubs_from_levels[0]", "level"),
    ("level-network-32", edit(setp("levels.2.network", "192.168.102.10/32")), "levels[2].network", "at least 4 addresses"),
    # ---- secrets: refused, named, never shown
    ("secret-key-client-secret", edit(setp("azure.client_secret", SECRET)), "azure.client_secret", "value is hidden"),
    ("secret-key-password", edit(setp("password", SECRET)), "password", "value is hidden"),
    ("secret-key-shared-access-key", edit(setp("telemetry.eventhubs.SharedAccessKey", SECRET)),
     "telemetry.eventhubs.SharedAccessKey", "value is hidden"),
    ("secret-key-account-key", edit(setp("azure.AccountKey", SECRET)), "azure.AccountKey", "value is hidden"),
    ("secret-key-connection-string", edit(setp("allowlist.connection_string", SECRET)), "allowlist.connection_string", "value is hidden"),
    ("secret-value-eventhubs", edit(setp("description", EH_CONN)), "description", "connection string"),
    ("secret-value-storage", edit(setp("description", ST_CONN)), "description", "value is hidden"),
    ("secret-value-jwt", edit(setp("description", JWT)), "description", "token"),
    ("secret-value-as-level-name", edit(setp("levels.2.name", JWT)), "levels[2].name", "value is hidden"),
    ("secret-value-url-password", edit(setp("description", f"mirror at https://pull:{SECRET}@registry.contoso.com")),
     "description", "value is hidden"),
    ("secret-value-in-host", edit(host(f"x.contoso.com/?sv=2022-11-02&sig={SECRET}")), "allowlist.extra_hosts[0]", "value is hidden"),
]


def test_corpus_size():
    assert len(CASES) >= 80
    assert len({c[0] for c in CASES}) == len(CASES)


def _check_message(msg: str) -> None:
    assert "Traceback" not in msg
    assert SECRET not in msg
    assert max(len(line) for line in msg.splitlines()) <= MAX_LINE


@pytest.mark.parametrize("name, make, path, phrase", CASES, ids=[c[0] for c in CASES])
def test_hostile_site_file(name, make, path, phrase, tmp_path: Path, capsys):
    f = tmp_path / f"{name}.yaml"
    f.write_bytes(make())
    with pytest.raises(SiteError) as info:
        load_site(f)
    problems = info.value.problems
    hits = [p for p in problems if p.path.startswith(path) and phrase.lower() in str(p).lower()]
    assert hits, [str(p) for p in problems]
    assert all(p.file == str(f) for p in problems)
    _check_message(str(info.value))
    # the command: exit 2, the file and the field path on stderr, nothing on stdout
    code = cli.main(["validate", "--site", str(f)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and f"{f}: {path}" in err
    _check_message(err)


def test_directory_as_site(tmp_path: Path, capsys):
    with pytest.raises(SiteError) as info:
        load_site(tmp_path)
    assert "is a directory" in str(info.value) and "must exist" not in str(info.value)
    assert cli.main(["validate", "--site", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_whole_words_only_kansas_is_not_a_secret(tmp_path: Path):
    def rename(v: Any) -> Any:  # level2 -> kansas everywhere: names, references, keys
        if isinstance(v, dict):
            return {("kansas" if k == "level2" else k): rename(x) for k, x in v.items()}
        if isinstance(v, list):
            return [rename(x) for x in v]
        return "kansas" if v == "level2" else v

    f = tmp_path / "kansas.yaml"
    f.write_text(yaml.safe_dump(rename(base()), sort_keys=False))
    site = load_site(f, ["description=passes the password policy review"])
    assert site.levels[2].name == "kansas" and "password" in site.description


def test_declared_field_named_like_a_secret_is_allowed_but_its_value_is_checked():
    site = load_site(LAB)
    assert site.telemetry.mqtt.client_cert_secret == "layernet-mqtt-client"
    with pytest.raises(SiteError) as info:
        load_site(LAB, [f"telemetry.mqtt.client_cert_secret={JWT}"])
    assert SECRET not in str(info.value) and "telemetry.mqtt.client_cert_secret" in str(info.value)


def test_duplicate_keys_name_both_lines(tmp_path: Path):
    f = tmp_path / "dup.yaml"
    src = LAB.read_text()
    f.write_text(src + "target: kube\n")
    first = src.splitlines().index("target: lab") + 1
    last = len(src.splitlines()) + 1
    with pytest.raises(SiteError) as info:
        load_site(f)
    assert f"'target' is set on line {first} and again on line {last}" in str(info.value)


def test_alias_bomb_stops_early_and_shows_nothing_big(tmp_path: Path):
    f = tmp_path / "bomb.yaml"
    f.write_text(bomb())
    with pytest.raises(SiteError) as info:
        load_site(f)
    assert len(str(info.value)) < 600 and "lol" not in str(info.value)


def test_yaml_anchors_within_the_budget_still_work(tmp_path: Path):
    f = tmp_path / "anchors.yaml"
    f.write_text(LAB.read_text().replace("  extra_hosts: []", "  extra_hosts:\n"
                                         "    - {host: a.contoso.com, ports: &p [443, 8084]}\n"
                                         "    - {host: b.contoso.com, ports: *p}"))
    site = load_site(f)
    assert [x.ports for x in site.allowlist.extra_hosts] == [[443, 8084], [443, 8084]]


def test_a_long_value_is_cut_in_the_error(tmp_path: Path):
    f = tmp_path / "long.yaml"
    f.write_text(LAB.read_text().replace("location: eastus", "location: " + "q" * 20_000))
    with pytest.raises(SiteError) as info:
        load_site(f)
    msg = str(info.value)
    assert "azure.location" in msg and "(20000 characters)" in msg and len(msg) < 2000


def test_cli_as_a_process_hostile_files(tmp_path: Path):
    """A few cases through the installed command: exit 2, one error block, no traceback."""
    for name in ("alias-bomb", "nested-1000-lists", "binary", "secret-value-eventhubs", "level-name-traversal"):
        make = next(c[1] for c in CASES if c[0] == name)
        f = tmp_path / f"{name}.yaml"
        f.write_bytes(make())
        proc = subprocess.run([LAYERNET, "validate", "--site", str(f)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr and SECRET not in proc.stderr


# ----------------------------------------------------------------------------------------------- -p overrides
LEVEL3 = ("{name: level3, number: 3, parent: level4, network: 192.168.103.0/24, node_ip: 192.168.103.20, "
          "proxy: true, dns_override: true}")

# (-p argument, field path in the error, phrase of what is expected)
OVERRIDE_CASES = [
    ("azure..location=westeurope", "azure..location", "without empty segments"),
    (".azure.location=westeurope", ".azure.location", "without empty segments"),
    ("azure.location.=westeurope", "azure.location.", "without empty segments"),
    ("levels[1=x", "levels[1", "is not a path segment"),
    ("levels[-1].proxy=true", "levels[-1].proxy", "is not a path segment"),
    ("levels[1]].proxy=true", "levels[1]].proxy", "is not a path segment"),
    ("a b=1", "a b", "is not a path segment"),
    ("description=[unclosed", "description", "a YAML value after '='"),
    ("description={a: 1, a: 2}", "description", "each key once"),
    ("description=&a [*a]", "description", "an alias outside its anchor"),
    ("description=!!python/object/apply:os.system [id]", "description", "without tags"),
    ("description=" + "[" * 50 + "]" * 50, "description", "levels of nesting"),
    ("levels[0].node_ip=1", "levels[0].node_ip", "not a number"),
    ("levels.level3.node_ip=true", "levels[1].node_ip", "IPv4 address"),
    ("levels.level3.name=../../x", "levels[1].name", "a DNS label"),
    ("egress_level=[level4]", "egress_level", "text"),
    ("allowlist.extra_hosts=[{host: a.contoso.com, ports: 443}]", "allowlist.extra_hosts[0].ports", "a list of port numbers"),
    ("allowlist.extra_hosts=[{host: a.contoso.com, ports: [yes]}]", "allowlist.extra_hosts[0].ports[0]", "not ports"),
    ("allowlist.extra_hosts=[\u212aelvin.contoso.com]", "allowlist.extra_hosts[0]", "ASCII"),
    ("levels[1]=5", "levels[1]", "mapping"),
    ("levels.level9.proxy=true", "levels.level9.proxy", "no list item named 'level9'"),
    ("levels[7].node_ip=192.168.103.20", "levels[7].node_ip", "index [7] does not exist"),
    ("name.first=x", "name.first", "does not lead to a settable field"),
    ("azure.location", "azure.location", "must look like key.path=value"),
    ("=westeurope", "(override)", "needs a field path"),
    ("azure.regoin=westeurope", "azure.regoin", "unknown key"),
    (f"azure.client_secret={SECRET}", "azure.client_secret", "value is hidden"),
    (f"description={EH_CONN}", "description", "value is hidden"),
    (f"description={JWT}", "description", "value is hidden"),
    (f"telemetry.eventhubs.SharedAccessKey={SECRET}", "telemetry.eventhubs.SharedAccessKey", "value is hidden"),
]


@pytest.mark.parametrize("override, path, phrase", OVERRIDE_CASES, ids=[c[0][:40] for c in OVERRIDE_CASES])
def test_hostile_override(override, path, phrase, capsys):
    with pytest.raises(SiteError) as info:
        load_site(LAB, [override])
    hits = [p for p in info.value.problems if p.path == path and phrase.lower() in str(p).lower()]
    assert hits, [str(p) for p in info.value.problems]
    _check_message(str(info.value))
    assert cli.main(["validate", "--site", str(LAB), "-p", override]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f": {path}: got " in err
    _check_message(err)


def test_level_by_name_replaces_the_whole_level_like_an_index():
    by_name = load_site(LAB, [f"levels.level3={LEVEL3}"])
    by_index = load_site(LAB, [f"levels[1]={LEVEL3}"])
    assert by_name == by_index
    assert str(by_name.level("level3").node_ip) == "192.168.103.20"


def test_override_of_a_whole_level_is_validated_like_the_file():
    with pytest.raises(SiteError) as info:
        load_site(LAB, ["levels.level3={name: level3}"])
    assert {"levels[1].number", "levels[1].network", "levels[1].node_ip"} <= {p.path for p in info.value.problems}


def test_thousands_of_problems_are_counted_not_all_listed(tmp_path: Path):
    f = tmp_path / "many.yaml"
    f.write_text(LAB.read_text() + "".join(f"unknown_{i}: {i}\n" for i in range(5000)))
    with pytest.raises(SiteError) as info:
        load_site(f)
    msg = str(info.value)
    assert msg.splitlines()[0].startswith("201 problem(s) in site file")
    assert msg.splitlines()[-1] == "  ... and 161 more problem(s) not shown"
    assert "4,800 more problem(s) of wrong or unknown values not listed" in str(info.value.problems[-1])
    assert len(msg) < 20_000


def test_the_same_override_twice_is_refused_naming_both():
    with pytest.raises(SiteError) as info:
        load_site(LAB, ["azure.location=westeurope", "description=x", "azure.location=eastus"])
    assert [(p.path, p.expected) for p in info.value.problems] == [
        ("azure.location", "each field once: -p azure.location is given as override 1 and again as override 3 "
                           "(the second would silently win); drop one")]
