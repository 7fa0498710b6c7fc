"""A JupyterLab session is one run (layernet.session): the notebooks share its run folder, so the audit reads stage
01's probe rows and window from it as in a papermill run. The walkthrough itself, in a browser against the lab, is
tests/browser/test_jupyter.py."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from layernet import session
from layernet.audit import compare
from layernet.errors import InputError
from layernet.stages import preflight

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "params" / "lab.yaml"
EXAMPLE = REPO / "params" / "site-example.yaml"
DEPLOY_STAGES = ["preflight", "infrastructure", "arc", "aio", "telemetry", "audit"]


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def run(tmp_path, monkeypatch):
    folder = session.open_run(str(LAB), ["lab.prefix=zq"], str(tmp_path / "runs"))
    monkeypatch.setenv(session.ENV, str(folder))
    return folder


def test_a_session_opens_a_run_like_the_runner(run):
    m = _manifest(run)
    assert m["runbook"] == "deploy" and m["session"] == "jupyterlab" and m["finished"] is None
    assert [s["name"] for s in m["stages"]] == DEPLOY_STAGES
    assert all(s["status"] == "pending" and s["start"] is None for s in m["stages"])
    assert m["site"]["path"] == str(LAB) and m["site"]["overrides"] == ["lab.prefix=zq"]
    assert (run / "index.html").is_file() and (run / "site.svg").is_file() and (run / "results").is_dir()
    assert run.parent.name == "runs" and "-deploy-" in run.name


def test_bad_input_opens_no_run(tmp_path):
    with pytest.raises(InputError, match="lab.prefx"):
        session.open_run(str(LAB), ["lab.prefx=zq"], str(tmp_path / "runs"))
    with pytest.raises(InputError, match="secrets may not be passed"):
        session.open_run(str(LAB), ["azure.client_secret=abc"], str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_notebooks_join_the_session_and_keep_the_first_start(run):
    assert session.join("/given/by/papermill", "infrastructure") == "/given/by/papermill"
    assert _manifest(run)["stages"][1]["start"] is None, "a runner's folder is the runner's to record"
    assert session.join("", "infrastructure") == str(run)
    first = _manifest(run)["stages"][1]
    assert first["status"] == "started" and first["start"]
    time.sleep(1.1)
    session.join("", "infrastructure")                    # the notebook run again in the same session
    assert _manifest(run)["stages"][1]["start"] == first["start"]
    session.join("", "hardening")                         # not a deploy stage: recorded all the same
    assert _manifest(run)["stages"][-1]["name"] == "hardening"


def test_outside_a_session_a_notebook_records_nothing(monkeypatch):
    monkeypatch.delenv(session.ENV, raising=False)
    assert session.join("", "audit") == ""
    assert session.site_args() is None


def test_the_audit_finds_the_probe_window_of_the_session(run):
    """The fix: stage 01 in a session saves its probes where the audit of the same session reads them, with the
    window starting at the stage's start (without a shared run, the audit found no probes and flagged them)."""
    folder = session.join("", "infrastructure")
    compare.save_probe_rows(folder, pd.DataFrame([{"level": "level2", "check": "tls", "host": "x.example", "port": 443,
                                                   "ok": True}]))
    rows, start, end = compare.load_probes(session.join("", "audit"))
    assert len(rows) == 1 and start is not None and end is not None and start <= end
    assert start.isoformat(timespec="seconds") == _manifest(run)["stages"][1]["start"]


def test_a_stage_run_again_in_the_session_counts_every_probe(run):
    """Stage 01 run twice in one session: the window starts at its first start, so the audit must expect the probes
    of both runs (with only the last run's rows, the proxies logged twice what the rows said, and the comparison
    failed)."""
    probe = pd.DataFrame([{"level": "level2", "check": "refused", "host": "evil.example", "port": 443, "ok": True}])
    folder = session.join("", "infrastructure")
    compare.save_probe_rows(folder, probe)
    folder = session.join("", "infrastructure")
    compare.save_probe_rows(folder, probe)
    rows, start, end = compare.load_probes(folder)
    assert len(rows) == 2
    assert compare.expected_counts(rows, preflight.open_site("", []))["expected_refused"].sum() == 2


def test_a_resumed_stage_replaces_the_probes_of_before_its_start(run):
    """A stage started again with a new start (`layernet run --resume`): rows saved before it are not its own."""
    probe = pd.DataFrame([{"level": "level2", "check": "refused", "host": "evil.example", "port": 443, "ok": True}])
    folder = session.join("", "infrastructure")
    compare.save_probe_rows(folder, probe)
    time.sleep(1.1)
    m = _manifest(run)
    m["stages"][1]["start"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (run / "manifest.json").write_text(json.dumps(m))
    compare.save_probe_rows(folder, probe)
    assert len(compare.load_probes(folder)[0]) == 1


def test_the_notebooks_open_the_sessions_site(run):
    site = preflight.open_site("", [])
    assert site.lab.prefix == "zq"
    assert preflight.open_site(str(LAB), []).lab.prefix != "zq", "a notebook's own parameters win"
    assert preflight.resolve_site_path("") == LAB


def test_close_records_results_and_the_finish(run):
    folder = Path(session.join("", "preflight"))
    (folder / "results" / "preflight.json").write_text(json.dumps({"levels": 3}))
    session.close(folder)
    m = _manifest(folder)
    assert m["finished"] and m["stages"][0]["results"] == {"levels": 3}
    page = (folder / "index.html").read_text()
    assert "preflight" in page and "A JupyterLab session's run" in page and "is written again" not in page


def test_layernet_jupyter_refuses_bad_input_before_anything(tmp_path, capsys):
    """`layernet jupyter` (make jupyter) with a bad override: exit 2, one error naming it, no run folder, no lab, no
    JupyterLab. Its real start is the walkthrough in tests/browser/test_jupyter.py."""
    from layernet.cli import main

    assert main(["jupyter", "--site", str(EXAMPLE), "-p", "nope=1", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_layernet_jupyter_asked_to_stop_stops_jupyterlab_and_ends_the_session(tmp_path):
    """SIGTERM to `layernet jupyter` (a closed terminal, a service manager): JupyterLab is asked to stop too, and the
    session's run is closed; nothing of it keeps running. A site without a lab of this machine's (target kube)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": "t", "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    layernet = str(Path(sys.executable).parent / "layernet")
    proc = subprocess.Popen([layernet, "jupyter", "--site", str(EXAMPLE), "--out", str(tmp_path / "runs"), "--",
                             "--ServerApp.port_retries=0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    status = f"http://127.0.0.1:{port}/api/status?token=t"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(status, timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:                                # whatever happened, nothing of this session keeps running
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (folder,) = (tmp_path / "runs").iterdir()
    assert f"session closed; its run folder: {folder}" in out
    assert _manifest(folder)["finished"]
    with pytest.raises(OSError):
        urllib.request.urlopen(status, timeout=2)
