"""Hostile input to `layernet audit`, one suite per class: damaged .gz logs, --run folders, --since values,
--monitor-endpoint URLs, --parquet folders and fleet files. Bad input is exit 2 before anything is read or written,
one `error:` line naming the flag and the fix, no traceback; a damaged log is a finding (exit 1), not a crash.
Every case runs the installed command (a new process), as a user would."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit_helpers import ROOT, T, rec

LAB = ROOT / "params" / "lab.yaml"
LAYERNET = str(Path(sys.executable).parent / "layernet")
SECRET = "Zq9SuperSecretValue7x"


def _run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, "audit", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _bad_input(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    err = proc.stderr
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "unexpected" not in err and SECRET not in err
    assert proc.stdout == ""                       # nothing audited, nothing printed before the error
    for w in words:
        assert w in err, (w, err)


def _lines(level: str, n: int, first: int = 0) -> bytes:
    return "".join(rec(time=T(i % 59), level=level, cid=first + i, source="192.168.103.10:4000"
                       if level == "level4" else "192.168.102.10:4000") + "\n" for i in range(n)).encode()


@pytest.fixture
def logs(tmp_path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "level4.log").write_bytes(_lines("level4", 20))
    (d / "level3.log").write_bytes(_lines("level3", 20))
    return d


# ----------------------------------------------------------------------------------------------- damaged .gz logs
def _damage(kind: str) -> bytes:
    data = gzip.compress(_lines("level3", 3000, 1000))
    return {"truncated": data[: len(data) // 2], "corrupt": data[:20] + b"\xff" * 300 + data[320:],
            "header-only": data[:10], "bad-crc": data[:-8] + b"\0\0\0\0" + data[-4:],
            "not-gzip": b"\x1f\x8b" + b"\x00" * 100, "trailing-garbage": data + b"garbage"}[kind]


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "header-only", "bad-crc", "not-gzip", "trailing-garbage"])
def test_a_damaged_gz_log_is_one_malformed_input_finding(logs, kind):
    (logs / "level3.log.1.gz").write_bytes(_damage(kind))
    proc = _run(logs, "--site", LAB, "--run", "none")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr and proc.stderr == ""
    found = [line for line in proc.stdout.splitlines() if line.startswith("malformed-input")]
    assert len(found) == 1 and "level3.log.1.gz" in found[0] and "damaged gzip file" in found[0], proc.stdout
    assert "40 connection(s)" in proc.stdout          # the readable logs are audited as usual
    assert "audit FAILED" in proc.stdout


def test_the_stage_reads_a_damaged_gz_the_same_way(logs):
    from layernet.audit.health import MALFORMED_INPUT
    from layernet.audit.parse import parse_logs

    (logs / "level4.log.gz").write_bytes(_damage("truncated"))
    parsed = parse_logs({"level4": [logs / "level4.log.gz", logs / "level4.log"], "level3": logs / "level3.log"})
    assert parsed.records == 40
    assert list(parsed.checks["check"]) == [MALFORMED_INPUT]


# ----------------------------------------------------------------------------------------------- --run
def _run_folder(root: Path, manifest=None, probes=None) -> Path:
    root.mkdir(parents=True)
    if manifest is not None:
        (root / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if probes is not None:
        (root / "results").mkdir()
        (root / "results" / "probes.json").write_text(probes if isinstance(probes, str) else json.dumps(probes))
    return root


MANIFEST = {"site": {"name": "lab"}, "stages": [{"name": "infrastructure", "start": "2025-03-01T07:59:00+00:00"}]}
RUN_CASES = [
    ("missing", None, None, "no such run folder"),
    ("not-a-run-folder", None, None, "no manifest.json there"),
    ("manifest-not-json", "{not json", None, "manifest.json is not readable JSON"),
    ("manifest-a-list", "[1, 2]", None, "not a run's manifest"),
    ("manifest-stages-text", {"stages": "x"}, None, "not a run's manifest"),
    ("probes-not-json", MANIFEST, '{"saved_at": "2025-03-01T0', "probes.json is not readable JSON"),
    ("probes-binary", MANIFEST, "\udcff", "probes.json is not"),
    ("probes-no-time", MANIFEST, {"rows": []}, "not what layernet run writes"),
    ("probes-bad-time", MANIFEST, {"saved_at": "yesterday", "rows": []}, "not what layernet run writes"),
    ("probes-rows-text", MANIFEST, {"saved_at": "2025-03-01T08:00:00+00:00", "rows": "x"}, "not what layernet run writes"),
    ("probes-a-list", MANIFEST, [1], "not what layernet run writes"),
    ("stage-start-bad", {"stages": [{"name": "infrastructure", "start": "soon"}]},
     {"saved_at": "2025-03-01T08:00:00+00:00", "stage": "infrastructure", "rows": []}, "not what layernet run writes"),
]


@pytest.mark.parametrize("name, manifest, probes, phrase", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_a_bad_run_folder_is_exit_2_before_any_work(logs, tmp_path, name, manifest, probes, phrase):
    run = tmp_path / name
    if name != "missing":
        if isinstance(probes, str) and "\udcff" in probes:
            _run_folder(run, manifest, None)
            (run / "results").mkdir()
            (run / "results" / "probes.json").write_bytes(b"\xff\xfe\x00binary")
        else:
            _run_folder(run, manifest, probes)
    out = tmp_path / "out"
    _bad_input(_run(logs, "--site", LAB, "--run", run, "--out", out, "--parquet", tmp_path / "pq"), "--run", phrase,
               "--run none")
    assert not out.exists() and not (tmp_path / "pq").exists()


def test_a_run_folder_without_probes_marks_nothing_expected(logs, tmp_path):
    run = _run_folder(tmp_path / "run", MANIFEST)
    proc = _run(logs, "--site", LAB, "--run", run)
    assert proc.returncode in (0, 1) and "no probe rows; no traffic is marked expected" in proc.stdout


def test_the_default_run_passes_over_a_damaged_one(logs, tmp_path):
    from layernet.audit.compare import find_run
    from layernet.site import load_site

    runs = tmp_path / "runs"
    good = _run_folder(runs / "20250301T070000Z-deploy-a", MANIFEST,
                       {"saved_at": "2025-03-01T08:00:00+00:00", "stage": "infrastructure", "rows": []})
    _run_folder(runs / "20250301T090000Z-deploy-b", MANIFEST, '{"saved_at": broken')
    assert find_run(load_site(LAB), runs) == good


def test_an_installed_audit_looks_for_runs_where_runs_are_written(logs, tmp_path, monkeypatch):
    """Installed from a wheel (no checkout), runs go to ./runs/: the audit's default run is looked for there too,
    not next to site-packages."""
    from layernet import paths
    from layernet.audit.compare import find_run
    from layernet.site import load_site

    monkeypatch.setattr(paths, "checkout", lambda: None)
    monkeypatch.chdir(tmp_path)
    good = _run_folder(tmp_path / "runs" / "20250301T070000Z-deploy-a", MANIFEST,
                       {"saved_at": "2025-03-01T08:00:00+00:00", "stage": "infrastructure", "rows": []})
    assert paths.runs() == tmp_path / "runs"
    assert find_run(load_site(LAB)) == good


# ----------------------------------------------------------------------------------------------- --since
@pytest.mark.parametrize("since, phrase", [
    ("yesterday", "not a time"), ("2h ago", "not a time"), ("-5h", "not a time"), ("1e9d", "not a time"),
    ("2h;id", "not a time"), ("٢h", "not a time"), ("99999999999d", "out of range"), ("0001-01-01", "out of range"),
    ("2999-01-01T00:00:00Z", "is in the future"), ("9999-12-31", "is in the future"), ("2025-13-45", "not a time"),
    ("x" * 500, "not a time"),
])
def test_since_that_is_not_a_past_time_is_exit_2(logs, tmp_path, since, phrase):
    _bad_input(_run(logs, "--site", LAB, "--run", "none", f"--since={since}", "--out", tmp_path / "out"), "--since", phrase)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- --monitor-endpoint
@pytest.mark.parametrize("url", ["http://api.loganalytics.io", "ftp://x.io", "api.loganalytics.io", "https://",
                                 "https:///v1", "https://x.io:99999", "https://x.io/?q=1", "https://x .io",
                                 f"https://u:{SECRET}@x.io", "javascript:alert(1)", "", "https://x.io\n"])
def test_monitor_endpoint_that_is_not_an_https_url_is_exit_2(tmp_path, url):
    site = tmp_path / "site.yaml"
    site.write_text(LAB.read_text() + "monitor: {workspace_id: 00000000-0000-0000-0000-000000000000}\n")
    for extra in ([], ["--workspace"]):
        _bad_input(_run("--site", site, "--monitor-endpoint", url, *extra, "--out", tmp_path / "out"),
                   "--monitor-endpoint", "https://")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- --parquet
@pytest.mark.parametrize("case", ["a-file", "root", "empty", "under-a-file", "name-too-long"])
def test_every_parquet_error_names_parquet(logs, tmp_path, case):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    value = {"a-file": a_file, "root": "/", "empty": "", "under-a-file": a_file / "sub", "name-too-long": "p" * 5000}[case]
    proc = _run(logs, "--site", LAB, "--run", "none", "--parquet", value)
    _bad_input(proc, "--parquet")
    assert "--out" not in proc.stderr


# ----------------------------------------------------------------------------------------------- fleet files
def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


FLEET_CASES = {
    "fifo": (None, "a regular fleet file"),
    "directory": (None, "this is a directory"),
    "six-mb": ("- {site: a.yaml, logs: a}\n" * 250_000, "at most 4 MB"),
    "deep-nesting": (_deep(200), "levels of nesting"),
    "duplicate-site-key": ("- site: a.yaml\n  site: b.yaml\n  logs: x\n", "'site' is set on line 1 and again on line 2"),
    "alias-bomb": ("a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                   "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e]\n",
                   "alias expansion"),
    "binary": ("\x00\x01\x02", "binary"),
    "two-documents": ("- {site: a.yaml, logs: a}\n---\n- {site: b.yaml, logs: b}\n", "one YAML document"),
    "python-tag": ("- !!python/object/apply:os.system [id]\n", "without tags"),
    "missing": (None, "the fleet file must exist"),
}


@pytest.mark.parametrize("case", list(FLEET_CASES))
def test_a_hostile_fleet_file_is_exit_2_quickly(tmp_path, case):
    text, phrase = FLEET_CASES[case]
    f = tmp_path / "fleet.yaml"
    if case == "fifo":
        os.mkfifo(f)
    elif case == "directory":
        f.mkdir()
    elif text is not None:
        f.write_text(text, encoding="latin-1" if case == "binary" else "utf-8")
    _bad_input(_run("--fleet", f, "--parquet", tmp_path / "pq", timeout=30), "--fleet", str(f), phrase)
    assert not (tmp_path / "pq").exists()
