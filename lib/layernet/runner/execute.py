"""One stage of a run: its notebook executed with papermill (cell output streamed as progress), the code-free HTML
report exported, what it recorded read back, and its manifest entry filled in (passed or failed, with the error)."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

from layernet.progress import MARK
from layernet.report import notebook_to_html
from layernet.runner.kernel import Ahead
from layernet.runner.manifest import now
from layernet.runner import read_results
from layernet.runner.runbook import Stage
from layernet.site import is_secret_key, looks_secret

KERNEL_MANAGER = "layernet.runner.kernel.LocalKernelManager"


def notebook_parameters(st: Stage, run_dir: Path, site_file: Path, overrides: list[str], dry_run: bool) -> dict[str, Any]:
    """What papermill injects into the stage's parameters cell: the site as a path (never inlined), the run folder."""
    return {"site_path": str(site_file), "site_overrides": overrides, "dry_run": dry_run,
            "run_dir": str(run_dir), "stage": st.name, **st.parameters}


def without_secrets(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the manifest shows them: none named or looking like a secret."""
    return {k: v for k, v in params.items() if not is_secret_key(k) and not looks_secret(v)}


def run_stage(i: int, total: int, st: Stage, entry: dict, run_dir: Path, params: dict[str, Any], title: str,
              progress: Callable[[str], None], kernel: Optional[Ahead] = None) -> bool:
    """Stage number i (from 0) of `total`: its notebook and report as NN-<stage>.ipynb/.html, in `kernel` (started
    ahead) when given. True when it passed."""
    stem = f"{i:02d}-{st.name}"
    out_nb = run_dir / f"{stem}.ipynb"
    entry.update(status="running", start=now(), error=None, results={})
    t0 = time.monotonic()
    progress(f"[{i + 1}/{total}] {st.name}: running {entry['notebook']}")
    error = execute_notebook(st, out_nb, params, progress, kernel)
    dur = time.monotonic() - t0
    entry.update(end=now(), duration_s=round(dur, 2), output=out_nb.name)
    report_error = export_report(out_nb, run_dir / f"{stem}.html", title, entry)   # a failed stage has its report too
    error = error or report_error
    entry["results"] = read_results(run_dir, st.name)
    entry["status"] = "failed" if error else "passed"
    entry["error"] = error
    progress(f"[{i + 1}/{total}] {st.name}: {entry['status']} in {dur:.1f} s" + (f" - {error.splitlines()[0]}" if error else ""))
    return error is None


def execute_notebook(st: Stage, out_nb: Path, params: dict[str, Any], progress: Callable[[str], None],
                     kernel: Optional[Ahead] = None) -> Optional[str]:
    """The stage's notebook run by papermill into `out_nb`, in the notebook's folder, in the kernel started ahead
    for it (else papermill starts one); the error in one text, or None. The kernel shuts down after, in the
    background."""
    import papermill as pm

    km = kernel.take() if kernel is not None else None
    handler = _StreamToProgress(progress, prefix=f"      {st.name} | ")
    log = logging.getLogger("papermill")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        pm.execute_notebook(str(st.notebook), str(out_nb), parameters=params, cwd=str(st.notebook.parent),
                            kernel_name="python3", progress_bar=False, log_output=True,
                            execution_timeout=st.timeout, report_mode=False, kernel_manager_class=KERNEL_MANAGER,
                            km=km)
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error; others too
        return _summarise_error(exc)
    finally:
        log.removeHandler(handler)
        if kernel is not None:
            kernel.release()
    return None


def export_report(out_nb: Path, out_html: Path, title: str, entry: dict) -> Optional[str]:
    """The executed notebook as a code-free HTML report (entry["report"] names it); the export's error, or None.
    A notebook papermill never wrote has no report."""
    if not out_nb.is_file():
        return None
    try:
        notebook_to_html(out_nb, out_html, title=title)
    except Exception as exc:  # a report that cannot be written is itself a failure worth saying
        return f"report export failed: {exc}"
    entry["report"] = out_html.name
    return None


class _StreamToProgress(logging.Handler):
    """Stream cell outputs (papermill's log_output) to the console so long cells show progress."""

    def __init__(self, progress, prefix: str):
        super().__init__(logging.INFO)
        self.progress, self.prefix = progress, prefix

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for line in msg.rstrip().splitlines():
            if line.startswith(MARK):
                self.progress(self.prefix + line[len(MARK):])


def _summarise_error(exc: Exception) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    text = f"{ename}: {evalue}"
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[:2000]
