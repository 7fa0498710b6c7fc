"""The walkthrough a person does in JupyterLab, in a real browser: `layernet jupyter` (what `make jupyter` runs,
with the same command line; port and token through JupyterLab's own environment variables), then every stage
notebook 00..05 in order: open it, Run > Run All Cells, wait until the kernel is idle, read every cell's output
(stage 01 twice, as a person re-running it in the same session).

    .venv/bin/python tests/browser/walkthrough.py --site params/lab.yaml -p lab.prefix=dr --out DIR RESULT.json

Writes RESULT.json: per notebook the code cells, how many ran, the error outputs, the verdict lines (the last
cell's output; the audit's last two) and the seconds it took; the session's run folder, JupyterLab's exit code and
the wall time. Headless Debian Chromium with the browser tests' flags (conftest.py); every request that is not to
the local JupyterLab is refused. The notebooks are never saved (autosave off in a settings folder of its own), so
the repository's notebooks stay without outputs. Exit 0 when the walk could be done, whatever it found; 2 when
there is no browser to do it with.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ARGS, CHROMIUM  # noqa: E402

NOTEBOOKS = ["00-preflight", "01-infrastructure", "02-arc", "03-aio", "04-telemetry", "05-audit"]
# stage 01 is run twice in its tab, as a person re-running it would: its second probes must count as the session's too
AGAIN = " again"
STEPS = [NOTEBOOKS[0], NOTEBOOKS[1], NOTEBOOKS[1] + AGAIN, *NOTEBOOKS[2:]]
VERDICT_CELLS = {"05-audit": 2}           # the audit ends with two verdicts (probe comparison, anomalies)
NOTEBOOK_TIMEOUT = 300                    # seconds for one notebook's Run All
VIEW = {"width": 1280, "height": 900}

# the state of the notebook on the page, read from JupyterLab's DOM
STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const text = e => (e.textContent || '').trim();      // textContent: cells off screen are not laid out (no innerText)
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const errors = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(o => text(o).slice(0, 2000));
  const outputs = cells.map(c => [...c.querySelectorAll('.jp-OutputArea-output')].map(text).filter(t => t).join('\\n'));
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel');
  return {tab: tab ? text(tab) : null, prompts: cells.map(c => c.querySelector('.jp-InputArea-prompt'))
            .map(p => p ? text(p) : ''), errors, outputs, status: indicator ? indicator.getAttribute('data-status') : null};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(site: str, params: list[str], out: str, work: Path) -> tuple[subprocess.Popen, str, str]:
    """`layernet jupyter` as make jupyter runs it; (process, base URL, token) once the server answers."""
    port, token = free_port(), secrets.token_hex(16)
    settings = work / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    env = {**os.environ, "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": token,
           "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime")}
    layernet = str(Path(sys.executable).parent / "layernet")
    argv = [layernet, "jupyter", "--site", site, *[a for p in params for a in ("-p", p)], "--out", out,
            "--", "--ServerApp.port_retries=0"]
    log = open(work / "jupyter.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: layernet jupyter exited with {proc.returncode}:\n{(work / 'jupyter.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                return proc, base, token
        except OSError:
            time.sleep(0.5)
    stop(proc, base, token)
    raise SystemExit(f"error: JupyterLab did not answer on {base} within 120 s")


def stop(proc: subprocess.Popen, base: str, token: str) -> int:
    """Shut JupyterLab down as its File > Shut Down does; the session is then closed by layernet jupyter."""
    try:
        req = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                     headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(req, timeout=10).close()
    except OSError as exc:
        print(f"note: {base}/api/shutdown: {exc}", file=sys.stderr)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(proc.pid, signal.SIGTERM)      # layernet jupyter asks JupyterLab to stop and ends the session
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:       # a JupyterLab that hangs in its shutdown: nothing of it may stay
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)


def code_cells(name: str) -> int:
    from layernet import paths

    nb = json.loads((paths.notebooks() / f"{name}.ipynb").read_text())
    return sum(c["cell_type"] == "code" for c in nb["cells"])


def run_notebook(page, name: str, again: bool = False) -> dict:
    """Open the notebook from the file browser (or, `again`, stay in its tab) and Run All; what it showed."""
    t0 = time.monotonic()
    cells = code_cells(name)
    if not again:
        # as a person does: double-click the notebook in the file browser; it opens in a tab of its own
        page.locator(".jp-DirListing-content .jp-DirListing-itemText", has_text=re.compile(rf"^{name}\.ipynb$")).dblclick()
        # opened: every code cell shown with its empty prompt, the kernel started and idle
        page.wait_for_function(f"() => {{ const s = ({STATE})(); return s && s.tab === '{name}.ipynb' && "
                               f"s.status === 'idle' && s.prompts.length === {cells} && "
                               "s.prompts.every(p => p === '[ ]:'); }", timeout=120_000, polling=500)
    before = max(_counts(page.evaluate(STATE)["prompts"]), default=0)
    started = (f"() => {{ const s = ({STATE})(); return s && (s.status !== 'idle' || "
               f"s.prompts.some(p => p === '[*]:' || (/^\\[(\\d+)\\]:$/.exec(p) && Number(/\\d+/.exec(p)[0]) > {before}))); }}")
    for attempt in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        # Run All queues every cell at once; on a busy machine JupyterLab has been seen to take the click and queue
        # nothing (every prompt still [ ], the kernel idle): a person would click again, and so does the walk
        try:
            page.wait_for_function(started, timeout=60_000, polling=250)
            break
        except Exception:
            if attempt:
                raise
    # Run All queues every cell ([*]); done when the first cell has a new execution count, nothing is queued or
    # running, and the kernel is idle again
    page.wait_for_function(f"() => {{ const s = ({STATE})(); const m = /^\\[(\\d+)\\]:$/.exec(s ? s.prompts[0] : ''); "
                           f"return m && Number(m[1]) > {before} && !s.prompts.some(p => p === '[*]:') && "
                           "s.status === 'idle'; }", timeout=NOTEBOOK_TIMEOUT * 1000, polling=500)
    state = page.evaluate(STATE)
    executed = sum(n > before for n in _counts(state["prompts"]))
    verdicts = [t for t in state["outputs"][-VERDICT_CELLS.get(name, 1):]]
    return {"cells": len(state["prompts"]), "executed": executed, "errors": state["errors"], "verdicts": verdicts,
            "seconds": round(time.monotonic() - t0, 1)}


def _counts(prompts: list[str]) -> list[int]:
    """The execution counts shown in the prompts (`[7]:`); queued, running and never-run cells have none."""
    return [int(m.group(1)) for p in prompts if (m := re.fullmatch(r"\[(\d+)\]:", p))]


def walk(site: str, params: list[str], out: str) -> dict:
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="layernet-walk-") as tmp:
        work = Path(tmp)
        proc, base, token = start(site, params, out, work)
        result: dict = {"notebooks": {}}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                try:
                    context = browser.new_context(viewport=VIEW)
                    local = re.compile(rf"^https?://(127\.0\.0\.1|localhost):{base.rsplit(':', 1)[1]}/")
                    refused = result.setdefault("refused", [])

                    def offline(route):
                        if local.match(route.request.url):
                            return route.continue_()
                        refused.append(route.request.url[:200])
                        return route.abort()

                    context.route("**/*", offline)
                    page = context.new_page()
                    page.goto(f"{base}/lab?token={token}")
                    page.locator(".jp-DirListing-content .jp-DirListing-itemText").first.wait_for(timeout=120_000)
                    for step in STEPS:
                        name, again = step.removesuffix(AGAIN), step.endswith(AGAIN)
                        try:
                            result["notebooks"][step] = run_notebook(page, name, again)
                        except Exception as exc:          # a notebook that never finished: said, and the walk stops
                            shot = Path(out) / f"walkthrough-{name}.png"
                            page.screenshot(path=str(shot))
                            result["notebooks"][step] = {"failed": f"{type(exc).__name__}: {str(exc)[:500]}",
                                                         "state": page.evaluate(STATE), "screenshot": str(shot)}
                            break
                finally:
                    browser.close()
        finally:
            result["jupyter_exit"] = stop(proc, base, token)
            log = (work / "jupyter.log").read_text(errors="replace")
            m = re.search(r"run folder of this session: (\S+)", log)
            result["run_dir"] = m.group(1) if m else None
            result["log_tail"] = log[-3000:]
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", required=True)
    ap.add_argument("-p", "--param", action="append", default=[])
    ap.add_argument("--out", required=True, help="parent folder of the session's run folder")
    ap.add_argument("result", help="where the JSON result is written")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"error: no {CHROMIUM}: apt-get install chromium (make setup does)", file=sys.stderr)
        return 2
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("error: playwright is a test extra: pip install -e '.[test]'", file=sys.stderr)
        return 2
    Path(args.result).write_text(json.dumps(walk(args.site, args.param, args.out), indent=1) + "\n")
    print(args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
