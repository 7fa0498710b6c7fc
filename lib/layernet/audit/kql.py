"""The audit's findings as KQL over Azure Monitor (Container Insights: the Envoy pods' stdout in ContainerLogV2).

`render(site)` is pure and deterministic: the same site gives the same text, byte for byte. Each query starts
with the same ``let records = ...;`` block that turns a ``ContainerLogV2`` row of the proxy container into the
connection the local engine reads (the JSON access-log record of render/envoy.py ACCESS_LOG_FORMAT, with the
verdict computed by the same rules as `hops.verdict_of`), and then computes one finding:

    records           the raw record fields as text, one row per connection: the local engine reads them
                      (`monitor.records_to_parsed`) for the findings that need the allow list's matching and the
                      path joins (coverage, paths, anomalies)
    per_level         `findings.per_level`: connections by verdict, bytes, distinct sources and names, first/last
    refused           `findings.refused`: refused attempts by name, source, level and verdict
    unexpected_source the ``unexpected-source`` anomaly: sources outside the networks a level's proxy serves,
                      with ``expected`` true for the probe traffic of a run (`render(site, expected)`: the run's
                      window, names and sources become literals of the text, so one run gives one text)

Which level a row belongs to: the Arc connected cluster it came from (``azure.clusters``, read from the row's
``_ResourceId``) when the site names one for the level, else the record's own ``level`` field. Only rows of
the proxy's namespace and container (render/manifests.py) are read; the time window is the query API's
``timespan`` (the KQL holds no clock, so the text never changes between runs).
"""
from __future__ import annotations

from pathlib import Path

from layernet import clock
from layernet.audit.db import RAW_KEYS
from layernet.hops import NO_CHAIN_FLAG, UPSTREAM_FAILURE_FLAGS
from layernet.render.envoy import CHAIN_REFUSED_SOURCE
from layernet.render.manifests import NAMESPACE

TABLE = "ContainerLogV2"
QUERIES = ("records", "per_level", "refused", "unexpected_source")


def _s(text: str) -> str:
    """A KQL string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _c(name: str) -> str:
    """A column name, bracket-quoted (time and other names are KQL keywords)."""
    return f"['{name}']"


def _list(items) -> str:
    return "dynamic([" + ", ".join(_s(x) for x in items) + "])"


def records_block(site) -> str:
    """`let records = ...;`: the typed access-log records of the site's proxy levels."""
    levels = [lv.name for lv in site.proxy_levels(innermost_first=True)]
    clusters = {lv: site.azure.clusters[lv] for lv in levels if lv in site.azure.clusters}
    if clusters:
        cases = ", ".join(f"cluster =~ {_s(c)}, {_s(lv)}" for lv, c in clusters.items())
        level = f"case({cases}, tostring(r[\"level\"]))"
        scope = (f"\n    | where isempty(cluster) or cluster in~ ({', '.join(_s(c) for c in clusters.values())})")
    else:
        level, scope = "tostring(r[\"level\"])", ""
    text = ",\n        ".join(f"{_c(k)} = tostring(r[{_s(k)}])" for k in RAW_KEYS if k != "level")
    flags = "split(response_flags, \",\")"
    return f"""let records = {TABLE}
    | where PodNamespace == {_s(NAMESPACE)} and ContainerName == "envoy"
    | extend r = parse_json(tostring(LogMessage))
    | where isnotempty(tostring(r["time"])) and isnotempty(tostring(r["listener_port"]))
    | extend cluster = extract(@"(?i)/connectedclusters/([^/]+)$", 1, tostring(_ResourceId)){scope}
    | extend level = {level}
    | where level in ({', '.join(_s(x) for x in levels)})
    | extend {text}
    | extend t = todatetime(['time']), port = toint(listener_port),
        source_ip = iff((source startswith "[" or countof(source, ":") == 1) and source matches regex @":[0-9]+$",
                        trim(@"[\\[\\]]", extract(@"^(.*):[0-9]+$", 1, source)), trim(@"[\\[\\]]", source)),
        verdict = case(filter_chain == {_s(CHAIN_REFUSED_SOURCE)}, "refused-source",
                       isempty(filter_chain), "refused-name",
                       isempty(response_flags) or response_flags == "-", "allowed",
                       set_has_element({flags}, {_s(NO_CHAIN_FLAG)}), "refused-name",
                       array_length(set_intersect({flags}, {_list(sorted(UPSTREAM_FAILURE_FLAGS))})) > 0,
                           "upstream-failure",
                       "allowed")
    | where isnotnull(t) and isnotnull(port);"""


def _expected(expected) -> str:
    """A KQL predicate over a record: traffic the run caused on purpose (`findings.Expected`), else false."""
    if not expected:
        return "false"
    start = clock.utc(expected.start).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    end = clock.utc(expected.end).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    v4 = [str(n) for n in expected.sources if n.version == 4]
    return (f"(t between (datetime({start}) .. datetime({end})) and tolower(sni) in ({_list(sorted(expected.names))})"
            f" and ipv4_is_in_any_range(source_ip, {_list(v4)}))")


def render(site, expected=None) -> dict[str, str]:
    """{query name: KQL text} for the site (see the module notes); `expected`: the probe traffic of a run
    (`findings.Expected`), marked in ``unexpected_source``."""
    head = f"// layernet audit of site {site.name}: {{name}} (Envoy access log in {TABLE})\n" + records_block(site)
    out = {}
    out["records"] = head + f"""
records
| project {', '.join(_c(k) for k in RAW_KEYS)}, TimeGenerated
| order by TimeGenerated asc, connection_id asc"""
    out["per_level"] = head + """
records
| summarize connections = count(),
    allowed = countif(verdict == "allowed"),
    refused_name = countif(verdict == "refused-name"),
    refused_source = countif(verdict == "refused-source"),
    upstream_failure = countif(verdict == "upstream-failure"),
    bytes_in = sum(tolong(bytes_in)), bytes_out = sum(tolong(bytes_out)),
    distinct_sources = count_distinct(source_ip),
    distinct_names = count_distinctif(sni, isnotempty(sni)),
    first_seen = min(t), last_seen = max(t)
    by level
| order by level asc"""
    out["refused"] = head + """
records
| where verdict in ("refused-name", "refused-source")
| summarize ports = strcat_array(array_sort_asc(make_set(port)), ", "), ['count'] = count(), first_seen = min(t),
    last_seen = max(t) by name = sni, source = source_ip, level, verdict
| project name, source, level, verdict, ports, ['count'], first_seen, last_seen
| order by ['count'] desc, name asc, source asc, level asc, verdict asc"""
    served = []
    for lv in site.proxy_levels(innermost_first=True):
        nets = site.served_networks(lv)
        ranges = [str(n) for k in ("own network", "child network", "pods") for n in nets[k]]
        served.append(f"level == {_s(lv.name)} and not(ipv4_is_in_any_range(source_ip, {_list(ranges)}))")
    out["unexpected_source"] = head + f"""
records
| where {' or '.join(f'({c})' for c in served) or 'false'}
| extend expected = {_expected(expected)}
| summarize ['count'] = count(), first_seen = min(t), last_seen = max(t)
    by level, source = source_ip, name = sni, expected
| project kind = "unexpected-source", level, source, name, ['count'], first_seen, last_seen, expected
| order by level asc, source asc, name asc, expected asc"""
    return {k: v.replace("{name}", k, 1) for k, v in out.items()}


def write(site, out_dir) -> dict[str, Path]:
    """Write each query as `<out_dir>/<name>.kql`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in render(site).items():
        paths[name] = out / f"{name}.kql"
        paths[name].write_text(text + "\n")
    return paths
