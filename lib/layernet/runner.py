"""Run a runbook: its stages (notebooks) one after the other with papermill, into a run folder.

runs/<UTC stamp>-<runbook>-<short id>/
    NN-<stage>.ipynb     the executed notebook
    NN-<stage>.html      its code-free, self-contained report
    results/<stage>.json what the stage recorded (counts, verdicts) - merged into the manifest
    manifest.json        runbook, site + sha256, parameters (no secrets), per-stage status, versions
    site.svg             the site's topology picture
    index.html           the verdict (the error when a stage failed), the stages, the site, files per stage
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from layernet import targets
from layernet import paths
from layernet import __version__
from layernet.audit.collect import AuditInputError, check_logdir, check_since
from layernet.errors import InputError
from layernet.progress import MARK
from layernet.report import notebook_to_html, write_index, write_json, write_picture
from layernet.runfolder import check_out_dir, new_run_dir, read_manifest
from layernet.site import SiteError, is_secret_key, load_site, looks_secret, parse_value
from layernet.site.model import declared_field
from layernet.site.load import YamlProblem, parse_yaml, read_site_text
from layernet.site.problems import show_path
from layernet.topology import describe, site_picture

REPO_ROOT = paths.root()               # a checkout, or the files bundled into an installed package
RUNBOOK_DIR = paths.runbooks()
DEFAULT_RUNS = paths.runs()
_STAGE_KEYS = {"name", "notebook", "parameters", "timeout"}


class RunnerInputError(InputError, ValueError):
    """Bad input to a run (invalid site, unknown runbook, secret-looking parameter). Nothing was run or written."""


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: Path
    parameters: dict
    timeout: Optional[int]


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    description: str
    stages: tuple[Stage, ...]


@dataclass
class RunResult:
    run_dir: Path
    index_path: Path
    ok: bool
    manifest: dict


def load_runbook(ref: str) -> Runbook:
    path = Path(ref)
    shown = ref if len(ref) <= 80 else ref[:80] + "..."
    if not path.suffix:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", ref):  # a name, never a path out of runbooks/
            known = ", ".join(sorted(p.stem for p in RUNBOOK_DIR.glob("*.yaml"))) or "none"
            raise RunnerInputError(f"unknown runbook {shown!r}: give a runbook name ({known}) or the path of a "
                                   "runbook .yaml file")
        path = RUNBOOK_DIR / f"{ref}.yaml"
    try:
        is_file = path.is_file()
    except OSError as exc:
        raise RunnerInputError(f"runbook {shown!r}: not a readable path ({exc.strerror or exc})") from None
    if not is_file:
        known = ", ".join(sorted(p.stem for p in RUNBOOK_DIR.glob("*.yaml"))) or "none"
        what = "is a directory" if path.is_dir() else f"no file {path}"
        raise RunnerInputError(f"unknown runbook {shown!r}: {what}; known runbooks: {known}")
    try:
        raw = parse_yaml(read_site_text(path))
    except SiteError as exc:  # not UTF-8 text, binary, too large
        raise RunnerInputError(f"runbook {path}: {exc.problems[0].expected}") from None
    except YamlProblem as exc:
        raise RunnerInputError(f"runbook {path}: {exc.where}: {exc.expected}") from None
    if not isinstance(raw, dict):
        raise RunnerInputError(f"runbook {path}: expected a mapping with name, description and stages")
    problems, stages = [], []
    listed = raw.get("stages")
    if listed is not None and not isinstance(listed, list):
        problems.append(f"{path}: stages: expected a list of stages, each a mapping with name and notebook")
        listed = []
    for i, st in enumerate(listed or []):
        where = f"{path}: stages[{i}]"
        if not isinstance(st, dict):
            problems.append(f"{where}: expected a mapping with name and notebook")
            continue
        extra = set(map(str, st)) - _STAGE_KEYS
        if extra:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(extra))[:200]}; allowed: {', '.join(sorted(_STAGE_KEYS))}")
        notebook = st.get("notebook")
        nb = (path.parent / str(notebook or "")).resolve()
        why = notebook_problem(notebook, nb, path)
        if why:
            problems.append(f"{where}.notebook: {str(notebook)[:80]!r} {why}")
        params = st.get("parameters") or {}
        if not isinstance(params, dict):
            problems.append(f"{where}.parameters: expected a mapping of parameter: value")
            params = {}
        for key in params:
            if is_secret_key(key) or looks_secret(params[key]):
                problems.append(f"{where}.parameters.{key}: secrets may not be passed as parameters; "
                                "set them in the environment or use the Azure credential chain")
        timeout = st.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1):
            problems.append(f"{where}.timeout: expected a whole number of seconds, e.g. 600")
            timeout = None
        name = st.get("name") or nb.stem
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", name):
            problems.append(f"{where}.name: expected letters, digits, '-' and '_' (it names the stage's files)")
            name = "stage"
        stages.append(Stage(name, nb, dict(params), timeout))
    if not stages and not problems:
        problems.append(f"{path}: stages: a runbook needs at least one stage")
    if problems:
        raise RunnerInputError("\n".join(problems))
    book_name = raw.get("name") or path.stem
    if not isinstance(book_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", book_name):
        raise RunnerInputError(f"runbook {path}: name: expected letters, digits, '-' and '_' (it names run folders)")
    return Runbook(book_name, path, str(raw.get("description") or ""), tuple(stages))


def notebook_problem(notebook: Any, resolved: Path, runbook: Path) -> Optional[str]:
    """Why a stage's `notebook:` cannot be run, or None. It must be an existing .ipynb file inside the notebooks
    folder or the runbook's own folder (links resolved): a runbook never runs a notebook from elsewhere."""
    if not isinstance(notebook, str) or not notebook:
        return f"is not a notebook path (relative to {runbook.parent})"
    roots = [paths.notebooks().resolve(), runbook.parent.resolve()]
    if not any(resolved.is_relative_to(r) for r in roots):
        return (f"leaves the notebooks folder: it resolves to {show_path(resolved)}; give a notebook inside "
                f"{roots[0]} or beside the runbook ({roots[1]})")
    if resolved.suffix != ".ipynb":
        return "is not a notebook (.ipynb) file"
    if not resolved.is_file():
        return f"does not exist (relative to {runbook.parent})"
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def _check_overrides(overrides: list[str]) -> None:
    for ov in overrides:
        key, _, value = str(ov).partition("=")
        if any(is_secret_key(part) for part in re.split(r"[.\[\]]", key)) and not declared_field(key.strip()):
            raise RunnerInputError(f"-p {key[:80]}=...: secrets may not be passed as parameters (the value is hidden); "
                                   "set them in the environment or use the Azure credential chain")
        if looks_secret(value):
            raise RunnerInputError(f"-p {key[:80]}=...: the value looks like a connection string, token or key (it is "
                                   "hidden and was not stored); secrets may not be passed as parameters")


