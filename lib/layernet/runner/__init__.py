"""Run a runbook: its stages (notebooks) one after the other with papermill, into a run folder.

runs/<UTC stamp>-<runbook>-<short id>/
    NN-<stage>.ipynb     the executed notebook
    NN-<stage>.html      its code-free, self-contained report
    results/<stage>.json what the stage recorded (counts, verdicts) - merged into the manifest
    manifest.json        runbook, site + sha256, parameters (no secrets), per-stage status, versions
    site.svg             the site's topology picture
    index.html           the verdict (the error when a stage failed), the stages, the site, files per stage

Here: a stage's results, which a notebook records (record_results) and the runner reads back. run.py: the run as
named steps (`layernet run`); runbook.py the runbook file; parameters.py the command line's -p/-s values;
manifest.py the manifest; execute.py one stage with papermill; kernel.py the kernels' Unix sockets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from layernet.runfolder import write_json
from layernet.runfolder import results_file


def record_results(run_dir: str, stage: str, data: dict) -> Optional[Path]:
    """Called from a notebook: save the stage's counts/verdicts so the runner puts them in the manifest."""
    if not run_dir:
        return None
    path = results_file(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing.update(data)
    write_json(path, existing)
    return path


def read_results(run_dir: Path, stage: str) -> dict[str, Any]:
    """What the stage recorded; {} when it recorded nothing."""
    path = results_file(run_dir, stage)
    return json.loads(path.read_text()) if path.is_file() else {}
