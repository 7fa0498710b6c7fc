"""The runbook runner, with real papermill executions of small notebooks made by the tests."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from layernet.report import remote_references
from layernet.runner.run import run_runbook
from layernet.runner.runbook import RunnerInputError, load_runbook

REPO = Path(__file__).resolve().parents[2]
LAB_SITE = REPO / "params" / "lab.yaml"
LAYERNET = str(Path(sys.executable).parent / "layernet")


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('site_path = ""\nsite_overrides = []\ndry_run = False\nrun_dir = ""\nstage = ""\nflag = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test stage"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A runbook of three stages; the second raises while the file named by its `flag` parameter exists."""
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    _notebook(nbdir / "one.ipynb",
              "from layernet.runner import record_results\n"
              "from layernet.site import load_site\n"
              "site = load_site(site_path, site_overrides)\n"
              "record_results(run_dir, stage, {'levels': len(site.levels)})\n"
              "print('stage one sees', site.name)")
    _notebook(nbdir / "two.ipynb",
              "import os\n"
              "if os.path.exists(flag):\n"
              "    raise RuntimeError('probe matrix failed: 3 of 40 checks (the marker of stage two)')\n"
              "print('stage two fine')")
    _notebook(nbdir / "three.ipynb", "print('stage three')")
    flag = tmp_path / "fail-flag"
    book = tmp_path / "book.yaml"
    book.write_text(
        "name: testbook\nstages:\n"
        "  - {name: one, notebook: nb/one.ipynb}\n"
        f"  - {{name: two, notebook: nb/two.ipynb, parameters: {{flag: '{flag}'}}}}\n"
        "  - {name: three, notebook: nb/three.ipynb, timeout: 120}\n")
    return book


def _run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, "run", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_success_writes_notebooks_reports_manifest_and_index(book: Path, tmp_path: Path):
    out = tmp_path / "runs"
    proc = _run(str(book), "--site", str(LAB_SITE), "--out", str(out), "-p", "azure.location=westeurope")
    assert proc.returncode == 0, proc.stderr
    assert "without encryption" not in proc.stderr  # kernels run over Unix sockets, not loopback TCP
    assert not list(REPO.glob("**/kernel-*-ipc-*"))  # and their socket files are cleaned up
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    assert run_dir.parent == out
    assert re.fullmatch(r"\d{8}T\d{6}Z-testbook-[0-9a-f]{6}", run_dir.name), run_dir.name
    for stem in ("00-one", "01-two", "02-three"):
        assert (run_dir / f"{stem}.ipynb").is_file()
        assert (run_dir / f"{stem}.html").is_file()
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["runbook"] == "testbook"
    assert m["site"]["path"] == str(LAB_SITE)
    import hashlib
    assert m["site"]["sha256"] == hashlib.sha256(LAB_SITE.read_bytes()).hexdigest()
    assert m["site"]["overrides"] == ["azure.location=westeurope"]
    assert set(m["versions"]) >= {"layernet", "papermill", "envoy"}
    assert [s["status"] for s in m["stages"]] == ["passed"] * 3
    for s in m["stages"]:
        assert s["start"] and s["end"] and s["duration_s"] > 0 and s["error"] is None
        assert s["report"].endswith(".html") and s["output"].endswith(".ipynb")
    assert m["stages"][0]["results"] == {"levels": 3}
    assert m["parameters"]["two"]["flag"].endswith("fail-flag")
    assert m["parameters"]["one"]["site_path"] == str(LAB_SITE)
    # the site is passed as a path, never inlined: its content is not in the executed notebook's parameters
    nb = nbformat.read(str(run_dir / "00-one.ipynb"), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "site_path" in injected[0].source and "192.168.104.10" not in injected[0].source
    index = (run_dir / "index.html").read_text()
    stage_rows = index.split("<h2>Files</h2>")[0]
    assert stage_rows.count("<tr>") == 4 and "All 3 stage(s) passed" in index and "00-one.html" in index
    files = index.split("<h2>Files</h2>")[1]
    assert "href='manifest.json'" in files and "href='results/one.json'" in files and "href='02-three.ipynb'" in files
    # the override reached the notebook (westeurope is valid, so the site loaded with it)
    assert "stage one sees lab" in (run_dir / "00-one.html").read_text()


def test_reports_are_self_contained_and_code_free(book: Path, tmp_path: Path):
    res = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "r"), progress=lambda _: None)
    assert res.ok
    for html in res.run_dir.glob("*.html"):
        text = html.read_text()
        assert remote_references(text) == [], html
        assert "<script src=" not in text.replace("<script src=\"data:", "")
    one = (res.run_dir / "00-one.html").read_text()
    assert "record_results(run_dir" not in one  # code cells are not in the report
    assert "stage one sees lab" in one          # outputs are