def apply_stage_params(book: Runbook, items: list[str]) -> Runbook:
    """`STAGE.KEY=VALUE` overrides of stage parameters the runbook declares (e.g. audit.log_dir=/evidence/logs)."""
    stages = {s.name: s for s in book.stages}
    problems = []
    given: dict[str, int] = {}
    for n, item in enumerate(items, 1):
        key, sep, text = item.partition("=")
        stage, dot, param = key.partition(".")
        shown = f"{key[:80]}=..." if looks_secret(text) or is_secret_key(param) else (item if len(item) <= 120 else item[:120] + "...")
        value, why = parse_value(text) if sep else (None, None)
        declared = stages[stage].parameters.get(param) if stage in stages else None
        if isinstance(declared, str) and isinstance(value, date):     # YAML reads 2025-03-01 as a date: keep the text
            value = text.strip()
        if sep and key.strip() in given:
            problems.append(f"-s {shown}: each parameter once: {key.strip()[:80]} is given as -s {given[key.strip()]} and "
                            f"again as -s {n} (the second would silently win); drop one")
            continue
        given[key.strip()] = n
        if not sep or not dot or not param or not stage or "." in param:
            problems.append(f"-s {shown}: expected STAGE.KEY=VALUE, e.g. -s audit.log_dir=/evidence/logs")
        elif is_secret_key(param) or looks_secret(text):
            problems.append(f"-s {shown}: secrets may not be passed as parameters (the value is hidden and was not stored)")
        elif stage not in stages:
            problems.append(f"-s {shown}: runbook {book.name} has no stage {stage[:60]!r} (stages: {', '.join(stages)})")
        elif param not in stages[stage].parameters:
            known = ", ".join(stages[stage].parameters) or "none"
            problems.append(f"-s {shown}: stage {stage} has no parameter {param[:60]!r} (parameters: {known})")
        elif why is not None:
            problems.append(f"-s {shown}: the value after '=' is not one YAML value ({why}); quote text, "
                            "e.g. -s 'audit.since=\"2h\"'")
        elif declared is not None and _kind(value) != _kind(declared) \
                and not (_kind(value) == "a whole number" and _kind(declared) == "a number"):
            want = _kind(declared)
            problems.append(f"-s {shown}: stage {stage}'s {param} is {want} (the runbook's default is "
                            f"{declared!r}), not {_kind(value)}"
                            + (f"; quote it to pass text: -s '{key.strip()[:60]}=\"{text[:40]}\"'" if want == "text" else ""))
        else:
            st = stages[stage]
            stages[stage] = Stage(st.name, st.notebook, {**st.parameters, param: value}, st.timeout)
    if problems:
        raise RunnerInputError("\n".join(problems))
    return Runbook(book.name, book.path, book.description, tuple(stages[s.name] for s in book.stages))


