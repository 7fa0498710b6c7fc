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


# ---- the deploy runbook on the lab, run twice on one lab and shared by the tests that read it
# (tests/lab/test_deploy_runbook.py checks both runs, tests/browser/ opens the first run's reports in a browser): a run
# takes a few minutes, so it happens once per session. Like every lab test it needs the lab lock held around pytest
# (flock /tmp/layernet-lab.lock ...); prefix `dr`. That a run takes down a lab it brought up itself is checked by
# tests/lab/test_deploy_other_plant.py.
DEPLOY_PREFIX = "dr"


@pytest.fixture(scope="session")
def deploy_run(tmp_path_factory):
    """`layernet run deploy --keep-lab` on the lab site (prefix dr) twice on the same lab, then the lab taken down:
    .proc/.run_dir (the first run), .second/.second_dir (the re-run, whose plans must be empty), .namespaces (the
    lab's namespaces between the runs), .down (the final `lab down`)."""
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
    out = str(tmp_path_factory.mktemp("deploy-run"))

    def run(*args):
        return subprocess.run([layernet, *args], capture_output=True, text=True, cwd=repo, timeout=1200)

    def namespaces():
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listed.splitlines() if line.startswith(f"{DEPLOY_PREFIX}-")]

    def index(proc):
        lines = proc.stdout.strip().splitlines()
        if not lines or not lines[-1].endswith("index.html"):
            pytest.fail(f"the deploy run wrote no index (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                        f"{proc.stderr[-3000:]}")
        return Path(lines[-1]).parent

    run("lab", "down", *site)
    try:
        first = run("run", "deploy", *site, "--out", out, "--keep-lab")
        kept = namespaces()
        second = run("run", "deploy", *site, "--out", out, "--keep-lab") if first.returncode == 0 else None
    finally:
        down = run("lab", "down", *site)
    return SimpleNamespace(proc=first, run_dir=index(first), namespaces=kept, second=second,
                           second_dir=index(second) if second is not None else None, down=down,
                           left_namespaces=namespaces())
