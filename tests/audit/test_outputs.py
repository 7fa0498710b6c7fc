"""Charts, exports, collection, the probe comparison, the CLI and notebook 05 end to end."""
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from layernet.audit import charts, collect, compare, export
from layernet.audit.parse import parse_logs
from audit_helpers import L3, ROOT, T, rec, refused_name, refused_source, small_log


@pytest.fixture
def df(allowlist):
    return parse_logs({"mixed": small_log()}, allowlist).connections


def test_charts_have_the_expected_traces(df, site):
    f = charts.over_time(df)
    assert [t.name for t in f.data] == ["level3 allowed", "level3 refused", "level4 allowed", "level4 refused"]
    assert sum(sum(t.y) for t in f.data) == len(df)
    assert sum(f.data[1].y) == 4       # 3 refused names + 1 refused source at level3
    f = charts.top_destinations(df, n=2)
    assert [t.name for t in f.data] == ["allowed", "refused", "upstream failure"]
    assert set(f.data[0].y) == {"evil.example", "management.azure.com"}
    f = charts.sankey(df, site)
    assert f.data[0].type == "sankey"
    links = charts.flows(df, site)
    got = {(r.source, r.target): r.connections for r in links.itertuples()}
    assert got == {("level2 network", "level3"): 5, ("other sources", "level3"): 1, ("level3", "level4"): 2,
                   ("level4 network", "level4"): 1, ("level3", "refused: name"): 3, ("level3", "refused: source"): 1,
                   ("level4", "internet"): 2, ("level4", "upstream failure"): 1}


def test_show_embeds_plotly_once_and_offline(df, monkeypatch):
    from layernet.report import remote_references

    monkeypatch.setattr(charts, "_plotly_included", False)
    first = charts.show(charts.over_time(df)).data
    second = charts.show(charts.top_destinations(df)).data
    assert len(first) > 1_000_000 and len(second) < 100_000
    assert remote_references(first) == [] and remote_references(second) == []


def test_export_round_trips(df, tmp_path):
    paths = export.export(df, tmp_path)
    assert paths["csv"] == tmp_path / "audit" / "connections.csv"
    for back in (export.read_parquet(paths["parquet"]), export.read_csv(paths["csv"])):
        pd.testing.assert_frame_equal(back.reset_index(drop=True), df.reset_index(drop=True), check_categorical=False)
        assert str(back["time"].dtype) == "datetime64[ms, UTC]"
    head = paths["csv"].read_text().splitlines()
    assert head[0].startswith("time,level,listener_port") and head[1].startswith("2025-03-01T08:00:01.000Z,level3,443")


def test_read_logdir_and_since(tmp_path):
    (tmp_path / "level4.log").write_text(rec(level="level4") + "\n")
    (tmp_path / "level3").mkdir()
    (tmp_path / "level3" / "envoy-access.log").write_text(rec() + "\n")
    assert collect.read_logdir(tmp_path) == {"level3": [tmp_path / "level3" / "envoy-access.log"],
                                             "level4": [tmp_path / "level4.log"]}
    with pytest.raises(collect.AuditInputError, match="no log for level"):
        collect.read_logdir(tmp_path, ["level4", "level9"])
    with pytest.raises(collect.AuditInputError, match="no such folder"):
        collect.read_logdir(tmp_path / "nope")
    now = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    assert collect.parse_since("2h", now) == now - timedelta(hours=2)
    assert collect.parse_since("2025-03-01T08:00:00Z") == datetime(2025, 3, 1, 8, tzinfo=timezone.utc)
    assert collect.parse_since("") is None
    with pytest.raises(collect.AuditInputError):
        collect.parse_since("yesterday")


class FakeTarget:
    def __init__(self, logs):
        self.logs_by_level, self.calls = logs, []

    def logs(self, level, since=None):
        self.calls.append((level, since))
        return self.logs_by_level.get(level, [])


def test_collect_goes_through_the_target_for_every_proxy_level(site):
    tgt = FakeTarget({"level3": [rec()], "level4": [rec(level="level4")]})
    since = datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert collect.collect(site, tgt, since) == {"level4": [rec(level="level4")], "level3": [rec()]}
    assert tgt.calls == [("level4", since), ("level3", since)]


