"""Hostile input to `layernet run`: runbook files whose `notebook:` leaves the notebooks folder, and stage
parameters (-s) whose value is not what the runbook declares. Each is exit 2 with one error naming the file and
field or the -s argument, before anything runs or is written (the --out folder is never made)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layernet.runner.runbook import RunnerInputError, load_runbook

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "params" / "lab.yaml"
LAYERNET = str(Path(sys.executable).parent / "layernet")
NOTEBOOK = REPO / "notebooks" / "00-preflight.ipynb"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([LAYERNET, "run", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)


def _book(folder: Path, notebook: str) -> Path:
    book = folder / "book.yaml"
    book.write_text(f"name: hostile\nstages:\n  - {{name: a, notebook: '{notebook}'}}\n")
    return book


def _escapes(tmp: Path) -> dict[str, str]:
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "x.ipynb").write_text(NOTEBOOK.read_text())
    inside = tmp / "books"
    (inside / "nb").mkdir(parents=True)
    os.symlink(outside / "x.ipynb", inside / "nb" / "link.ipynb")          # a link inside that points out
    os.symlink(outside, inside / "nb" / "dirlink")
    return {"parent-traversal": "../outside/x.ipynb", "deep-traversal": "../../../../../../etc/passwd",
            "absolute-outside": str(outside / "x.ipynb"), "absolute-etc": "/etc/hostname",
            "link-out": "nb/link.ipynb", "dir-link-out": "nb/dirlink/x.ipynb",
            "notebooks-then-up": str(REPO / "notebooks" / ".." / "README.md"),
            "params-file": str(REPO / "params" / "lab.yaml"), "home": "~/x.ipynb"}


CASES = ["parent-traversal", "deep-traversal", "absolute-outside", "absolute-etc", "link-out", "dir-link-out",
         "notebooks-then-up", "params-file"]


@pytest.mark.parametrize("case", CASES)
def test_a_notebook_outside_the_notebooks_folder_is_refused(tmp_path, case):
    nb = _escapes(tmp_path)[case]
    book = _book(tmp_path / "books", nb)
    with pytest.raises(RunnerInputError) as info:
        load_runbook(str(book))
    assert "stages[0].notebook" in str(info.value) and "leaves the notebooks folder" in str(info.value)
    proc = _run(book, "--site", LAB, "--out", tmp_path / "runs")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and f"{book}: stages[0].notebook" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("notebook, phrase", [("nb/readme.md", "is not a notebook (.ipynb) file"),
                                              ("nb/missing.ipynb", "does not exist"), ("", "is not a notebook path")])
def test_other_bad_notebooks_are_refused(tmp_path, notebook, phrase):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "readme.md").write_text("x")
    with pytest.raises(RunnerInputError, match="stages\\[0\\].notebook: .*" + phrase.replace("(", "\\(").replace(")", "\\)")):
        load_runbook(str(_book(tmp_path, notebook)))


def test_notebooks_inside_are_fine(tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "one.ipynb").write_text(NOTEBOOK.read_text())
    assert load_runbook(str(_book(tmp_path, "nb/one.ipynb"))).stages[0].notebook == tmp_path / "nb" / "one.ipynb"
    assert load_runbook(str(_book(tmp_path, str(NOTEBOOK)))).stages[0].notebook == NOTEBOOK
    for name in ("deploy", "audit", "harden"):
        assert load_runbook(name).stages


# ----------------------------------------------------------------------------------------------- -s values
@pytest.mark.parametrize("item, phrase", [
    ("audit.log_dir=5", "is text"), ("audit.log_dir=3.5", "is text"), ("audit.log_dir=true", "is text"),
    ("audit.log_dir=no", "is text"), ("audit.log_dir=[a, b]", "is text"), ("audit.log_dir={a: 1}", "is text"),
    ("audit.log_dir=null", "is text"), ("audit.since=30", "is text"), ("audit.since=yesterday", "-s audit.since"),
    ("audit.since=2999-01-01", "is in the future"), ("audit.log_dir=/no/such/folder", "no such folder"),
])
def test_a_stage_parameter_of_the_wrong_kind_is_exit_2(tmp_path, item, phrase):
    proc = _run("audit", "--site", LAB, "-s", item, "--out", tmp_path / "runs")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: -s audit.") and phrase in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_quoted_text_is_text():
    from layernet.runner.parameters import apply_stage_params

    book = apply_stage_params(load_runbook("audit"), ['audit.log_dir="5"', "audit.since=2h"])
    assert book.stages[0].parameters == {"log_dir": "5", "since": "2h"}