def _kind(value: Any) -> str:
    """What a stage parameter value is, in words (a -s value must be what the runbook declares)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def _check_stage_inputs(book: Runbook, site) -> None:
    """Stage inputs that can be checked before anything runs: a folder of saved logs for the audit."""
    for st in book.stages:
        if st.parameters.get("since"):
            try:
                check_since(st.parameters["since"], f"-s {st.name}.since")
            except AuditInputError as exc:
                raise RunnerInputError(str(exc)) from None
        if st.parameters.get("log_dir"):
            try:
                check_logdir(st.parameters["log_dir"], site)
            except AuditInputError as exc:
                raise RunnerInputError(f"-s {st.name}.log_dir: {exc}") from None


def run_runbook(runbook: str, *, site_path: Optional[str] = None, overrides: Optional[list[str]] = None,
                dry_run: bool = False, resume: Optional[str] = None, out_dir: Optional[str] = None,
                keep_lab: bool = False, stage_params: Optional[list[str]] = None,
                progress: Callable[[str], None] = print) -> RunResult:
    """Validate everything, then run each stage. Raises RunnerInputError before any side effect on bad input."""
    overrides = list(overrides or [])
    stage_params = list(stage_params or [])
    previous: Optional[dict] = None
    if resume:
        run_dir = Path(resume).resolve()
        try:
            previous = read_manifest(resume)
        except InputError as exc:
            raise RunnerInputError(str(exc)) from None
        site_path = site_path or previous["site"]["path"]
        overrides = overrides or [str(o) for o in previous["site"].get("overrides") or []]
        dry_run = dry_run or bool(previous.get("dry_run"))
        stage_params = stage_params or [str(o) for o in previous.get("stage_params") or []]
    if not site_path:
        raise RunnerInputError("--site is required, e.g. --site params/lab.yaml")
    _check_overrides(overrides)
    book = load_runbook(runbook)
    if previous is not None and previous["runbook"] != book.name:
        raise RunnerInputError(f"--resume {resume}: that folder is a run of runbook {previous['runbook'][:60]!r}, not "
                               f"{book.name!r}; resume it with `layernet run {previous['runbook'][:60]} --resume {resume}`")
    book = apply_stage_params(book, stage_params)
    site_file = Path(site_path).resolve()
    try:
        site = load_site(site_file, overrides)
    except SiteError as exc:
        raise RunnerInputError(str(exc)) from None
    _check_stage_inputs(book, site)

    if previous is None:
        parent = check_out_dir(out_dir) if out_dir is not None else DEFAULT_RUNS
        run_id, run_dir = new_run_dir(parent, book.name)
    else:
        run_id = previous["run_id"]
        if out_dir is not None:
            progress(f"note: --out {out_dir} is ignored with --resume: the run continues in {run_dir}")
    try:
        (run_dir / "results").mkdir(exist_ok=True)
    except OSError as exc:
        raise RunnerInputError(f"--resume {resume}: the run folder is not writable ({exc.strerror or exc})") from None

    prev_status = {s["name"]: s for s in (previous or {}).get("stages", [])}
    first_todo = 0
    if previous:
        for i, st in enumerate(book.stages):
            if prev_status.get(st.name, {}).get("status") != "passed":
                first_todo = i
                break
        else:
            first_todo = len(book.stages)
    manifest = new_manifest(run_id, book, site_file, site, overrides, dry_run, stage_params, previous)
    for i, base in enumerate(manifest["stages"]):
        if i < first_todo and base["name"] in prev_status:
            base.update({k: prev_status[base["name"]].get(k) for k in ("status", "start", "end", "duration_s", "error", "output", "report", "results")})
    write_run(run_dir, manifest, site)

    # the lab is taken down at the end only when this run brought it up: nothing of it existed before (a lab
    # that is up, half up or left over belongs to someone else's work and is left as it is)
    target = targets.get_target(site)
    lab_state = target.session_state()
    manifest["lab_at_start"] = lab_state
    if lab_state is not None and lab_state != "up" and dry_run:
        progress(f"note: the lab of site {site.name} (prefix {site.lab.prefix}) is {lab_state}: this dry run plans "
                 "against it as it is and collects no live evidence; logs left from an earlier run are not current")
    progress(f"layernet run {book.name}: {len(book.stages)} stage(s), site {site.name} ({site.target}){' [dry run]' if dry_run else ''}")
    progress(f"run folder: {run_dir}")
    ok = True
    try:
        for i, st in enumerate(book.stages):
            entry = manifest["stages"][i]
            if i < first_todo:
                progress(f"[{i + 1}/{len(book.stages)}] {st.name}: passed earlier, kept")
                continue
            if dry_run and lab_state not in (None, "up") and "log_dir" in st.parameters and not st.parameters["log_dir"]:
                # the stage would read the lab's logs, which are left from an earlier session: not evidence of now
                why = (f"skipped: the lab is {lab_state} and this is a dry run, so its logs are from an earlier "
                       f"session, not current evidence (give -s {st.name}.log_dir=DIR to audit saved logs)")
                entry.update(status="skipped", error=None, note=why)
                progress(f"[{i + 1}/{len(book.stages)}] {st.name}: {why}")
                write_json(run_dir / "manifest.json", manifest)
                continue
            ok = _run_stage(i, st, entry, run_dir, site_file, overrides, dry_run, manifest, progress, len(book.stages))
            write_json(run_dir / "manifest.json", manifest)
            write_index(run_dir, manifest)
            if not ok:
                for later in manifest["stages"][i + 1:]:
                    later["status"] = "skipped"
                break
    finally:
        if lab_state == "down" and not keep_lab and not dry_run:
            target.take_down(progress)
        manifest["finished"] = _now()
        write_json(run_dir / "manifest.json", manifest)
        index = write_index(run_dir, manifest)
    progress("all stages passed; index:" if ok else "run FAILED; index:")  # the caller prints the index path
    return RunResult(run_dir, index, ok, manifest)


def new_manifest(run_id: str, book: Runbook, site_file: Path, site, overrides: list[str], dry_run: bool = False,
                 stage_params: Optional[list[str]] = None, previous: Optional[dict] = None) -> dict[str, Any]:
    """A run's manifest before any stage ran: runbook, site (path, sha256, overrides), versions, every stage pending.
    The same for a papermill run and a JupyterLab session's run (layernet.session)."""
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "runbook": book.name,
        "runbook_path": str(book.path),
        "site": {"path": str(site_file), "sha256": _sha256(site_file), "name": site.name, "target": site.target,
                 "overrides": overrides, "picture_alt": describe(site)},
        "dry_run": dry_run,
        "stage_params": list(stage_params or []),
        "parameters": {},
        "started": (previous or {}).get("started") or _now(),
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


