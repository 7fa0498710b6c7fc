"""Every log a user collects: bad lines, rotated and compressed files, kubectl logs, live logs; the CLI and the
audit stage agree on failure and on probe traffic."""
import gzip
import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from layernet.audit import collect, compare, findings
from layernet.stages import audit as stage
from layernet.audit.parse import parse_logs
from audit_helpers import L3, ROOT, T, rec, refused_name

SITE = str(ROOT / "params" / "lab.yaml")


def cli(*args):
    from layernet.cli import main

    return main(["audit", *map(str, args)])


def good_dir(path, level3=None, level4=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "level3.log").write_text("\n".join(level3 or [rec(time=T(1), upstream_local=f"{L3}:5000")]) + "\n")
    (path / "level4.log").write_text("\n".join(level4 or [rec(time=T(1.002), level="level4", source=f"{L3}:5000")])
                                     + "\n")
    return path


# ----------------------------------------------------------------------------------------------- bad lines
def test_one_bad_line_never_stops_the_audit(allowlist):
    huge = rec(time=T(5), sni="a" * (20 << 20))                       # a 20 MB line
    lines = [
        rec(time=T(1)).encode(),
        rec(time=T(2), sni="badXX").encode().replace(b"badXX", b"bad\xff"),                   # invalid UTF-8
        rec(time=T(3), source="192.168.102.10").encode(),                                         # no source port
        json.dumps({"time": T(4), "listener_port": 443}).encode(),                                # time and port only
        huge.encode(),
        rec(time=T(6)).encode(),
    ]
    assert b"\xff" in lines[1]
    p = parse_logs({"level3": b"\n".join(lines) + b"\n"}, allowlist)
    df = p.connections
    reasons = dict(zip(p.malformed["line"], p.malformed["reason"]))
    assert reasons == {2: "invalid UTF-8 (the line is not text)"}
    assert list(df["line"]) == [1, 3, 4, 5, 6]
    assert p.report() == {"lines": 6, "records": 5, "malformed": 1, "blank": 0}
    r = df.set_index("line")
    assert r.loc[3, "source_ip"] == "192.168.102.10" and r.loc[3, "source_port"] == 0
    assert r.loc[3, "verdict"] == "allowed"
    assert r.loc[4, "verdict"] == "refused-name" and r.loc[4, "sni"] == ""                    # no chain: refused
    assert len(r.loc[5, "sni"]) == 20 << 20
    assert len(p.malformed["text"].iloc[0]) <= 300


def test_half_written_last_line_is_held_back(allowlist, tmp_path):
    f = tmp_path / "level3.log"
    f.write_text(rec(time=T(1)) + "\n" + rec(time=T(2))[:70])
    p = parse_logs({"level3": f}, allowlist)
    assert p.malformed.empty and p.incomplete == 1 and len(p.connections) == 1
    assert p.report()["incomplete"] == 1
    f.write_text(rec(time=T(1)) + "\n" + rec(time=T(2))[:70] + "\n")           # a finished line: malformed
    p = parse_logs({"level3": f}, allowlist)
    assert list(p.malformed["reason"]) == ["invalid or truncated JSON"] and p.incomplete == 0


def test_level_mismatch_future_and_backwards_times_are_flagged(site, allowlist):
    now = datetime(2025, 3, 1, 9, tzinfo=timezone.utc)
    lines = [rec(time=T(1)), rec(time=T(2), level="level4"), rec(time=T(3)),
             rec(time=T(1.5), duration=0),                                 # ends 1.5 s before line 3 ended
             rec(time="2025-03-01T10:00:00.000Z")]                          # an hour after collection
    p = parse_logs({"level3": lines}, allowlist, sources_are_levels=True, now=now)
    got = {r.check: (r.level, r.lines, r.first_line) for r in p.checks.itertuples()}
    assert got == {"level-mismatch": ("level3", 1, 2), "future-time": ("level3", 1, 5),
                   "time-backwards": ("level3", 1, 4)}
    a = findings.anomalies(p, site, allowlist, checks=p.checks)
    assert {"level-mismatch", "future-time", "time-backwards"} <= set(a["kind"])
    assert len(findings.problems(a)) >= 3
    # a long connection logged when it ends is not "backwards": Envoy writes the line at the end
    ok = parse_logs({"level3": [rec(time=T(1), duration=9000), rec(time=T(5), duration=6000)]}, allowlist)
    assert ok.checks.empty


