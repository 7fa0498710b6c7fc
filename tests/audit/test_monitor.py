"""Azure Monitor: the findings as KQL (pure, deterministic, written as artifacts) and the client that runs them
with azure-monitor-query against an HTTP double of the Logs query API that pins the exact request."""
import json
import re
from datetime import datetime, timezone

import pandas as pd
import pytest

from layernet.audit import findings, kql, monitor
from layernet.audit.db import RAW_KEYS
from layernet.audit.parse import parse_logs
from layernet.site import load_site
from layernet.site.problems import SiteError
from audit_helpers import L3, ROOT, small_log
from arm_double import StaticToken
from loganalytics_double import LogAnalyticsDouble

WS = "6f1d2c3b-4a59-4e7f-8a0b-1c2d3e4f5a6b"
LAB = ROOT / "params" / "lab.yaml"
START = datetime(2025, 3, 1, 7, 0, tzinfo=timezone.utc)
END = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def msite():
    return load_site(LAB, [f"monitor.workspace_id={WS}"])


def _by_level(lines):
    out = {"level3": [], "level4": []}
    for l in lines:
        out[json.loads(l)["level"]].append(l)
    return out


# ----------------------------------------------------------------------------------------------- the site field
def test_workspace_id_is_an_optional_guid(msite):
    assert load_site(LAB).monitor.workspace_id is None
    assert msite.monitor.workspace_id == WS
    with pytest.raises(SiteError, match="monitor.workspace_id"):
        load_site(LAB, ["monitor.workspace_id=my-workspace"])
    assert "monitor:" in (ROOT / "params" / "site-example.yaml").read_text()
    assert "workspace_id:" in (ROOT / "params" / "site-example.yaml").read_text()


# ----------------------------------------------------------------------------------------------- the KQL
def test_kql_is_deterministic_and_reads_the_proxy_containers(msite):
    a, b = kql.render(msite), kql.render(load_site(LAB, [f"monitor.workspace_id={WS}"]))
    assert a == b and set(a) == set(kql.QUERIES)
    for name, text in a.items():
        assert text.startswith(f"// layernet audit of site lab: {name} ")
        assert "ContainerLogV2" in text and 'PodNamespace == "layernet"' in text and 'ContainerName == "envoy"' in text
        assert 'where level in ("level3", "level4")' in text
        assert "now()" not in text and "ago(" not in text           # the window is the API's timespan
        code = re.sub(r'@"[^"]*"|"(?:[^"\\]|\\.)*"', '""', text)     # brackets outside string literals pair up
        assert code.count("(") == code.count(")") and code.count("[") == code.count("]")
    assert "count_distinct(source_ip)" in a["per_level"] and "by level" in a["per_level"]
    assert '"refused-name", "refused-source"' in a["refused"]
    # the level's served networks, from the site (level3 serves 192.168.103/24, its child 192.168.102/24, pods)
    lv3 = msite.level("level3")
    assert f'level == "level3" and not(ipv4_is_in_any_range(source_ip, dynamic(["{lv3.network}"' \
        in a["unexpected_source"]
    assert all(f"['{k}']" in a["records"] for k in RAW_KEYS)


def test_kql_maps_named_clusters_to_levels(msite):
    site = load_site(LAB, [f"monitor.workspace_id={WS}", "azure.clusters.level3=plant-l3"])
    text = kql.render(site)["per_level"]
    assert 'cluster =~ "plant-l3", "level3", cluster =~ "aio-l4", "level4"' in text
    assert 'cluster in~ ("plant-l3", "aio-l4")' in text                     # the proxy levels' clusters only
    assert 'cluster =~ "aio-l3", "level3"' in kql.render(msite)["per_level"]


def test_kql_artifacts_from_the_cli_and_the_stage(msite, tmp_path, capsys):
    from layernet.cli import main
    from layernet.stages import audit as stage

    logs = tmp_path / "logs"
    logs.mkdir()
    for lv, ls in _by_level(small_log()).items():
        (logs / f"{lv}.log").write_text("\n".join(ls) + "\n")
    main(["audit", str(logs), "--site", str(LAB), "-p", f"monitor.workspace_id={WS}", "--run", "none",
          "--out", str(tmp_path / "out")])
    assert f"KQL for Azure Monitor (workspace {WS})" in capsys.readouterr().out
    for name, text in kql.render(msite).items():
        assert (tmp_path / "out" / "audit" / "kql" / f"{name}.kql").read_text() == text + "\n"
    a = stage.load(msite, log_dir=str(logs))
    table = stage.export(a, str(tmp_path / "run"))
    assert {f"kql ({n})" for n in kql.QUERIES} <= set(table["format"])
    assert (tmp_path / "run" / "audit" / "kql" / "refused.kql").read_text() == kql.render(msite)["refused"] + "\n"


