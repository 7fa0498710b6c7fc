"""Suite-wide settings. With LAYERNET_REQUIRE_LAB=1 (as in CI) a lab test that skips is a failure:
the lab tests are the proof that the layered network works, so they may not vanish quietly."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import labs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LAYERNET_REQUIRE_LAB") == "1" and item.get_closest_marker("lab"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"lab test skipped but LAYERNET_REQUIRE_LAB=1: {reason}"


# ---- lab tests on two cores: `make test` runs the `lab` tests with pytest-xdist `--dist loadscope`, and the scheduler
# below makes each address plan one scope. Labs on different address plans and prefixes run side by side
# (tests/harden/test_side_by_side.py proves it); labs on the same plan may not. tests/labs.py hands out the plans
# (and says which modules share one); a module it does not list is on params/lab.yaml's own plan, and those run one
# after the other in one scope. (xdist's own `loadgroup` does not group under pytest 9, which no longer lets a
# plugin rename test ids.)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByAddressPlan(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return labs.scope(str(config.rootpath / nodeid.split("::", 1)[0]))

    return ByAddressPlan(config, log)


# ---- the deploy runbook on the lab, run twice on one lab and shared by the tests that read it
# (tests/lab/test_deploy_runbook.py checks both runs, tests/browser/ opens the first run's reports in a browser), then
# the same stages walked through in JupyterLab in a browser on that lab (tests/browser/walkthrough.py, checked by
# tests/browser/test_jupyter.py): a run takes a few minutes, so it happens once per session. Like every lab test it needs the lab lock held around pytest
# (flock /tmp/layernet-lab.lock ...); prefix `dr`. That a run takes down a lab it brought up itself is checked by
# tests/lab/test_deploy_other_plant.py.
DEPLOY_PREFIX = labs.DEPLOY_PREFIX


@pytest.fixture(scope="session")
def deploy_run(tmp_path_factory):
    """`layernet run deploy --keep-lab` on the lab site (prefix dr) twice on the same lab, then the JupyterLab
    walkthrough on it, then the lab taken down: .proc/.run_dir (the first run), .second/.second_dir (the re-run, whose
    plans must be empty), .namespaces (the lab's namespaces between the runs), .walk (tests/browser/walkthrough.py's
    process, its JSON result in .walk_result, its wall time in .walk_s, the lab's namespaces after it in
    .walk_namespaces; .walk_skip says why it did not run), .down (the final `lab down`)."""
    import subprocess
    import sys
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

    def walkthrough():
        """The walkthrough in JupyterLab on the lab as the runs left it (up): the subprocess, its result, its time."""
        import json
        import time

        result = Path(out) / "walkthrough.json"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(repo / "tests" / "browser" / "walkthrough.py"), *site,
                               "--out", str(Path(out) / "jupyter"), str(result)],
                              capture_output=True, text=True, cwd=repo, timeout=900)
        if proc.returncode == 2:             # no browser here (no Chromium, no Playwright): the walk could not start
            return proc, None, None, proc.stderr.strip()
        data = json.loads(result.read_text()) if proc.returncode == 0 and result.is_file() else None
        return proc, data, round(time.monotonic() - t0, 1), None

    run("lab", "down", *site)
    walk = walk_result = walk_s = walk_skip = None
    walk_namespaces: list[str] = []
    try:
        first = run("run", "deploy", *site, "--out", out, "--keep-lab")
        kept = namespaces()
        second = run("run", "deploy", *site, "--out", out, "--keep-lab") if first.returncode == 0 else None
        if second is not None and second.returncode == 0:
            walk, walk_result, walk_s, walk_skip = walkthrough()
            walk_namespaces = namespaces()
    finally:
        down = run("lab", "down", *site)
    return SimpleNamespace(proc=first, run_dir=index(first), namespaces=kept, second=second,
                           second_dir=index(second) if second is not None else None, down=down,
                           left_namespaces=namespaces(), walk=walk, walk_result=walk_result, walk_s=walk_s,
                           walk_skip=walk_skip, walk_namespaces=walk_namespaces)
