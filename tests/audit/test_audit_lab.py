"""On the namespace lab: run the probe matrix, then audit the real Envoy logs; the counts must match exactly.
Root only; the lab (prefix `au`, addresses in 10.98.0.0/16) is always taken down afterwards."""
import time
from datetime import datetime, timezone

import pandas as pd
import pytest

import labs

from layernet import context
from audit_helpers import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow]
PREFIX = labs.plan(__file__).prefix     # the audit lab's own prefix and address plan (tests/labs.py)


def overrides() -> list[str]:
    return labs.site_args(__file__)          # the audit reads the proxies' logs


@pytest.fixture(scope="module")
def lab_site():
    from layernet.site import load_site

    return load_site(ROOT / "params" / "lab.yaml", overrides())


@pytest.fixture(scope="module")
def lab(lab_site):
    with labs.running(lab_site) as target:
        yield target


def test_probe_matrix_and_audit_counts_match_on_the_lab(lab, lab_site, tmp_path):
    from layernet.audit import compare, findings
    from layernet.stages import audit as stage
    from layernet.probe_run import COLUMNS, run_matrix

    start = datetime.now(timezone.utc)
    rows = pd.DataFrame(run_matrix(lab_site, target=lab, verbose=False), columns=COLUMNS)
    assert rows["ok"].all(), rows[~rows["ok"]].to_string()
    compare.save_probe_rows(tmp_path, rows)
    time.sleep(1.0)                          # the lab's Envoys flush their access log every 200 ms
    a = stage.load(context.build(lab_site, lab), since=start.isoformat())
    assert a.parsed.malformed.empty
    table = compare.compare_with_probes(a.connections, rows, lab_site, start, datetime.now(timezone.utc))
    assert table["match"].all(), table.to_string()
    assert table["expected_allowed"].sum() > 0 and table["expected_refused"].sum() > 0
    # every allowed connection at level3 continued to level4
    p = findings.paths(a.connections, lab_site)
    from_l3 = p[(p["origin_level"] == "level3") & (p["verdict"] == "allowed")]
    assert len(from_l3) and (from_l3["path"] == "level3 > level4").all()
    # the stages' crossings follow the same records with the same hop join (hops.link): every audit path is theirs
    from layernet import crossings

    cx = crossings.join(lab_site, crossings.read(lab_site, lab, since=start))
    cx_paths = {(pd.Timestamp(r["time"]), r["host"], " > ".join(h.rsplit(" ", 1)[0] for h in r["hops"].split(" → ")))
                for r in cx}
    audit_paths = {(r.start, r.name or "(no SNI)", str(r.path)) for r in p.itertuples()}
    assert audit_paths and audit_paths <= cx_paths, sorted(audit_paths - cx_paths)[:5]
    assert not findings.anomalies(a.connections, lab_site, a.allowlist).query("kind == 'unexpected-source'").shape[0]


def test_cli_and_stage_agree_on_the_lab_logs_after_the_probes(lab, lab_site, tmp_path, capsys):
    """The probe matrix's deliberate refusals are the run's expected traffic: `layernet audit` of the lab's log
    folder and the audit stage give the same verdict (pass, no false anomaly) and `layernet audit` exits 0."""
    import json

    from layernet.audit import compare, findings
    from layernet.stages import audit as stage
    from layernet.cli import main
    from layernet.probe_run import COLUMNS, run_matrix

    run = tmp_path / "run"
    start = datetime.now(timezone.utc)
    rows = pd.DataFrame(run_matrix(lab_site, target=lab, verbose=False), columns=COLUMNS)
    compare.save_probe_rows(run, rows)
    (run / "manifest.json").write_text(json.dumps({"site": {"name": lab_site.name}, "stages": [
        {"name": "infrastructure", "start": start.isoformat()}]}))
    time.sleep(1.0)
    a = stage.load(context.build(lab_site, lab), since=start.isoformat())
    an = stage.anomalies(a, run_dir=str(run))
    assert findings.problems(an).empty, an.to_string()
    assert an["expected"].sum() > 0                         # the refusals were seen, and recognised as probes
    assert "audit passed" in stage.require_verdict(a, an)
    logs = f"/var/lib/layernet/{PREFIX}"
    params = [x for o in overrides() for x in ("-p", o)]
    code = main(["audit", logs, "--site", str(ROOT / "params" / "lab.yaml"), *params,
                 "--since", start.isoformat(), "--run", str(run)])
    cap = capsys.readouterr()
    out = cap.out
    assert code == 0, out + cap.err
    assert "audit passed" in out
