"""Several sites' logs: `layernet audit` over a fleet (pairs or a fleet file), one Parquet dataset partitioned by
site, level and day, the fleet view (site x level) and the exit codes."""
from pathlib import Path

import pytest

from layernet.audit import export, findings
from layernet.audit.parse import parse_logs
from layernet.cli import main
from audit_helpers import ROOT, rec, refused_name, small_log

LAB = ROOT / "params" / "lab.yaml"


def test_fleet_dataset_is_partitioned_and_counts_per_site_and_level(allowlist, site, tmp_path):
    a = parse_logs({"mixed": small_log()}, allowlist)
    b = parse_logs({"level3": [rec(time="2025-03-02T08:00:00.000Z"), refused_name(time="2025-03-02T09:00:00.000Z")]},
                   allowlist)
    root = export.fleet_parquet({"plant-a": a, "plant-b": b}, tmp_path)
    parts = sorted(str(p.relative_to(root).parent) for p in root.rglob("*.parquet"))
    assert "site=plant-a/level=level3/day=2025-03-01" in parts
    assert "site=plant-b/level=level3/day=2025-03-02" in parts
    view = export.fleet_read(root)
    got = {(r.site, r.level): (r.connections, r.allowed, r.refused) for r in view.itertuples()}
    per = findings.per_level(a, site).set_index("level")
    for lv in ("level3", "level4"):
        r = per.loc[lv]
        assert got[("plant-a", lv)] == (r.connections, r.allowed, r.refused_name + r.refused_source)
    assert got[("plant-b", "level3")] == (2, 1, 1)
    # writing a site again replaces its rows (no duplicates); the other site stays
    export.fleet_parquet({"plant-b": b}, tmp_path)
    again = {(r.site, r.level): r.connections for r in export.fleet_read(root).itertuples()}
    assert again[("plant-b", "level3")] == 2 and again[("plant-a", "level3")] == got[("plant-a", "level3")][0]


# ----------------------------------------------------------------------------------------------- the CLI
def _site_file(path: Path, name: str) -> Path:
    text = LAB.read_text().replace("name: lab\n", f"name: {name}\n", 1)
    assert f"name: {name}\n" in text
    path.write_text(text)
    return path


def _logdir(path: Path, lines: list[str]) -> Path:
    path.mkdir(parents=True)
    by = {"level3": [], "level4": []}
    for l in lines:
        by["level4" if '"level": "level4"' in l else "level3"].append(l)
    for lv, ls in by.items():
        (path / f"{lv}.log").write_text("\n".join(ls) + "\n")
    return path


def _clean():
    """plant-b's traffic, a day later, that passes the audit (no source outside the networks, nothing malformed)."""
    return [l.replace("2025-03-01T", "2025-03-02T") for l in small_log() if "refused-source" not in l]


@pytest.fixture
def fleet(tmp_path):
    a = _site_file(tmp_path / "plant-a.yaml", "plant-a")
    b = _site_file(tmp_path / "plant-b.yaml", "plant-b")
    la = _logdir(tmp_path / "logs-a", small_log() + ["garbage line"])       # 1 malformed, 1 anomaly group
    lb = _logdir(tmp_path / "logs-b", _clean())
    return tmp_path, a, b, la, lb


def _counts(lines):
    """Per (level, verdict) counts computed here, independently of the engine, from the JSON lines."""
    import json

    out = {}
    for l in lines:
        try:
            d = json.loads(l)
        except ValueError:
            continue
        v = ("refused-source" if d["filter_chain"] == "refused-source" else "refused-name" if not d["filter_chain"]
             else "upstream-failure" if d["response_flags"] in ("UF", "UH") else "allowed")
        out.setdefault(d["level"], {}).setdefault(v, 0)
        out[d["level"]][v] += 1
    return out


def _view_rows(out: str) -> dict:
    """The fleet view table of the CLI's output: {(site, level): {column: text}}."""
    lines = out[out.index("fleet: 2 site(s) x level"):].splitlines()[1:]
    header = lines[0].split()
    rows = {}
    for l in lines[1:]:
        cells = l.split()
        if len(cells) != len(header) or set(l.strip()) <= set("-+ |"):
            if rows:
                break
            continue
        r = dict(zip(header, cells))
        rows[(r["site"], r["level"])] = r
    return rows


