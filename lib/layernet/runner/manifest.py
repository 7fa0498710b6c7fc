"""A run's manifest (manifest.json): runbook, site (path, sha256, overrides), parameters (no secrets), versions and
each stage's status. The same for a papermill run and a JupyterLab session's run (layernet.session)."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from layernet import __version__, clock, paths
from layernet.report import write_index, write_picture
from layernet.runfolder import write_json
from layernet.runner.runbook import Runbook
from layernet.topology import describe, site_picture

REPO_ROOT = paths.root()               # a checkout, or the files bundled into an installed package


def new_manifest(run_id: str, book: Runbook, site_file: Path, site, overrides: list[str], dry_run: bool = False,
                 stage_params: Optional[list[str]] = None, previous: Optional[dict] = None) -> dict[str, Any]:
    """A run's manifest before any stage ran: runbook, site (path, sha256, overrides), versions, every stage pending."""
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "runbook": book.name,
        "runbook_path": str(book.path),
        "site": {"path": str(site_file), "sha256": _sha256(site_file), "name": site.name, "target": site.target,
                 "overrides": overrides, "picture_alt": describe(site)},
        "dry_run": dry_run,
        "stage_params": list(stage_params or []),
        "parameters": {},
        "started": (previous or {}).get("started") or now(),
        "finished": None,
        "resumed": (previous or {}).get("resumed", 0) + (1 if previous else 0),
        "versions": tool_versions(),
        "stages": [stage_entry(st.name, st.notebook, st.parameters) for st in book.stages],
    }
    return manifest


def stage_entry(name: str, notebook: Path, parameters: dict) -> dict[str, Any]:
    """A stage's entry in the manifest, pending."""
    shown = str(notebook.relative_to(REPO_ROOT)) if notebook.is_relative_to(REPO_ROOT) else str(notebook)
    return {"name": name, "notebook": shown, "parameters": parameters, "status": "pending", "start": None, "end": None,
            "duration_s": None, "error": None, "output": None, "report": None, "results": {}}


def write_run(run_dir: Path, manifest: dict, site) -> None:
    """The run folder's first files: manifest.json, the site's picture and index.html."""
    write_json(run_dir / "manifest.json", manifest)
    write_picture(run_dir, site_picture(site))
    write_index(run_dir, manifest)


def tool_versions() -> dict[str, str]:
    import papermill

    versions = {"layernet": __version__, "papermill": papermill.__version__, "python": sys.version.split()[0]}
    try:
        out = subprocess.run([str(Path(sys.executable).parent / "envoy"), "--version"], capture_output=True, text=True, timeout=20)
        m = re.search(r"/(\d+\.\d+\.\d+)/", out.stdout)
        versions["envoy"] = m.group(1) if m else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        versions["envoy"] = "not found"
    return versions


def now() -> str:
    """The current time as the manifest writes it (UTC, to the second)."""
    return clock.now().isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
