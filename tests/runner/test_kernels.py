"""Stage kernels started ahead: the next stage's kernel (with its notebook's imports run) starts while the current
stage runs, and no kernel outlives the run, whether its stage ran, failed or never started."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat

from layernet.runner.kernel import import_lines
from layernet.runner.run import run_runbook

REPO = Path(__file__).resolve().parents[2]
LAB_SITE = REPO / "params" / "lab.yaml"


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('site_path = ""\nsite_overrides = []\ndry_run = False\nrun_dir = ""\nstage = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


def _marker(nbdir: Path, name: str, out: Path) -> None:
    """A module that records the importing process and when it was imported."""
    (nbdir / f"{name}.py").write_text(f"import os, time\nopen({str(out / name)!r}, 'w').write(f'{{os.getpid()}} "
                                      f"{{time.time()}}')\n")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_next_kernel_starts_ahead_and_none_outlives_a_failed_run(tmp_path: Path):
    nbdir, out = tmp_path / "nb", tmp_path / "out"
    nbdir.mkdir()
    out.mkdir()
    for name in ("marker_one", "marker_two", "marker_three"):
        _marker(nbdir, name, out)
    _notebook(nbdir / "one.ipynb", f"import marker_one\nimport time\ntime.sleep(3)\n"
                                   f"open({str(out / 'one-end')!r}, 'w').write(str(time.time()))")
    _notebook(nbdir / "two.ipynb", "import marker_two\nraise RuntimeError('stage two stops the run')")
    _notebook(nbdir / "three.ipynb", "import marker_three\nprint('never runs')")
    book = tmp_path / "book.yaml"
    book.write_text("name: ahead\nstages:\n  - {name: one, notebook: nb/one.ipynb}\n"
                    "  - {name: two, notebook: nb/two.ipynb}\n  - {name: three, notebook: nb/three.ipynb}\n")
    res = run_runbook(str(book), site_path=str(LAB_SITE), out_dir=str(tmp_path / "runs"), progress=lambda _: None)
    assert [s["status"] for s in res.manifest["stages"]] == ["passed", "failed", "skipped"]
    one_end = float((out / "one-end").read_text())
    pids = {}
    for name in ("marker_one", "marker_two", "marker_three"):
        pid, at = (out / name).read_text().split()
        pids[name] = int(pid)
        if name == "marker_two":    # stage two's kernel was up, its imports run, while stage one still slept
            assert float(at) < one_end - 1.0, (at, one_end)
    assert len(set(pids.values())) == 3                  # a kernel of its own per stage
    assert "marker of" not in res.manifest["stages"][1]["error"] and "stage two stops the run" in res.manifest["stages"][1]["error"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.2)
    assert not [n for n, p in pids.items() if _alive(p)], "a stage kernel outlived the run"
    assert os.getpid() not in pids.values()


def test_import_lines_are_the_notebooks_own_imports(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("import prose"),
                nbformat.v4.new_code_cell("from a import b\nx = 1\nif x:\n    import indented\nimport c"),
                nbformat.v4.new_code_cell("%matplotlib inline\nimport magic_cell"),
                nbformat.v4.new_code_cell("import c\nfrom d import (e,\n    f)\nprint(2)")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert import_lines(path) == "from a import b\nimport c\nfrom d import (e,\n    f)"
    assert import_lines(tmp_path / "missing.ipynb") == ""