def _run_stage(i, st: Stage, entry: dict, run_dir: Path, site_file: Path, overrides: list[str], dry_run: bool,
               manifest: dict, progress, total: int) -> bool:
    import papermill as pm

    stem = f"{i:02d}-{st.name}"
    out_nb = run_dir / f"{stem}.ipynb"
    out_html = run_dir / f"{stem}.html"
    params = {"site_path": str(site_file), "site_overrides": overrides, "dry_run": dry_run,
              "run_dir": str(run_dir), "stage": st.name, **st.parameters}
    manifest["parameters"][st.name] = {k: v for k, v in params.items() if not is_secret_key(k) and not looks_secret(v)}
    entry.update(status="running", start=_now(), error=None, results={})
    t0 = time.monotonic()
    progress(f"[{i + 1}/{total}] {st.name}: running {entry['notebook']}")
    error = None
    handler = _StreamToProgress(progress, prefix=f"      {st.name} | ")
    log = logging.getLogger("papermill")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        pm.execute_notebook(str(st.notebook), str(out_nb), parameters=params, cwd=str(st.notebook.parent),
                            kernel_name="python3", progress_bar=False, log_output=True,
                            execution_timeout=st.timeout, report_mode=False,
                            kernel_manager_class="layernet.runner.LocalKernelManager")
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error; others too
        error = _summarise_error(exc)
    finally:
        log.removeHandler(handler)
    dur = time.monotonic() - t0
    entry.update(end=_now(), duration_s=round(dur, 2), output=out_nb.name)
    if out_nb.is_file():
        try:
            notebook_to_html(out_nb, out_html, title=f"{manifest['run_id']} {st.name}")
            entry["report"] = out_html.name
        except Exception as exc:  # a report that cannot be written is itself a failure worth saying
            error = error or f"report export failed: {exc}"
    results_file = run_dir / "results" / f"{st.name}.json"
    if results_file.is_file():
        entry["results"] = json.loads(results_file.read_text())
    entry["status"] = "failed" if error else "passed"
    entry["error"] = error
    progress(f"[{i + 1}/{total}] {st.name}: {entry['status']} in {dur:.1f} s" + (f" - {error.splitlines()[0]}" if error else ""))
    return error is None


from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from traitlets import default  # noqa: E402


class LocalKernelManager(AsyncKernelManager):
    """Kernels talk to the runner over Unix sockets (IPC), not loopback TCP: no port is opened, and nothing
    another local user could connect to or read. Each kernel's sockets live in a private folder of their own
    (mode 0700), so two runs at once never bind the same socket path (jupyter's default, `kernel-ipc-N` in the
    working folder, is shared by every kernel started there)."""

    transport = "ipc"

    @default("ip")
    def _private_ipc_path(self) -> str:
        self._ipc_dir = tempfile.mkdtemp(prefix="layernet-kernel-")
        return os.path.join(self._ipc_dir, "kernel")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and getattr(self, "_ipc_dir", None):
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_results(run_dir: str, stage: str, data: dict) -> Optional[Path]:
    """Called from a notebook: save the stage's counts/verdicts so the runner puts them in the manifest."""
    if not run_dir:
        return None
    path = Path(run_dir) / "results" / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing.update(data)
    write_json(path, existing)
    return path