# ----------------------------------------------------------------------------------------------- the client
def _verdict(d):
    if d["filter_chain"] == "refused-source":
        return "refused-source"
    if not d["filter_chain"] or "NR" in (d["response_flags"] or "").split(","):
        return "refused-name"
    return "upstream-failure" if d["response_flags"] in ("UF", "UH") else "allowed"


def _ms(t: str) -> str:
    return t.replace("Z", "") + "0000Z"           # the API's datetime text: 100 ns digits


def _canned(double, lines):
    """What the workspace would answer for these records, computed here by hand (no engine code)."""
    recs = [json.loads(l) for l in lines]
    per, ref = {}, {}
    for d in recs:
        v = _verdict(d)
        ip = d["source"].rsplit(":", 1)[0]
        p = per.setdefault(d["level"], {"n": 0, "v": {}, "bi": 0, "bo": 0, "src": set(), "sni": set(), "t": []})
        p["n"] += 1
        p["v"][v] = p["v"].get(v, 0) + 1
        p["bi"] += d["bytes_in"]
        p["bo"] += d["bytes_out"]
        p["src"].add(ip)
        if d["sni"]:
            p["sni"].add(d["sni"])
        p["t"].append(d["time"])
        if v.startswith("refused"):
            r = ref.setdefault((d["sni"] or "", ip, d["level"], v), {"ports": set(), "t": []})
            r["ports"].add(d["listener_port"])
            r["t"].append(d["time"])
    double.table("per_level", [("level", "string"), ("connections", "long"), ("allowed", "long"),
                               ("refused_name", "long"), ("refused_source", "long"), ("upstream_failure", "long"),
                               ("bytes_in", "long"), ("bytes_out", "long"), ("distinct_sources", "long"),
                               ("distinct_names", "long"), ("first_seen", "datetime"), ("last_seen", "datetime")],
                 [[lv, p["n"], p["v"].get("allowed", 0), p["v"].get("refused-name", 0),
                   p["v"].get("refused-source", 0), p["v"].get("upstream-failure", 0), p["bi"], p["bo"],
                   len(p["src"]), len(p["sni"]), _ms(min(p["t"])), _ms(max(p["t"]))] for lv, p in sorted(per.items())])
    double.table("refused", [("name", "string"), ("source", "string"), ("level", "string"), ("verdict", "string"),
                             ("ports", "string"), ("count", "long"), ("first_seen", "datetime"),
                             ("last_seen", "datetime")],
                 [[k[0], k[1], k[2], k[3], ", ".join(str(x) for x in sorted(r["ports"])), len(r["t"]),
                   _ms(min(r["t"])), _ms(max(r["t"]))] for k, r in ref.items()])        # any order: the client sorts
    double.table("records", [(k, "string") for k in RAW_KEYS] + [("TimeGenerated", "datetime")],
                 [["" if d.get(k) is None else str(d[k]) for k in RAW_KEYS] + [_ms(d["time"])] for d in recs])
    double.table("unexpected_source", [("kind", "string"), ("level", "string"), ("source", "string"),
                                       ("name", "string"), ("count", "long"), ("first_seen", "datetime"),
                                       ("last_seen", "datetime"), ("expected", "bool")],
                 [["unexpected-source", "level3", "10.9.0.5", "management.azure.com", 1,
                   _ms("2025-03-01T08:00:06.000Z"), _ms("2025-03-01T08:00:06.000Z"), False]])


@pytest.fixture
def double(tmp_path):
    d = LogAnalyticsDouble(tmp_path, WS)
    yield d
    d.close()