# ----------------------------------------------------------------------------------------------- files
def test_rotated_and_compressed_logs_are_read_oldest_first(site, allowlist, tmp_path):
    (tmp_path / "level3.log.2.gz").write_bytes(gzip.compress((rec(time=T(1), cid=1) + "\n").encode()))
    (tmp_path / "level3.log.1").write_text(rec(time=T(2), cid=2) + "\n")
    (tmp_path / "level3.log").write_text(rec(time=T(3), cid=3) + "\n")
    (tmp_path / "level4.log.gz").write_bytes(gzip.compress((rec(time=T(4), level="level4", cid=4) + "\n").encode()))
    files = collect.read_logdir(tmp_path, ["level4", "level3"])
    assert files == {"level3": [tmp_path / "level3.log.2.gz", tmp_path / "level3.log.1", tmp_path / "level3.log"],
                     "level4": [tmp_path / "level4.log.gz"]}
    p = parse_logs(files, allowlist, sources_are_levels=True)
    assert list(p.connections["connection_id"]) == [1, 2, 3, 4] and p.malformed.empty and p.checks.empty
    per = findings.per_level(p, site).set_index("level")
    assert per.loc["level3", "connections"] == 3 and per.loc["level4", "connections"] == 1


def test_a_lab_state_folder_with_clusters_is_read_from_its_envoy_pods_oldest_pod_first(site, allowlist, tmp_path):
    """A lab with clusters keeps each level's Envoy output in its pod's folder on the node; a rolled Envoy left an
    older pod's log beside the new one's. Envoy's own lines there are not malformed."""
    import os

    old = tmp_path / "level3" / "cluster" / "pods" / "layernet_layernet-envoy-7d9-abcde_1234abcd" / "envoy.log"
    new = tmp_path / "level3" / "cluster" / "pods" / "layernet_layernet-envoy-5f1-fghij_5678efgh" / "envoy.log"
    other = tmp_path / "level3" / "cluster" / "pods" / "kube-system_coredns-6c8-xyz_9abc0def" / "coredns.log"
    for f, text in ((old, "[2025-03-01 08:00:00.000][1][info][main] starting\n" + rec(time=T(1), cid=1) + "\n"),
                    (new, rec(time=T(2), cid=2) + "\n"), (other, "[INFO] 10.0.0.1 A example.\n")):
        f.parent.mkdir(parents=True)
        f.write_text(text)
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    files = collect.read_logdir(tmp_path, ["level3"])
    assert files == {"level3": [old, new]}
    p = parse_logs(files, allowlist, sources_are_levels=True)
    assert list(p.connections["connection_id"]) == [1, 2] and p.malformed.empty and p.other == 1


def test_two_logs_for_one_level_is_an_error_naming_both(tmp_path):
    good_dir(tmp_path)
    (tmp_path / "level3.jsonl").write_text(rec() + "\n")
    for levels in (None, ["level4", "level3"]):
        with pytest.raises(collect.AuditInputError) as e:
            collect.read_logdir(tmp_path, levels)
        assert str(tmp_path / "level3.log") in str(e.value) and str(tmp_path / "level3.jsonl") in str(e.value)
    assert cli(tmp_path, "--site", SITE) == 2 and cli(tmp_path) == 2


def test_kubectl_logs_output_works(site, allowlist, tmp_path):
    lines = ["[2025-03-01 08:00:00.000][1][info][main] [source/server/server.cc:915] starting main dispatch loop",
             "2025-03-01T08:00:01.123456789Z " + rec(time=T(1)),
             "2025-03-01T08:00:02.000000000Z " + rec(time=T(2), sni="mcr.microsoft.com"),
             "2025-03-01T08:00:02.500000000Z [2025-03-01 08:00:02.500][1][warning][config] a warning"]
    f = tmp_path / "level3.log"
    f.write_text("\n".join(lines) + "\n")
    p = parse_logs({"level3": f}, allowlist)
    assert list(p.connections["sni"]) == ["management.azure.com", "mcr.microsoft.com"]
    assert list(p.connections["line"]) == [2, 3]
    assert p.malformed.empty and p.other == 2


# ----------------------------------------------------------------------------------------------- failure agreement
def run_audit(tmp_path, logs):
    from layernet.runner.run import run_runbook
    from layernet.runner.runbook import RunnerInputError

    with pytest.raises(RunnerInputError) as e:
        run_runbook("audit", site_path=SITE, stage_params=[f"audit.log_dir={logs}"], out_dir=str(tmp_path / "runs"),
                    progress=lambda *_: None)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())    # nothing ran
    return str(e.value)


