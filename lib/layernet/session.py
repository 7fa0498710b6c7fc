"""A JupyterLab session is one run: the stage notebooks opened in it share one run folder.

`layernet jupyter` (what `make jupyter` calls) opens the session's run folder under runs/ before JupyterLab starts,
with the same manifest a `layernet run deploy` writes (layernet.runner.manifest.new_manifest), and hands it to every kernel
as $LAYERNET_RUN_DIR. A notebook's first cell calls `join(run_dir, stage)`: under papermill the runner's folder is
kept; in the session the stage's start is written into the manifest, so the audit (stage 05) finds stage 01's probe
rows and window there and marks the probe traffic expected, exactly as in a papermill run. A stage run again in the
same session keeps its first start, so the window covers every probe the session sent. A new session is a new run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from layernet import targets
from layernet import paths
from layernet.errors import InputError
from layernet.lab import commands
from layernet.runfolder import check_out_dir, new_run_dir, read_manifest, results_dir, results_file, write_json
from layernet.site import SiteError, load_site

ENV = "LAYERNET_RUN_DIR"
SITE_ENV = "LAYERNET_SITE"
RUNBOOK = "deploy"


def open_run(site_path: str, overrides: Optional[list[str]] = None, out_dir: Optional[str] = None) -> Path:
    """A new run folder for a session (under `out_dir`, default runs/): the deploy runbook's manifest with every stage
    pending, the site's picture and an index. Raises InputError (nothing written) on a bad site or --out."""
    from layernet.runner.manifest import new_manifest, write_run
    from layernet.runner.parameters import check_overrides
    from layernet.runner.runbook import RunnerInputError, load_runbook

    overrides = list(overrides or [])
    try:
        check_overrides(overrides)
    except RunnerInputError as exc:
        raise InputError(str(exc)) from None
    site_file = Path(site_path).resolve()
    try:
        site = load_site(site_file, overrides)
    except SiteError as exc:
        raise InputError(str(exc)) from None
    book = load_runbook(RUNBOOK)
    parent = check_out_dir(out_dir) if out_dir is not None else paths.runs()
    run_id, run_dir = new_run_dir(parent, book.name)
    results_dir(run_dir).mkdir()
    manifest = new_manifest(run_id, book, site_file, site, overrides)
    manifest["session"] = "jupyterlab"
    write_run(run_dir, manifest, site)
    return run_dir


def current() -> Optional[Path]:
    """The session's run folder ($LAYERNET_RUN_DIR), or None outside a session."""
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


def join(run_dir: str, stage: str) -> str:
    """The run folder a notebook records into: `run_dir` when a runner gave one, else the session's (its stage marked
    started, once), else "" (a notebook opened outside a session records nothing)."""
    if run_dir:
        return run_dir
    folder = current()
    if folder is None:
        return ""
    manifest = read_manifest(folder, f"${ENV}")
    entry = next((s for s in manifest["stages"] if s.get("name") == stage), None)
    if entry is None:                    # a notebook that is not a deploy stage (01h-hardening): recorded all the same
        from layernet.runner.manifest import stage_entry

        entry = stage_entry(stage, paths.notebooks() / f"{stage}.ipynb", {})
        manifest["stages"].append(entry)
    if not entry.get("start"):
        entry.update(status="started", start=_now())
    _write(folder, manifest)
    return str(folder)


def site_args(site_path: str = "", overrides: Optional[list[str]] = None) -> Optional[tuple[str, list[str]]]:
    """(site path, overrides) of the session's run when a notebook names neither; None otherwise."""
    folder = current()
    if site_path or overrides or folder is None:
        return None
    site = read_manifest(folder, f"${ENV}")["site"]
    return site["path"], [str(o) for o in site.get("overrides") or []]


def close(folder: Path) -> None:
    """At the end of a session: the results each stage recorded, the finish time, the index written again."""
    manifest = read_manifest(folder, f"${ENV}")
    manifest["finished"] = _now()
    _write(folder, manifest)


def _write(folder: Path, manifest: dict) -> None:
    from layernet.report import write_index

    for entry in manifest["stages"]:
        results = results_file(folder, entry["name"])
        if results.is_file():
            try:
                entry["results"] = json.loads(results.read_text(encoding="utf-8"))
            except ValueError:
                pass
    tmp = folder / "manifest.json.tmp"
    write_json(tmp, manifest)
    tmp.replace(folder / "manifest.json")
    write_index(folder, manifest)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def jupyter(site_path: str, overrides: Optional[list[str]] = None, out_dir: Optional[str] = None,
            extra: Optional[list[str]] = None, progress: Callable[[str], None] = print) -> int:
    """JupyterLab on notebooks/ as one run: a lab site's lab that is not up is brought up first (and taken down when
    JupyterLab exits, Ctrl-C or SIGTERM included); a lab that was up is left as it is. Returns JupyterLab's exit
    code."""
    try:
        site = load_site(Path(site_path).resolve(), list(overrides or []))
    except SiteError as exc:
        raise InputError(str(exc)) from None
    if out_dir is not None:
        check_out_dir(out_dir)
    target = targets.get_target(site)
    brought_up = False
    if target.session_state() not in (None, "up"):
        if commands.cli_up(site) != 0:
            return 1
        brought_up = True
    rc = 1
    try:
        folder = open_run(site_path, overrides, out_dir)
        progress(f"run folder of this session: {folder}")
        env = {**os.environ, SITE_ENV: str(Path(site_path).resolve()), ENV: str(folder)}
        argv = [str(Path(sys.executable).parent / "jupyter"), "lab", "--allow-root", "--no-browser",
                f"--notebook-dir={paths.notebooks()}", *(extra or [])]
        proc = subprocess.Popen(argv, env=env)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is JupyterLab's to answer
        # asked to stop (SIGTERM): JupyterLab is asked the same, and the session still ends as below
        term = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            rc = proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, term)
        close(folder)
        progress(f"session closed; its run folder: {folder}")
    finally:
        if brought_up:
            progress("taking down the lab this session brought up")
            target.take_down(progress)
    return rc