def test_client_sends_the_exact_request_and_returns_the_local_engines_frames(msite, allowlist, double):
    lines = small_log()
    # the level3 connection that caused level4's first one names its upstream local address: an exact path join
    lines[0] = lines[0].replace('"connection_id": 1}', f'"connection_id": 1, "upstream_local": "{L3}:50000"}}')
    assert "upstream_local" in lines[0]
    _canned(double, lines)
    token = StaticToken()
    client = monitor.MonitorAudit(msite, credential=token, endpoint=double.url, connection_verify=str(double.ca))
    local = parse_logs(_by_level(lines), allowlist, sources_are_levels=True)

    got = client.per_level((START, END))
    pd.testing.assert_frame_equal(got, findings.per_level(local, msite))
    req = double.requests[-1]
    assert req.method == "POST" and req.path == f"/v1/workspaces/{WS}/query"
    assert req.authorization == "Bearer test-token"
    assert token.scopes == ("https://api.loganalytics.io/.default",)    # the cloud's audience, not the endpoint
    assert req.content_type.startswith("application/json")
    assert req.body["query"] == kql.render(msite)["per_level"]
    assert req.body == {"query": kql.render(msite)["per_level"],
                        "timespan": "2025-03-01T07:00:00.000Z/2025-03-01T09:00:00.000Z", "workspaces": None}

    pd.testing.assert_frame_equal(client.refused((START, END)), findings.refused(local))
    assert double.requests[-1].body["query"] == kql.render(msite)["refused"]

    un = client.unexpected_sources((START, END))
    mine = findings.anomalies(local, msite, allowlist)
    mine = mine[mine["kind"] == "unexpected-source"].reset_index(drop=True)
    cols = ["kind", "level", "source", "name", "count", "first_seen", "last_seen", "expected"]
    pd.testing.assert_frame_equal(un[cols], mine[cols])

    # the records query feeds the local engine: every finding is the same as from the saved logs
    remote = client.parsed((START, END), allowlist)
    assert double.requests[-1].body["query"] == kql.render(msite)["records"]
    assert remote.records == len(lines) and len(remote.malformed) == 0
    a = findings.all_findings(remote, msite, allowlist, rows=False)
    b = findings.all_findings(local, msite, allowlist, rows=False)
    assert set(a) == set(b)
    assert "level3 > level4" in set(b["path_summary"]["path"])
    for k in b:
        pd.testing.assert_frame_equal(a[k], b[k], obj=k)


def test_client_errors(msite, double, tmp_path):
    from azure.core.exceptions import HttpResponseError

    from layernet.audit.collect import AuditInputError

    with pytest.raises(AuditInputError, match="monitor.workspace_id is not set"):
        monitor.MonitorAudit(load_site(LAB), credential=StaticToken())
    other = load_site(LAB, ["monitor.workspace_id=00000000-0000-0000-0000-000000000001"])
    client = monitor.MonitorAudit(other, credential=StaticToken(), endpoint=double.url,
                                  connection_verify=str(double.ca))
    with pytest.raises(HttpResponseError, match="WorkspaceNotFoundError"):
        client.per_level((START, END))
    assert double.requests[-1].path == "/v1/workspaces/00000000-0000-0000-0000-000000000001/query"
    double.table("records", [("time", "string")], [["2025-03-01T08:00:00.000Z"]])
    with pytest.raises(monitor.MonitorQueryError, match="column"):
        monitor.MonitorAudit(msite, credential=StaticToken(), endpoint=double.url,
                             connection_verify=str(double.ca)).records((START, END))


def test_stage_loads_the_audit_from_the_workspace(msite, allowlist, double):
    from layernet.stages import audit as stage

    lines = small_log()
    _canned(double, lines)
    a = stage.load_monitor(msite, since="2025-03-01T07:00:00Z", until=END, credential=StaticToken(),
                           endpoint=double.url, connection_verify=str(double.ca))
    assert double.requests[-1].body["timespan"] == "2025-03-01T07:00:00.000Z/2025-03-01T09:00:00.000Z"
    assert a.source == f"Log Analytics workspace {WS}" and a.parsed.records == len(lines)
    local = parse_logs(_by_level(lines), allowlist, sources_are_levels=True)
    pd.testing.assert_frame_equal(stage.per_level(a), findings.per_level(local, msite))


