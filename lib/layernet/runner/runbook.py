"""A runbook: its YAML file (runbooks/<name>.yaml or a path) read and checked into stages, each a notebook to run."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from layernet import paths
from layernet.errors import InputError
from layernet.site import SiteError, is_secret_key, looks_secret
from layernet.site.load import YamlProblem, parse_yaml, read_site_text
from layernet.site.problems import show_path

RUNBOOK_DIR = paths.runbooks()
_STAGE_KEYS = {"name", "notebook", "parameters", "timeout"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


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


def load_runbook(ref: str) -> Runbook:
    """The runbook named `ref` (runbooks/<ref>.yaml) or at the path `ref`; RunnerInputError naming every problem."""
    path = runbook_path(ref)
    raw = _read(path)
    problems: list[str] = []
    listed = raw.get("stages")
    if listed is not None and not isinstance(listed, list):
        problems.append(f"{path}: stages: expected a list of stages, each a mapping with name and notebook")
        listed = []
    stages = [st for i, item in enumerate(listed or []) if (st := _stage(item, f"{path}: stages[{i}]", path, problems))]
    if not stages and not problems:
        problems.append(f"{path}: stages: a runbook needs at least one stage")
    if problems:
        raise RunnerInputError("\n".join(problems))
    book_name = raw.get("name") or path.stem
    if not isinstance(book_name, str) or not _NAME.fullmatch(book_name):
        raise RunnerInputError(f"runbook {path}: name: expected letters, digits, '-' and '_' (it names run folders)")
    return Runbook(book_name, path, str(raw.get("description") or ""), tuple(stages))


def runbook_path(ref: str) -> Path:
    """The runbook file a name or path means; RunnerInputError listing the known runbooks when there is none."""
    path = Path(ref)
    shown = ref if len(ref) <= 80 else ref[:80] + "..."
    if not path.suffix:
        if not _NAME.fullmatch(ref):  # a name, never a path out of runbooks/
            raise RunnerInputError(f"unknown runbook {shown!r}: give a runbook name ({_known()}) or the path of a "
                                   "runbook .yaml file")
        path = RUNBOOK_DIR / f"{ref}.yaml"
    try:
        is_file = path.is_file()
    except OSError as exc:
        raise RunnerInputError(f"runbook {shown!r}: not a readable path ({exc.strerror or exc})") from None
    if not is_file:
        what = "is a directory" if path.is_dir() else f"no file {path}"
        raise RunnerInputError(f"unknown runbook {shown!r}: {what}; known runbooks: {_known()}")
    return path


def _known() -> str:
    return ", ".join(sorted(p.stem for p in RUNBOOK_DIR.glob("*.yaml"))) or "none"


def _read(path: Path) -> dict:
    try:
        raw = parse_yaml(read_site_text(path))
    except SiteError as exc:  # not UTF-8 text, binary, too large
        raise RunnerInputError(f"runbook {path}: {exc.problems[0].expected}") from None
    except YamlProblem as exc:
        raise RunnerInputError(f"runbook {path}: {exc.where}: {exc.expected}") from None
    if not isinstance(raw, dict):
        raise RunnerInputError(f"runbook {path}: expected a mapping with name, description and stages")
    return raw


def _stage(st: Any, where: str, path: Path, problems: list[str]) -> Optional[Stage]:
    """One `stages:` entry as a Stage; what is wrong with it goes to `problems` (None when it is not a mapping)."""
    if not isinstance(st, dict):
        problems.append(f"{where}: expected a mapping with name and notebook")
        return None
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
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"{where}.name: expected letters, digits, '-' and '_' (it names the stage's files)")
        name = "stage"
    return Stage(name, nb, dict(params), timeout)


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