# ----------------------------------------------------------------------------------------------- probe comparison
def probe_rows():
    rows = []
    for host in ("management.azure.com", "mcr.microsoft.com"):
        rows.append({"level": "level2", "check": "tls", "host": host, "port": 443, "ok": True})
        rows.append({"level": "level3", "check": "tls", "host": host, "port": 443, "ok": True})
        rows.append({"level": "level4", "check": "tls", "host": host, "port": 443, "ok": True})   # no proxy crossed
        rows.append({"level": "level2", "check": "dns", "host": host, "port": None, "ok": True})
    for host in ("evil.example", "(no-sni)"):
        rows.append({"level": "level2", "check": "refused", "host": host, "port": 443, "ok": True})
        rows.append({"level": "level3", "check": "refused", "host": host, "port": 443, "ok": True})
    return pd.DataFrame(rows)


def probe_log():
    lines = []
    for i, host in enumerate(("management.azure.com", "mcr.microsoft.com")):
        lines.append(rec(time=T(1 + i), sni=host))                                           # level2 -> level3
        lines.append(rec(time=T(1.001 + i), level="level4", source=f"{L3}:1", sni=host))     # ... -> level4
        lines.append(rec(time=T(3 + i), level="level4", source=f"{L3}:2", sni=host))         # level3 -> level4
    for i, host in enumerate(("evil.example", None)):
        lines.append(refused_name(time=T(5 + i), sni=host))
        lines.append(refused_name(time=T(7 + i), level="level4", source=f"{L3}:3", sni=host))
    return lines


def test_expected_counts(site):
    exp = compare.expected_counts(probe_rows(), site)
    assert exp.to_dict("records") == [{"level": "level3", "expected_allowed": 2, "expected_refused": 2},
                                      {"level": "level4", "expected_allowed": 4, "expected_refused": 2}]


def test_comparison_matches_and_detects_a_mismatch(site, allowlist):
    df = parse_logs({"mixed": probe_log()}, allowlist).connections
    table = compare.compare_with_probes(df, probe_rows(), site)
    assert table["match"].all()
    assert "all 10 probe connections logged" in compare.require_match(table)
    # the site's own workloads sharing a proxy in the window (allowed, not probes) keep the match
    busy = parse_logs({"mixed": probe_log() + [rec(time=T(2.5), sni="eastus.dp.kubernetesconfiguration.azure.com")]},
                      allowlist).connections
    busy_table = compare.compare_with_probes(busy, probe_rows(), site)
    assert busy_table["match"].all()
    assert "plus 1 allowed connection(s) of the site's own workloads" in compare.require_match(busy_table)
    extra = parse_logs({"mixed": probe_log() + [refused_source(time=T(9))]}, allowlist).connections
    bad = compare.compare_with_probes(extra, probe_rows(), site)
    assert bad.set_index("level").loc["level3", "audit_refused"] == 3 and not bad["match"].all()
    with pytest.raises(RuntimeError, match="level3: allowed 2 logged vs 2 probed, refused 3 vs 2"):
        compare.require_match(bad)
    missing = parse_logs({"mixed": probe_log()[1:]}, allowlist).connections
    with pytest.raises(RuntimeError, match="level3: allowed 1 logged vs 2 probed"):
        compare.require_match(compare.compare_with_probes(missing, probe_rows(), site))


def test_comparison_window_and_saved_rows(site, allowlist, tmp_path):
    df = parse_logs({"mixed": probe_log() + [rec(time="2025-03-01T07:00:00.000Z")]}, allowlist).connections
    saved = compare.save_probe_rows(tmp_path, probe_rows())
    data = json.loads(saved.read_text())
    data["saved_at"] = "2025-03-01T08:00:10+00:00"
    saved.write_text(json.dumps(data))
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": [
        {"name": "infrastructure", "start": "2025-03-01T08:00:00+00:00"}]}))
    rows, start, end = compare.load_probes(tmp_path)
    assert len(rows) == len(probe_rows()) and start.hour == 8 and end.second == 10
    inside = compare.compare_with_probes(df, rows, site, start, end)
    assert inside["match"].all() and inside.set_index("level").loc["level3", "audit_allowed"] == 2
    unbounded = compare.compare_with_probes(df, rows, site)                    # the 07:00 connection counts
    assert unbounded.set_index("level").loc["level3", "audit_allowed"] == 3
    assert compare.load_probes(tmp_path / "none")[0].empty


# ----------------------------------------------------------------------------------------------- CLI, notebook
def write_logdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = small_log() + ["garbage line"]
    by_level = {"level3": [], "level4": []}
    for l in lines:
        by_level["level4" if '"level": "level4"' in l else "level3"].append(l)
    (path / "level3.log").write_text("\n".join(by_level["level3"]) + "\n")
    (path / "level4.log").write_text("\n".join(by_level["level4"]) + "\n")
    return path