def test_unexpected_sources_in_the_workspace_mark_the_runs_probe_traffic(msite, allowlist, double):
    """The KQL marks a run's probe traffic expected exactly as the local engine does: the window, names and
    sources of the run are literals of the query text."""
    import ipaddress

    lines = small_log()
    _canned(double, lines)
    exp = findings.Expected(START, END, {"management.azure.com"}, [ipaddress.ip_network("10.9.0.0/16")])
    text = kql.render(msite, exp)["unexpected_source"]
    assert "datetime(2025-03-01T07:00:00.000000Z) .. datetime(2025-03-01T09:00:00.000000Z)" in text
    assert 'tolower(sni) in (dynamic(["management.azure.com"]))' in text and '"10.9.0.0/16"' in text
    assert "| extend expected = false" in kql.render(msite)["unexpected_source"]
    assert kql.render(msite, exp) == kql.render(msite, exp)                     # one run, one text
    double.table("unexpected_source", [("kind", "string"), ("level", "string"), ("source", "string"),
                                       ("name", "string"), ("count", "long"), ("first_seen", "datetime"),
                                       ("last_seen", "datetime"), ("expected", "bool")],
                 [["unexpected-source", "level3", "10.9.0.5", "management.azure.com", 1,
                   _ms("2025-03-01T08:00:06.000Z"), _ms("2025-03-01T08:00:06.000Z"), True]])
    client = monitor.MonitorAudit(msite, credential=StaticToken(), endpoint=double.url,
                                  connection_verify=str(double.ca))
    un = client.unexpected_sources((START, END), exp)
    assert double.requests[-1].body["query"] == text
    local = parse_logs(_by_level(lines), allowlist, sources_are_levels=True)
    mine = findings.anomalies(local, msite, allowlist, expected=exp)
    mine = mine[mine["kind"] == "unexpected-source"].reset_index(drop=True)
    cols = ["kind", "level", "source", "name", "count", "first_seen", "last_seen", "expected"]
    pd.testing.assert_frame_equal(un[cols], mine[cols])
    assert un["expected"].all()


def test_cli_audits_the_workspace(msite, double, tmp_path, monkeypatch, capsys):
    """`layernet audit --site FILE --workspace`: the records of the site's workspace through the same audit and
    verdict as the saved logs; bad input is exit 2 naming what to fix."""
    from layernet.cli import main

    lines = small_log()
    _canned(double, lines)
    monkeypatch.setattr(monitor, "default_credential", StaticToken)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(double.ca))
    args = ["audit", "--site", str(LAB), "-p", f"monitor.workspace_id={WS}", "--workspace", "--run", "none",
            "--since", "2025-03-01T07:00:00Z", "--monitor-endpoint", double.url]
    code = main(args)
    out = capsys.readouterr().out
    req = double.requests[-1]
    assert req.body["query"] == kql.render(msite)["records"]
    assert req.body["timespan"].startswith("2025-03-01T07:00:00.000Z/")
    assert f"Log Analytics workspace {WS} (since 2025-03-01T07:00:00+00:00): {len(lines)} line(s)" in out
    logs = tmp_path / "logs"
    logs.mkdir()
    for lv, ls in _by_level(lines).items():
        (logs / f"{lv}.log").write_text("\n".join(ls) + "\n")
    folder = main(["audit", str(logs), "--site", str(LAB), "--run", "none"])
    out2 = capsys.readouterr().out
    assert code == folder == 1 and "audit FAILED: 0 malformed line(s)" in out

    def table(text, title):      # the rows of one printed table
        part = text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
        return [" ".join(x.split()) for x in part.splitlines()]
    assert table(out, "per level") == table(out2, "per level")
    assert table(out, "refused attempts") == table(out2, "refused attempts")
    found = [r for r in table(out, "anomalies") if "unexpected-source" in r]
    assert found and found == [r for r in table(out2, "anomalies") if "unexpected-source" in r]
    # the window is [since, now]: the workspace held nothing for its levels after the records, a gap of its own
    assert any(r.startswith("log-gap") for r in table(out, "anomalies"))
    # bad input: no workspace id, a log folder as well, a workspace the API does not know
    assert main(["audit", "--site", str(LAB), "--workspace"]) == 2
    assert "monitor.workspace_id is not set" in capsys.readouterr().err
    assert main(["audit", str(logs), "--site", str(LAB), "-p", f"monitor.workspace_id={WS}", "--workspace"]) == 2
    assert "no log folder" in capsys.readouterr().err
    other = "00000000-0000-0000-0000-000000000001"
    assert main(["audit", "--site", str(LAB), "-p", f"monitor.workspace_id={other}", "--workspace",
                 "--monitor-endpoint", double.url]) == 2
    err = capsys.readouterr().err
    assert "WorkspaceNotFoundError" in err and "Traceback" not in err