def test_fleet_pairs_print_the_view_write_one_dataset_and_fail_with_the_worst_site(fleet, capsys):
    tmp, a, b, la, lb = fleet
    code = main(["audit", str(la), "--site", str(a), str(lb), "--site", str(b), "--run", "none",
                 "--parquet", str(tmp / "ds")])
    out = capsys.readouterr().out
    assert code == 1                                           # plant-a fails, plant-b passes: the worst wins
    assert "=== site plant-a" in out and "=== site plant-b" in out
    assert "fleet: 1 of 2 site(s) passed; FAILED: plant-a" in out
    rows = _view_rows(out)
    assert set(rows) == {("plant-a", "level4"), ("plant-a", "level3"), ("plant-b", "level4"), ("plant-b", "level3")}
    for name, lines in (("plant-a", small_log()), ("plant-b", _clean())):
        for lv, by in _counts(lines).items():
            r = rows[(name, lv)]
            assert int(r["connections"]) == sum(by.values())
            assert int(r["allowed"]) == by.get("allowed", 0)
            assert int(r["refused_name"]) == by.get("refused-name", 0)
            assert int(r["refused_source"]) == by.get("refused-source", 0)
            assert int(r["upstream_failure"]) == by.get("upstream-failure", 0)
    assert rows[("plant-a", "level3")]["malformed"] == "1" and rows[("plant-a", "level3")]["verdict"] == "FAILED"
    assert rows[("plant-a", "level3")]["anomalies"] == "1"
    assert all(rows[("plant-b", lv)]["verdict"] == "passed" for lv in ("level3", "level4"))
    # one dataset, partitioned by site, level and day; read back it gives the same counts as the view
    root = tmp / "ds" / "connections"
    parts = {str(p.relative_to(root).parent) for p in root.rglob("*.parquet")}
    assert {"site=plant-a/level=level3/day=2025-03-01", "site=plant-b/level=level4/day=2025-03-02"} <= parts
    back = {(r.site, r.level): int(r.connections) for r in export.fleet_read(root).itertuples()}
    assert back == {k: int(v["connections"]) for k, v in rows.items()}


def test_fleet_file_with_relative_paths_and_passing_sites(fleet, capsys):
    tmp, a, b, la, lb = fleet
    lb2 = _logdir(tmp / "sub" / "logs-b2", _clean())
    c = _site_file(tmp / "sub" / "plant-c.yaml", "plant-c")
    f = tmp / "fleet.yaml"
    f.write_text("sites:\n  - {site: plant-b.yaml, logs: logs-b}\n  - {site: sub/plant-c.yaml, logs: sub/logs-b2}\n")
    assert main(["audit", "--fleet", str(f), "--run", "none", "--parquet", str(tmp / "ds")]) == 0
    out = capsys.readouterr().out
    assert "fleet: 2 of 2 site(s) passed" in out
    sites = {r.site for r in export.fleet_read(tmp / "ds" / "connections").itertuples()}
    assert sites == {"plant-b", "plant-c"}
    assert lb2.is_dir() and c.is_file()


@pytest.mark.parametrize("text, words", [
    ("- {site: plant-a.yaml}\n", ["sites[0].logs", "missing"]),
    ("- {site: plant-a.yaml, logs: logs-a, colour: red}\n", ["sites[0].colour", "unknown field"]),
    ("- {site: plant-a.yaml, logs: logs-a}\n- {site: plant-a.yaml, logs: logs-b}\n", ["sites[1]", "plant-a", "each"]),
    ("- {site: plant-a.yaml, logs: logs-a}\n- {site: plant-b.yaml, logs: nowhere}\n", ["nowhere", "no such folder"]),
    ("sites: {site: x}\n", ["non-empty list"]),
    ("[unclosed\n", ["valid YAML", "line 2"]),
])
def test_bad_fleet_file_is_exit_2_naming_the_field(fleet, capsys, text, words):
    tmp = fleet[0]
    f = tmp / "fleet.yaml"
    f.write_text(text)
    assert main(["audit", "--fleet", str(f), "--run", "none"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "=== site" not in captured.out                     # nothing was audited before the error
    for w in words:
        assert w in err


def test_bad_pairs_are_exit_2(fleet, capsys):
    tmp, a, b, la, lb = fleet
    assert main(["audit", str(la), str(lb), "--site", str(b)]) == 2
    assert "give its site file" in capsys.readouterr().err
    assert main(["audit", str(la), "--site", str(a), str(lb), "--site", str(b), "--run", str(tmp)]) == 2
    assert "belongs to one site" in capsys.readouterr().err
    assert main(["audit", "--fleet", str(tmp / "missing.yaml")]) == 2
    assert "the fleet file must exist" in capsys.readouterr().err
    # a level of the second site without its log: bad input before the first site is audited
    (lb / "level4.log").unlink()
    assert main(["audit", str(la), "--site", str(a), str(lb), "--site", str(b), "--run", "none"]) == 2
    cap = capsys.readouterr()
    assert "no log for level(s) level4" in cap.err and str(lb) in cap.err and "=== site" not in cap.out


def test_one_site_still_works_and_writes_the_dataset(fleet, capsys):
    tmp, a, b, la, lb = fleet
    assert main(["audit", "--site", str(b), str(lb), "--run", "none", "--parquet", str(tmp / "one")]) == 0
    out = capsys.readouterr().out
    assert "audit passed" in out and "fleet:" not in out
    assert {r.site for r in export.fleet_read(tmp / "one" / "connections").itertuples()} == {"plant-b"}