def test_failing_stage_stops_run_and_reports_error(book: Path, tmp_path: Path):
    (tmp_path / "fail-flag").write_text("x")
    out = tmp_path / "runs"
    proc = _run(str(book), "--site", str(LAB_SITE), "--out", str(out))
    assert proc.returncode == 1
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    m = json.loads((run_dir / "manifest.json").read_text())
    assert [s["status"] for s in m["stages"]] == ["passed", "failed", "skipped"]
    assert "marker of stage two" in m["stages"][1]["error"]
    assert not (run_dir / "02-three.ipynb").exists()
    report = (run_dir / "01-two.html").read_text()
    assert "marker of stage two" in report and "RuntimeError" in report
    assert "os.path.exists(flag)" in report  # the failing cell's code stays visible
    index = (run_dir / "index.html").read_text()
    top = index.index("class='error'")
    assert top < index.index("<table>") and "Stage two failed" in index and "marker of stage two" in index


def test_a_run_reports_its_steps_in_order(book: Path, tmp_path: Path):
    """What a run prints, line by line and in order: the runbook and site, the run folder, each stage's start and
    verdict, the first failure ending the stages (the third never starts), the run's verdict. Nothing else."""
    (tmp_path / "fail-flag").write_text("x")
    lines: list[str] = []
    res = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "r"), progress=lines.append,
                      keep_lab=True)
    expected = [r"layernet run testbook: 3 stage\(s\), site lab \(lab\)",
                f"run folder: {re.escape(str(res.run_dir))}",
                r"\[1/3\] one: running \S*nb/one\.ipynb",
                r"\[1/3\] one: passed in \d+\.\d s",
                r"\[2/3\] two: running \S*nb/two\.ipynb",
                r"\[2/3\] two: failed in \d+\.\d s - RuntimeError: probe matrix failed: 3 of 40 checks "
                r"\(the marker of stage two\)",
                r"run FAILED; index:"]
    assert len(lines) == len(expected), lines
    for pattern, line in zip(expected, lines):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert not res.ok and [s["status"] for s in res.manifest["stages"]] == ["passed", "failed", "skipped"]


def test_resume_reruns_from_first_stage_that_did_not_pass(book: Path, tmp_path: Path):
    flag = tmp_path / "fail-flag"
    flag.write_text("x")
    first = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "r"), progress=lambda _: None)
    assert not first.ok
    stage_one_start = first.manifest["stages"][0]["start"]
    flag.unlink()
    lines: list[str] = []
    second = run_runbook(str(book), resume=str(first.run_dir), progress=lines.append)
    assert second.ok and second.run_dir == first.run_dir
    m = json.loads((first.run_dir / "manifest.json").read_text())
    assert [s["status"] for s in m["stages"]] == ["passed"] * 3
    assert m["stages"][0]["start"] == stage_one_start  # not re-run
    assert m["resumed"] == 1
    assert any("one: passed earlier, kept" in l for l in lines)
    assert (first.run_dir / "02-three.html").is_file()


