"""Run folders: where a run's files go, and reading back the manifest of an earlier run.

Shared by the CLI (`--out` of render, audit, harden) and the runner (`run --out`, `run --resume`): an output
folder must be a writable folder that is not `/`, and a resumed folder must hold a manifest this code wrote.
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from layernet import paths
from layernet.errors import InputError
from layernet.site.problems import show_path

MANIFEST = "manifest.json"


def results_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / paths.RESULTS


def results_file(run_dir: str | os.PathLike, stage: str) -> Path:
    return results_dir(run_dir) / f"{stage}.json"
_MANIFEST_KEYS = {"run_id": str, "runbook": str, "site": dict, "stages": list}


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The resolved output folder, created if missing; InputError when it is a file, `/`, or not writable."""
    text = show_path(path)
    if not str(path).strip():
        raise InputError(f"{flag}: give a folder, e.g. {flag} runs/")
    try:
        return _out_dir(Path(str(path)).expanduser().resolve(), text, flag)
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise InputError(f"{flag} {text}: not a usable folder ({exc.strerror or exc})") from None


def _out_dir(p: Path, text: str, flag: str) -> Path:
    if p == Path(p.anchor):
        raise InputError(f"{flag} {text}: not the root folder; give a folder of its own, e.g. {flag} runs/")
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag} {text}: is a file, not a folder; give a folder (it is created when missing)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {text}: {parent} is a file, so no folder can be made under it")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".layernet-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{flag} {text}: not writable ({exc.strerror or exc}); give a folder you can write to") from None
    return p


def new_run_dir(parent: Path, runbook: str) -> tuple[str, Path]:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp}-{runbook}-{uuid.uuid4().hex[:6]}"
    run_dir = parent / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise InputError(f"--out {parent}: cannot make the run folder ({exc.strerror or exc})") from None
    return run_id, run_dir


def read_manifest(run_dir: str | os.PathLike, flag: str = "--resume") -> dict[str, Any]:
    """The manifest of an earlier run; InputError (one line) when the folder or its manifest is not one."""
    d = Path(run_dir)
    shown = show_path(run_dir)
    try:
        return _read_manifest(d, shown, flag)
    except OSError as exc:
        raise InputError(f"{flag} {shown}: not a readable run folder ({exc.strerror or exc})") from None


def _read_manifest(d: Path, run_dir: str, flag: str) -> dict[str, Any]:
    if not d.is_dir():
        raise InputError(f"{flag} {run_dir}: no such run folder; give a folder made by `layernet run`")
    path = d / MANIFEST
    if not path.is_file():
        raise InputError(f"{flag} {run_dir}: no {MANIFEST} there; give a run folder made by `layernet run`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        raise InputError(f"{flag} {run_dir}: {MANIFEST} is not a valid manifest (not readable JSON); "
                         "start a new run instead") from None
    if not isinstance(data, dict):
        raise InputError(f"{flag} {run_dir}: {MANIFEST} is not a valid manifest (not a JSON object); start a new run instead")
    for key, typ in _MANIFEST_KEYS.items():
        if not isinstance(data.get(key), typ):
            raise InputError(f"{flag} {run_dir}: {MANIFEST} is not a valid manifest ({key} missing or of the wrong "
                             "type); start a new run instead")
    if not isinstance(data["site"].get("path"), str) or not all(isinstance(s, dict) for s in data["stages"]):
        raise InputError(f"{flag} {run_dir}: {MANIFEST} is not a valid manifest (site path or stages broken); "
                         "start a new run instead")
    return data


def write_json(path: Path, data: Any) -> None:
    """A run folder's JSON file (results, manifest), readable by people."""
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