def test_bad_log_folders_fail_both_with_exit_2(tmp_path, capsys):
    from layernet.site import load_site

    site = load_site(SITE)
    missing = tmp_path / "nope"
    empty = tmp_path / "empty"
    empty.mkdir()
    gz_bytes = tmp_path / "gz"
    gz_bytes.mkdir()
    for lv in ("level3", "level4"):
        (gz_bytes / f"{lv}.log").write_bytes(gzip.compress(b"x" * 1000))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "level3.log").write_text("not a record\n" * 5)
    (garbage / "level4.log").write_text(rec(level="level4") + "\n")
    zero = tmp_path / "zero"
    good_dir(zero)
    (zero / "level4.log").write_text("")
    for folder, words in ((missing, "no such folder"), (empty, "no log for level"), (gz_bytes, "gzip-compressed"),
                          (garbage, "no access-log record"), (zero, "empty")):
        assert cli(folder, "--site", SITE) == 2, folder
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (folder, err)
        assert words in run_audit(tmp_path, folder), folder
        with pytest.raises(collect.AuditInputError, match=words):            # the stage itself refuses too
            stage.load(site, str(folder))
    assert cli(empty) == 2


# ----------------------------------------------------------------------------------------------- probe traffic
def probe_run(tmp_path, start, end):
    rows = [{"level": "level2", "check": "refused", "host": "evil.example", "port": 443, "ok": True},
            {"level": "level2", "check": "refused", "host": "(no-sni)", "port": 443, "ok": True},
            {"level": "level3", "check": "refused", "host": "evil.example", "port": 443, "ok": True},
            {"level": "level2", "check": "tls", "host": "management.azure.com", "port": 443, "ok": True}]
    run = tmp_path / "run"
    compare.save_probe_rows(run, pd.DataFrame(rows))
    data = json.loads((run / "results" / "probes.json").read_text())
    data["saved_at"] = end.isoformat()
    (run / "results" / "probes.json").write_text(json.dumps(data))
    (run / "manifest.json").write_text(json.dumps({"site": {"name": "lab"}, "stages": [
        {"name": "infrastructure", "start": start.isoformat()}]}))
    return run


def probe_logs(tmp_path, extra3=()):
    level3 = [rec(time=T(1), upstream_local=f"{L3}:5000"),
              refused_name(time=T(2), sni="evil.example"),
              refused_name(time=T(3), sni=None), *extra3]
    level4 = [rec(time=T(1.002), level="level4", source=f"{L3}:5000"),
              refused_name(time=T(4), level="level4", source=f"{L3}:41000", sni="evil.example")]
    return good_dir(tmp_path / "logs", level3, level4)


def test_probe_traffic_is_expected_and_cli_and_stage_agree(tmp_path, capsys):
    from layernet.site import load_site

    site = load_site(SITE)
    start = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
    run = probe_run(tmp_path, start, start + timedelta(seconds=10))
    logs = probe_logs(tmp_path)
    # without the run: the probes' refusals are anomalies (no SNI, a refused attempt by level3's own workloads)
    assert cli(logs, "--site", SITE, "--run", "none") == 1
    assert "audit FAILED: 0 malformed line(s), 1 anomaly group(s)" in capsys.readouterr().out
    # with the run: expected, both pass
    assert cli(logs, "--site", SITE, "--run", run) == 0
    out = capsys.readouterr().out
    assert "audit passed" in out and "marked expected" in out
    a = stage.load(site, str(logs))
    an = stage.anomalies(a, run_dir=str(run))
    assert an["expected"].all() and set(an["kind"]) == {"no-sni", "child-workload-refused"}
    assert "audit passed" in stage.require_verdict(a, an)
    # an attempt outside the probes (another name) is not expected: both fail
    logs = probe_logs(tmp_path / "more", [refused_name(time=T(5), sni=None, source="192.168.102.77:1")])
    assert cli(logs, "--site", SITE, "--run", run) == 1
    a = stage.load(site, str(logs))
    an = stage.anomalies(a, run_dir=str(run))
    assert list(findings.problems(an)["source"]) == ["192.168.102.77"]
    from layernet.errors import StageFailed

    with pytest.raises(StageFailed, match="1 anomaly group"):
        stage.require_verdict(a, an)
