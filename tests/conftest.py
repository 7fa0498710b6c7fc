"""Suite-wide settings. With LAYERNET_REQUIRE_LAB=1 (as in CI) a lab test that skips is a failure:
the lab tests are the proof that the layered network works, so they may not vanish quietly."""
from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LAYERNET_REQUIRE_LAB") == "1" and item.get_closest_marker("lab"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"lab test skipped but LAYERNET_REQUIRE_LAB=1: {reason}"


# ---- one deploy run on the lab, shared by the tests that read it (tests/lab/test_deploy_runbook.py checks the run,
# tests/browser/ opens its reports in a browser): the deploy runbook takes a few minutes, so it runs once per session.
# Like every lab test it needs the lab lock held around pytest (flock /tmp/layernet-lab.lock ...); prefix `dr`.
DEPLOY_PREFIX = "dr"


@pytest.fixture(scope="session")
def deploy_run(tmp_path_factory):
    """`layernet run deploy` on the lab site (prefix dr), the lab down at the start, brought up by the run and
    taken down by it at the end: .proc (the completed command), .run_dir, .left_namespaces (right after the run)."""
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from layernet.lab import commands

    why = commands.missing_requirements()
    if why:
        pytest.skip(why)
    repo = Path(__file__).resolve().parents[1]
    layernet = str(Path(sys.executable).parent / "layernet")
    site = ["--site", "params/lab.yaml", "-p", f"lab.prefix={DEPLOY_PREFIX}"]

    def run(*args):
        return subprocess.run([layernet, *args], capture_output=True, text=True, cwd=repo, timeout=1200)

    def namespaces():
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(f"{DEPLOY_PREFIX}-")]

    run("lab", "down", *site)
    try:
        proc = run("run", "deploy", *site, "--out", str(tmp_path_factory.mktemp("deploy-run")))
        left = namespaces()                  # what the run left behind (it brought the lab up, so: nothing)
    finally:
        run("lab", "down", *site)
    lines = proc.stdout.strip().splitlines()
    if not lines or not lines[-1].endswith("index.html"):
        pytest.fail(f"the deploy run wrote no index (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return SimpleNamespace(proc=proc, run_dir=Path(lines[-1]).parent, left_namespaces=left)
