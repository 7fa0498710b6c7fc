"""Stage 01 library: tables, diffs, verdicts (the lab run itself is in tests/lab)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from layernet.stages import infrastructure as infra
from layernet.site import load_site
from layernet.plan import Plan, change

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site():
    return load_site(REPO / "params" / "lab.yaml")


def _rows():
    return pd.DataFrame([
        {"level": "level2", "check": "dns", "host": "management.azure.com", "port": 53, "expected": "A 192.168.103.10",
         "observed": "192.168.103.10", "ok": True, "latency_ms": 1.0, "hint": ""},
        {"level": "level2", "check": "tls", "host": "management.azure.com", "port": 443, "expected": "peer 192.168.104.10",
         "observed": "reset", "ok": False, "latency_ms": 3.0, "hint": "check the level3 proxy"},
        {"level": "level3", "check": "refused", "host": "evil.example", "port": 443, "expected": "reset",
         "observed": "reset", "ok": True, "latency_ms": 2.0, "hint": ""},
    ])


def test_ip_allow_list_matches_firewall_rows(site):
    df = infra.ip_allow_list(site)
    assert list(df.columns) == ["level", "from", "to", "protocol", "ports", "purpose"]
    assert not df[df["level"] == "level2"]["to"].str.contains("internet").any()  # only egress reaches the internet
    assert df[df["level"] == "level4"]["to"].str.contains("internet").any()


def test_per_level_and_by_check():
    per = infra.per_level(_rows()).set_index("level")
    assert per.loc["level2", "checks"] == 2 and per.loc["level2", "failed"] == 1 and per.loc["level3", "passed"] == 1
    pivot = infra.by_check(_rows())
    assert pivot.loc["level2", "tls"] == "0/1" and pivot.loc["level3", "refused"] == "1/1"


def test_verdict_names_the_first_failure():
    with pytest.raises(RuntimeError, match=r"1 of 3 probes failed; first: level2 tls management.azure.com:443 "
                                           r"observed 'reset' - check the level3 proxy"):
        infra.require_all_passed(_rows(), dry_run=False)
    ok = _rows()[_rows()["ok"]]
    assert infra.require_all_passed(ok, dry_run=False) == "all 2 probes passed"
    assert infra.require_all_passed(ok.iloc[0:0], dry_run=True).startswith("dry run")
    with pytest.raises(RuntimeError, match="probe matrix is empty"):
        infra.require_all_passed(ok.iloc[0:0], dry_run=False)


def test_results_and_diff_html():
    changes = [change("level3", "envoy.yaml", "update", "--- a\n+++ b\n@@ -1 +1 @@\n-old <x>\n+new\n"),
               change("level2", "unbound.conf", "unchanged")]
    assert [(c.skip, c.reason) for c in changes] == [(False, "live differs from the desired state"),
                                                     (True, "live matches the desired state")]
    html = infra.diff_html(changes)
    assert "level3</b> / envoy.yaml: update" in html and "-old &lt;x&gt;" in html and "unbound.conf" not in html
    assert "No changes" in infra.diff_html([changes[1]])
    res = infra.results(Plan.of("infrastructure", changes), changes[1:], _rows())
    assert res == {"planned_changes": 1, "applied_changes": 0, "probes": 3, "probes_passed": 2, "probes_failed": 1}
    table = infra.changes_table(changes)
    assert table.to_dict("records") == [
        {"level": "level3", "object": "envoy.yaml", "action": "update", "diff_lines": 2},
        {"level": "level2", "object": "unbound.conf", "action": "unchanged", "diff_lines": 0}]


def test_a_replace_shows_why_in_the_diff():
    why = "# replace: spec.selector cannot change in place (the API server's dry run: field is immutable); apply ..."
    changes = [change("level3", "layernet/Deployment/envoy", "replace", why + "\n--- a\n+++ b\n-  app: a\n+  app: b\n"),
               change("level3", "layernet/Service/envoy", "unchanged")]
    assert changes[0].reason == why[2:] and not changes[0].skip     # the plan's "why" is the replace's reason
    html = infra.diff_html(changes)
    assert "layernet/Deployment/envoy: replace" in html
    assert '<b style="color:#9a6700"># replace: spec.selector cannot change in place' in html


def test_render_table_lists_every_artifact(site):
    arts = infra.render(site)
    table = infra.artifacts_table(arts)
    assert len(table) == len(arts) and set(table["level"]) == {"level4", "level3", "level2"}
    assert (table["sha256"].str.len() == 16).all()