def test_bad_site_exits_2_and_writes_nothing(book: Path, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(LAB_SITE.read_text().replace("node_ip: 192.168.103.10", "node_ip: 10.9.9.9"))
    out = tmp_path / "runs"
    proc = _run(str(book), "--site", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert "levels[1].node_ip" in proc.stderr and "10.9.9.9" in proc.stderr
    assert not out.exists()


def test_unknown_runbook_exits_2(tmp_path: Path):
    proc = _run("no-such-book", "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "unknown runbook 'no-such-book'" in proc.stderr and "deploy" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_secret_parameters_are_refused(book: Path, tmp_path: Path):
    text = book.read_text().replace("{name: three, notebook: nb/three.ipynb, timeout: 120}",
                                    "{name: three, notebook: nb/three.ipynb, parameters: {client_secret: abc}}")
    book.write_text(text)
    with pytest.raises(RunnerInputError, match=r"stages\[2\]\.parameters\.client_secret: secrets may not be passed"):
        load_runbook(str(book))
    proc = _run(str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"))
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    proc = _run("deploy", "--site", str(LAB_SITE), "-p", "azure.sas_token=abc", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "secrets may not be passed" in proc.stderr


def test_secret_in_environment_never_reaches_the_run_folder(tmp_path: Path):
    secret = "LnSecret-7f3a9c1e5b2d4f60-do-not-leak"
    env = dict(os.environ, AZURE_CLIENT_SECRET=secret, LAYERNET_TEST_TOKEN=secret)
    # the deploy runbook's first two stages (preflight, infrastructure), whose dry run needs no lab
    book = tmp_path / "deploy-head.yaml"
    book.write_text("name: deployhead\nstages:\n"
                    f"  - {{name: preflight, notebook: {REPO / 'notebooks' / '00-preflight.ipynb'}, timeout: 300}}\n"
                    f"  - {{name: infrastructure, notebook: {REPO / 'notebooks' / '01-infrastructure.ipynb'}, timeout: 900}}\n")
    proc = _run(str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), "--dry-run", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        assert secret.encode() not in p.read_bytes(), p


def test_stage_parameters_from_the_command_line(book: Path, tmp_path: Path):
    flag = tmp_path / "other-flag"
    flag.write_text("x")
    proc = _run(str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), "-s", f"two.flag={flag}")
    assert proc.returncode == 1  # the override reached stage two, whose flag file now exists
    run_dir = Path(proc.stdout.strip().splitlines()[-1]).parent
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["parameters"]["two"]["flag"] == str(flag) and m["stage_params"] == [f"two.flag={flag}"]
    for bad, phrase in [("nosuch.flag=1", "has no stage 'nosuch'"), ("two.other=1", "has no parameter 'other' (parameters: flag)"),
                        ("two=1", "expected STAGE.KEY=VALUE")]:
        p = _run(str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "bad"), "-s", bad)
        assert p.returncode == 2 and phrase in p.stderr, p.stderr
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------------------------- misuse: exit 2
def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`layernet run ARGS` in this process (input errors stop before any notebook runs)."""
    from layernet import cli

    code = cli.main(["run", *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["layernet", "run", *args], code, out, err)


def test_resume_of_a_folder_that_is_not_a_run_exits_2(book: Path, tmp_path: Path, capsys):
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    cases = [(None, "no manifest.json there"), ("{not json", "not readable JSON"), ("[1, 2]", "not a JSON object"),
             ('{"run_id": "x", "runbook": "testbook", "site": {}, "stages": []}', "site path or stages broken"),
             ('{"run_id": 7}', "run_id missing or of the wrong type")]
    for content, phrase in cases:
        if content is not None:
            (folder / "manifest.json").write_text(content)
        proc = _cli(capsys, str(book), "--resume", str(folder))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0] and "Traceback" not in proc.stderr
    proc = _cli(capsys, str(book), "--resume", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no such run folder" in proc.stderr


def test_resume_of_another_runbook_exits_2(book: Path, tmp_path: Path):
    (tmp_path / "fail-flag").write_text("x")
    first = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "r"), progress=lambda _: None)
    assert not first.ok
    before = (first.run_dir / "manifest.json").read_text()
    proc = _run("deploy", "--resume", str(first.run_dir))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --resume {first.run_dir}: that folder is a run of runbook 'testbook', not 'deploy'; "
        f"resume it with `layernet run testbook --resume {first.run_dir}`"]
    assert (first.run_dir / "manifest.json").read_text() == before


def test_out_that_cannot_hold_runs_exits_2(book: Path, tmp_path: Path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, phrase in [(str(afile), "is a file, not a folder"), ("/", "not the root folder"),
                        (str(afile / "sub"), "is a file, so no folder can be made under it")]:
        proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", out)
        assert proc.returncode == 2 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert afile.read_text() == "x"


def test_secret_values_in_parameters_are_refused_and_never_stored(book: Path, tmp_path: Path, capsys):
    secret = "Zq9SuperSecretValue7x"
    conn = f"Endpoint=sb://p.servicebus.windows.net/;SharedAccessKeyName=R;SharedAccessKey={secret}"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ" + secret + ".c2ln"
    for args, phrase in [(["-p", f"description={conn}"], "looks like a connection string"),
                         (["-p", f"description={jwt}"], "looks like a connection string, token or key"),
                         (["-s", f"two.flag={conn}"], "secrets may not be passed"),
                         (["-s", f"two.password={secret}"], "secrets may not be passed")]:
        proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), *args)
        assert proc.returncode == 2 and phrase in proc.stderr, proc.stderr
        assert secret not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


def test_stage_parameter_value_that_is_not_yaml_exits_2(book: Path, tmp_path: Path, capsys):
    proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), "-s", "two.flag=[unclosed")
    assert proc.returncode == 2 and "-s two.flag=[unclosed: the value after '=' is not one YAML value" in proc.stderr
    proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), "-s", ".flag=1")
    assert proc.returncode == 2 and "expected STAGE.KEY=VALUE" in proc.stderr
    proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), "-s", "two.flag=a",
                "-s", "two.flag=b")
    assert proc.returncode == 2 and "each parameter once: two.flag is given as -s 1 and again as -s 2" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_site_override_misuse_exits_2(book: Path, tmp_path: Path, capsys):
    for p, phrase in [("azure..location=westeurope", "without empty segments"),
                      ("levels[0].node_ip=1", "levels[0].node_ip: got 1"),
                      ("description={a: 1, a: 2}", "each key once")]:
        proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "runs"), "-p", p)
        assert proc.returncode == 2 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace stands for a half-up lab)")
def test_runner_leaves_a_lab_it_did_not_bring_up(book: Path, tmp_path: Path):
    """A half-up lab (one namespace of its prefix, no processes) is someone else's: the run ends without touching it."""
    ns = "rq-level4"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        lines: list[str] = []
        res = run_runbook(str(book), site_path=str(LAB_SITE), overrides=["lab.prefix=rq"],
                          out_dir=str(tmp_path / "r"), progress=lines.append)
        assert res.ok and res.manifest["lab_at_start"] == "partly up"
        assert ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any("taking the lab down" in line for line in lines)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_whole_word_secret_matching_keeps_ordinary_parameters(book: Path, tmp_path: Path):
    """`kansas` or `passes` are not secrets: such a stage parameter reaches the manifest."""
    text = book.read_text().replace("{name: three, notebook: nb/three.ipynb, timeout: 120}",
                                    "{name: three, notebook: nb/three.ipynb, parameters: {kansas_plant: passes}}")
    book.write_text(text)
    res = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "r"), progress=lambda _: None)
    assert res.manifest["parameters"]["three"]["kansas_plant"] == "passes"


@pytest.mark.parametrize("content, phrase", [
    (b"\x00\x01\x02binary", "binary file"),
    (b"name: x\nstages: 5\n", "stages: expected a list of stages"),
    (b"name: x\nstages: [{name: a, notebook: nb/one.ipynb, parameters: [1]}]\n", "parameters: expected a mapping"),
    (b"name: x\nstages: [{name: a, notebook: nb/one.ipynb, timeout: true}]\n", "timeout: expected a whole number"),
    (b"name: ../x\nstages: [{name: a, notebook: nb/one.ipynb}]\n", "name: expected letters, digits"),
    (b"name: x\nstages: [{name: ../a, notebook: nb/one.ipynb}]\n", "stages[0].name: expected letters"),
    (b"name: x\nname: y\nstages: []\n", "each key once"),
    (b"- a\n- b\n", "expected a mapping with name"),
])
def test_broken_runbook_exits_2(content, phrase, book: Path, tmp_path: Path):
    bad = book.parent / "bad.yaml"
    bad.write_bytes(content)
    with pytest.raises(RunnerInputError, match=re.escape(phrase)):
        load_runbook(str(bad))


def test_two_runs_at_once_in_one_notebook_folder_do_not_cross_talk(book: Path, tmp_path: Path):
    """Each kernel binds its own socket paths: two runs started together both pass and no kernel sees a
    message signed by the other run's key."""
    cmd = [LAYERNET, "run", str(book), "--site", str(LAB_SITE)]
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"runs{i}")], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
        assert "Invalid Signature" not in err and "Invalid message" not in err
    assert not list((book.parent / "nb").glob("kernel-ipc*"))


