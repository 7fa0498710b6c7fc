"""Where layernet's own files are: a source checkout, or the copy bundled into an installed package.

In a checkout (`pip install -e .`, `make setup`) the runbooks, notebooks and site files are the repository's
folders, and runs go to `<repository>/runs/`. A regular install (`pip install .`, a wheel) carries the same
folders inside the package (`layernet/bundled/`, copied at build time by setup.py), and runs go to `./runs/`.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = PACKAGE.parents[1]
BUNDLED = PACKAGE / "bundled"
FOLDERS = ("runbooks", "notebooks", "params")
RESULTS = "results"      # a run folder's results/<stage>.json: each stage's counts and verdicts (runfolder.py)
LAB_STATE = Path("/var/lib/layernet")    # every lab's state: configs, logs, PID records, CA, under its prefix


def lab_state(prefix: str) -> Path:
    """Where the lab with `prefix` keeps its state (the renderers name files there, the lab writes them)."""
    return LAB_STATE / prefix


def checkout() -> Path | None:
    """The source checkout this package runs from, or None for an installed package."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "runbooks").is_dir():
        return _CHECKOUT
    return None


def root() -> Path:
    """The folder that holds runbooks/, notebooks/ and params/."""
    return checkout() or BUNDLED


def runbooks() -> Path:
    return root() / "runbooks"


def notebooks() -> Path:
    return root() / "notebooks"


def params() -> Path:
    return root() / "params"


def runs() -> Path:
    base = checkout()
    return (base / "runs") if base else (Path.cwd() / "runs")