def test_cli_audit(tmp_path, capsys):
    from layernet.cli import main

    logs = write_logdir(tmp_path / "logs")
    code = main(["audit", str(logs), "--site", str(ROOT / "params" / "lab.yaml"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1           # a malformed line and anomalies
    assert "9 connection(s), 1 malformed" in out and "refused attempts" in out and "evil.example" in out
    assert "audit FAILED: 1 malformed line(s), 1 anomaly group(s)" in out       # the stage says the same
    assert (tmp_path / "out" / "audit" / "connections.parquet").is_file()
    assert main(["audit", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_notebook_runs_on_saved_logs_and_reports_offline(tmp_path):
    import papermill as pm

    from layernet.report import notebook_to_html, remote_references

    logs = write_logdir(tmp_path / "logs")
    run_dir = tmp_path / "run"
    (run_dir / "results").mkdir(parents=True)
    nb = ROOT / "notebooks" / "05-audit.ipynb"
    raw = json.loads(nb.read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in raw["cells"] if c["cell_type"] == "code")
    out = run_dir / "05-audit.ipynb"
    # the same logs as test_cli_audit: the stage fails on the verdict the CLI prints (exit 1 there)
    with pytest.raises(pm.PapermillExecutionError, match="audit FAILED: 1 malformed line"):
        pm.execute_notebook(str(nb), str(out), cwd=str(nb.parent), kernel_name="python3", progress_bar=False,
                            parameters={"site_path": str(ROOT / "params" / "lab.yaml"), "run_dir": str(run_dir),
                                        "log_dir": str(logs)})
    html = notebook_to_html(out, run_dir / "05-audit.html", title="audit").read_text()
    assert remote_references(html) == []
    assert html.count("Plotly.newPlot") >= 3 and "comparison skipped" in html
    results = json.loads((run_dir / "results" / "audit.json").read_text())
    assert results["connections"] == 9 and results["malformed_lines"] == 1 and results["probe_match"] is None
    assert (run_dir / "audit" / "connections.csv").is_file()
    assert list((run_dir / "audit" / "fleet" / "connections" / "site=lab").glob("level=*/day=*/*.parquet"))


def test_over_time_is_never_blank_and_bins_follow_the_window(allowlist):
    one = parse_logs({"level3": [rec(time=T(1))]}, allowlist)
    f = charts.over_time(one)
    shown = [t for t in f.data if sum(t.y)]
    assert len(shown) == 1 and "markers" in shown[0].mode and sum(shown[0].y) == 1     # one bin, still drawn
    assert f.layout.xaxis.title.text.endswith("bins of 1 s")
    hour = charts.over_time(one, since=pd.Timestamp("2025-03-01T08:00:00Z"), until=pd.Timestamp("2025-03-01T09:00:00Z"))
    assert hour.layout.xaxis.title.text.endswith("bins of 30 s") and len(hour.data[0].x) == 121
    assert sum(hour.data[0].y) == 1
    day = charts.over_time(one, until=pd.Timestamp("2025-03-02T08:00:00Z"))
    assert day.layout.xaxis.title.text.endswith("bins of 900 s")
    assert charts.bin_seconds(0) == 1 and charts.bin_seconds(7 * 86400 * 1000) == 3600


def test_a_target_whose_proxies_carry_other_workloads_compares_only_the_probe_names(site, allowlist):
    """Where real workloads share the proxies (the kube target says so), a refused workload name in the window is
    not counted against the probes; on the lab (nothing else runs there) it is."""
    from layernet.site import load_site
    from layernet.targets import target_class

    kube = load_site(ROOT / "params" / "lab.yaml", ["target=kube"] + [f"levels[{i}].kube_context=plant-l{i + 2}"
                                                                       for i in range(3)])
    assert target_class(kube).shared_proxies and not target_class(site).shared_proxies
    log = probe_log() + [refused_name(time=T(6.5), sni="telemetry.workload.example")]
    df = parse_logs({"mixed": log}, allowlist).connections
    assert compare.compare_with_probes(df, probe_rows(), kube)["match"].all()
    lab = compare.compare_with_probes(df, probe_rows(), site)
    assert lab.set_index("level").loc["level3", "audit_refused"] == 3 and not lab["match"].all()
