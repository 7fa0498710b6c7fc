"""`layernet run RUNBOOK`: a runbook's stages run one after the other into a run folder, as a list of named steps.

check_inputs -> open_run_folder -> start_manifest -> (the lab's state at the start) -> announce -> run_stages
(each: execute_stage, or kept / skipped) -> (the lab taken down when this run found it down) -> finish
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from layernet import paths, targets
from layernet.errors import InputError
from layernet.report import write_index
from layernet.runfolder import write_json
from layernet.runfolder import check_out_dir, new_run_dir, read_manifest, results_dir
from layernet.runner.execute import notebook_parameters, run_stage, without_secrets
from layernet.runner.kernel import Ahead
from layernet.runner.manifest import new_manifest, now, write_run
from layernet.runner.parameters import apply_stage_params, check_overrides, check_stage_inputs
from layernet.runner.runbook import Runbook, RunnerInputError, Stage, load_runbook
from layernet.site import SiteError, load_site

DEFAULT_RUNS = paths.runs()
_KEPT = ("status", "start", "end", "duration_s", "error", "output", "report", "results")  # of a stage that passed before


@dataclass
class RunResult:
    run_dir: Path
    index_path: Path
    ok: bool
    manifest: dict


@dataclass
class Run:
    """A run's checked inputs and, once its folder is open, the folder and its manifest."""
    book: Runbook
    site: Any
    site_file: Path
    overrides: list[str]
    stage_params: list[str]
    dry_run: bool
    resume: Optional[str]
    previous: Optional[dict]            # the manifest of the run resumed
    run_id: str = ""
    run_dir: Path = Path()
    manifest: dict = field(default_factory=dict)
    first_todo: int = 0                 # the first stage to run (resuming: the first that did not pass)


def run_runbook(runbook: str, *, site_path: Optional[str] = None, overrides: Optional[list[str]] = None,
                dry_run: bool = False, resume: Optional[str] = None, out_dir: Optional[str] = None,
                keep_lab: bool = False, stage_params: Optional[list[str]] = None,
                progress: Callable[[str], None] = print) -> RunResult:
    """Validate everything, then run each stage. Raises RunnerInputError before any side effect on bad input."""
    run = check_inputs(runbook, site_path, list(overrides or []), dry_run, resume, list(stage_params or []))
    open_run_folder(run, out_dir, progress)
    start_manifest(run)
    # the lab is taken down at the end only when this run brought it up: nothing of it existed before (a lab
    # that is up, half up or left over belongs to someone else's work and is left as it is)
    target = targets.get_target(run.site)
    lab_state = target.session_state()
    record_lab_state(run, lab_state, progress)
    announce(run, progress)
    ok = True
    try:
        ok = run_stages(run, lab_state, progress)
    finally:
        if lab_state == "down" and not keep_lab and not run.dry_run:
            target.take_down(progress)
        index = finish(run)
    progress("all stages passed; index:" if ok else "run FAILED; index:")  # the caller prints the index path
    return RunResult(run.run_dir, index, ok, run.manifest)


def check_inputs(runbook: str, site_path: Optional[str], overrides: list[str], dry_run: bool, resume: Optional[str],
                 stage_params: list[str]) -> Run:
    """Every input, before anything is written: a resumed run's manifest (its site, overrides, dry run and stage
    parameters are the defaults), the overrides, the runbook, the stage parameters, the site, the stage inputs."""
    previous = read_resumed(resume)
    if previous is not None:
        site_path = site_path or previous["site"]["path"]
        overrides = overrides or [str(o) for o in previous["site"].get("overrides") or []]
        dry_run = dry_run or bool(previous.get("dry_run"))
        stage_params = stage_params or [str(o) for o in previous.get("stage_params") or []]
    if not site_path:
        raise RunnerInputError("--site is required, e.g. --site params/lab.yaml")
    check_overrides(overrides)
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
    check_stage_inputs(book, site)
    return Run(book, site, site_file, overrides, stage_params, dry_run, resume, previous)


def read_resumed(resume: Optional[str]) -> Optional[dict]:
    """The manifest of the run `--resume` names, or None for a new run."""
    if not resume:
        return None
    try:
        return read_manifest(resume)
    except InputError as exc:
        raise RunnerInputError(str(exc)) from None


def open_run_folder(run: Run, out_dir: Optional[str], progress: Callable[[str], None]) -> None:
    """A new run folder under --out (default runs/), or the resumed one; its results/ folder made."""
    if run.previous is None:
        parent = check_out_dir(out_dir) if out_dir is not None else DEFAULT_RUNS
        run.run_id, run.run_dir = new_run_dir(parent, run.book.name)
    else:
        run.run_id, run.run_dir = run.previous["run_id"], Path(str(run.resume)).resolve()
        if out_dir is not None:
            progress(f"note: --out {out_dir} is ignored with --resume: the run continues in {run.run_dir}")
    try:
        results_dir(run.run_dir).mkdir(exist_ok=True)
    except OSError as exc:
        raise RunnerInputError(f"--resume {run.resume}: the run folder is not writable ({exc.strerror or exc})") from None