def test_a_declared_field_named_like_a_secret_may_be_overridden(book: Path, tmp_path: Path, capsys):
    """telemetry.mqtt.client_cert_secret names a Kubernetes secret; it is a site field, not a secret value."""
    res = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "r"), progress=lambda _: None,
                      overrides=["telemetry.mqtt.client_cert_secret=plant-mqtt-client"])
    assert res.ok and res.manifest["site"]["overrides"] == ["telemetry.mqtt.client_cert_secret=plant-mqtt-client"]
    proc = _cli(capsys, str(book), "--site", str(LAB_SITE), "--out", str(tmp_path / "bad"), "-p", "azure.client_secret=x")
    assert proc.returncode == 2 and "secrets may not be passed" in proc.stderr


def test_dry_run_with_the_lab_down_skips_reading_its_logs(tmp_path: Path):
    """A stage that reads the lab's logs (it declares log_dir) is skipped in a dry run while the lab is down: the
    logs on disk are from an earlier session. With a log folder given, it runs."""
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    _notebook(nbdir / "plan.ipynb", "print('planned')")
    _notebook(nbdir / "logs.ipynb", "log_dir = globals().get('log_dir', '')\n"
                                    "assert log_dir, 'would have read stale lab logs'\nprint('audited', log_dir)")
    book = tmp_path / "book.yaml"
    book.write_text("name: drybook\nstages:\n  - {name: plan, notebook: nb/plan.ipynb}\n"
                    "  - {name: audit, notebook: nb/logs.ipynb, parameters: {log_dir: ''}}\n")
    lines: list[str] = []
    res = run_runbook(str(book), site_path=str(LAB_SITE), overrides=["lab.prefix=qd"], dry_run=True,
                      out_dir=str(tmp_path / "r"), progress=lines.append)
    assert res.ok and res.manifest["lab_at_start"] == "down"
    assert [s["status"] for s in res.manifest["stages"]] == ["passed", "skipped"]
    assert "not current evidence" in res.manifest["stages"][1]["note"]
    assert any("the lab of site lab (prefix qd) is down" in line for line in lines)
    saved = tmp_path / "saved-logs"
    saved.mkdir()
    for level in ("level4", "level3"):  # one Envoy access-log record per proxy level
        (saved / f"{level}.log").write_text(json.dumps({"time": "2025-03-01T08:00:00.000Z", "listener_port": 443,
                                                        "sni": "management.azure.com"}) + "\n")
    res = run_runbook(str(book), site_path=str(LAB_SITE), overrides=["lab.prefix=qd"], dry_run=True,
                      out_dir=str(tmp_path / "r"), progress=lambda _: None, stage_params=[f"audit.log_dir={saved}"])
    assert [s["status"] for s in res.manifest["stages"]] == ["passed", "passed"]