def start_manifest(run: Run) -> None:
    """The manifest with every stage pending (resuming: the stages that passed before, up to the first that did not,
    kept as they were), written with the site's picture and the index."""
    run.first_todo = first_stage_to_run(run.book, run.previous)
    run.manifest = new_manifest(run.run_id, run.book, run.site_file, run.site, run.overrides, run.dry_run,
                                run.stage_params, run.previous)
    before = {s["name"]: s for s in (run.previous or {}).get("stages", [])}
    for i, entry in enumerate(run.manifest["stages"]):
        if i < run.first_todo and entry["name"] in before:
            entry.update({k: before[entry["name"]].get(k) for k in _KEPT})
    write_run(run.run_dir, run.manifest, run.site)


def first_stage_to_run(book: Runbook, previous: Optional[dict]) -> int:
    """0 for a new run; resuming, the first stage that did not pass (all passed: the number of stages)."""
    if not previous:
        return 0
    status = {s["name"]: s.get("status") for s in previous.get("stages", [])}
    return next((i for i, st in enumerate(book.stages) if status.get(st.name) != "passed"), len(book.stages))


def record_lab_state(run: Run, lab_state: Optional[str], progress: Callable[[str], None]) -> None:
    """The lab's state at the start in the manifest; a dry run against a lab that is not up says what that means."""
    run.manifest["lab_at_start"] = lab_state
    if lab_state is not None and lab_state != "up" and run.dry_run:
        progress(f"note: the lab of site {run.site.name} (prefix {run.site.lab.prefix}) is {lab_state}: this dry run "
                 "plans against it as it is and collects no live evidence; logs left from an earlier run are not current")


def announce(run: Run, progress: Callable[[str], None]) -> None:
    progress(f"layernet run {run.book.name}: {len(run.book.stages)} stage(s), site {run.site.name} ({run.site.target})"
             f"{' [dry run]' if run.dry_run else ''}")
    progress(f"run folder: {run.run_dir}")


def run_stages(run: Run, lab_state: Optional[str], progress: Callable[[str], None]) -> bool:
    """Each stage in turn: kept when it passed before, skipped when it would read stale lab logs, else executed
    (the next stage's kernel starts while it runs). The first stage that fails stops the run (the later ones
    skipped). True when none failed."""
    total = len(run.book.stages)
    ahead: dict[int, Ahead] = {}
    done: list[Ahead] = []
    try:
        for i, st in enumerate(run.book.stages):
            if i < run.first_todo:
                progress(f"[{i + 1}/{total}] {st.name}: passed earlier, kept")
            elif reads_stale_logs(run, st, lab_state):
                skip_stale_logs(run, i, st, lab_state, progress)
            else:
                for j in (i, next_executed(run, i + 1, lab_state)):
                    if j is not None and j not in ahead:
                        ahead[j] = Ahead(run.book.stages[j].notebook)
                done.append(ahead.pop(i))
                if not execute_stage(run, i, st, progress, done[-1]):
                    for later in run.manifest["stages"][i + 1:]:
                        later["status"] = "skipped"
                    return False
        return True
    finally:
        for kernel in [*ahead.values(), *done]:
            kernel.close()


def next_executed(run: Run, start: int, lab_state: Optional[str]) -> Optional[int]:
    """The first stage from `start` on that will be executed (not skipped for stale logs), or None."""
    return next((j for j in range(start, len(run.book.stages))
                 if not reads_stale_logs(run, run.book.stages[j], lab_state)), None)


def reads_stale_logs(run: Run, st: Stage, lab_state: Optional[str]) -> bool:
    """A dry run's stage that would read the logs of a lab that is not up: they are left from an earlier session."""
    return run.dry_run and lab_state not in (None, "up") and "log_dir" in st.parameters and not st.parameters["log_dir"]


def skip_stale_logs(run: Run, i: int, st: Stage, lab_state: Optional[str], progress: Callable[[str], None]) -> None:
    why = (f"skipped: the lab is {lab_state} and this is a dry run, so its logs are from an earlier "
           f"session, not current evidence (give -s {st.name}.log_dir=DIR to audit saved logs)")
    run.manifest["stages"][i].update(status="skipped", error=None, note=why)
    progress(f"[{i + 1}/{len(run.book.stages)}] {st.name}: {why}")
    write_json(run.run_dir / "manifest.json", run.manifest)


def execute_stage(run: Run, i: int, st: Stage, progress: Callable[[str], None], kernel: Optional[Ahead] = None) -> bool:
    """Stage i's notebook run with its parameters (the manifest shows them without secrets), in `kernel` when it
    was started ahead; manifest and index written after it. True when it passed."""
    params = notebook_parameters(st, run.run_dir, run.site_file, run.overrides, run.dry_run)
    run.manifest["parameters"][st.name] = without_secrets(params)
    ok = run_stage(i, len(run.book.stages), st, run.manifest["stages"][i], run.run_dir, params,
                   f"{run.manifest['run_id']} {st.name}", progress, kernel)
    write_json(run.run_dir / "manifest.json", run.manifest)
    write_index(run.run_dir, run.manifest)
    return ok


def finish(run: Run) -> Path:
    """The finish time in the manifest, the index written last; its path."""
    run.manifest["finished"] = now()
    write_json(run.run_dir / "manifest.json", run.manifest)
    return write_index(run.run_dir, run.manifest)
