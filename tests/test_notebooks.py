"""The committed notebooks: stripped (no outputs, no execution counts), one tagged parameters cell of plain
assignments that papermill can replace, and thin (no branch, loop, definition or comprehension in a cell: anything
with one belongs in the library, with a test). Every notebook a runbook names is here and passes."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LOGIC = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.IfExp, ast.Try, ast.With, ast.FunctionDef,
         ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_every_runbook_stage_is_a_committed_notebook():
    named = set()
    for book in sorted((ROOT / "runbooks").glob("*.yaml")):
        for stage in yaml.safe_load(book.read_text())["stages"]:
            named.add((book.parent / stage["notebook"]).resolve())
    assert named and named <= {p.resolve() for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stripped_and_thin(path: Path):
    cells = _cells(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, f"{path.name}: no code cell"
    for i, c in enumerate(code):
        assert c.get("outputs") == [], f"{path.name}: code cell {i} has outputs (run `make strip`)"
        assert c.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count (`make strip`)"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", f"{path.name}: needs exactly one parameters cell"
    assert tagged[0] is code[0], f"{path.name}: the parameters cell must be the first code cell"
    params = ast.parse(_source(tagged[0]))
    assert params.body and all(isinstance(n, ast.Assign) and isinstance(n.value, (ast.Constant, ast.List, ast.Dict))
                               for n in params.body), f"{path.name}: the parameters cell holds plain assignments only"
    for i, c in enumerate(code):
        logic = sorted({type(n).__name__ for n in ast.walk(ast.parse(_source(c))) if isinstance(n, LOGIC)})
        assert not logic, f"{path.name}: code cell {i} has {', '.join(logic)}: move it into lib/layernet"


def test_the_checks_refuse_what_they_should(tmp_path: Path):
    """The same checks on a notebook that breaks each rule once."""
    cells = _cells(NOTEBOOKS[0])
    bad = json.loads(json.dumps(cells))
    bad[[i for i, c in enumerate(bad) if c["cell_type"] == "code"][-1]]["source"] = ["x = [a for a in b]\n"]
    nb = json.loads(NOTEBOOKS[0].read_text())
    nb["cells"] = bad
    broken = tmp_path / "broken.ipynb"
    broken.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="ListComp"):
        test_notebook_is_stripped_and_thin(broken)
    nb["cells"] = json.loads(json.dumps(cells))
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x"]}]
    broken.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="has outputs"):
        test_notebook_is_stripped_and_thin(broken)


# what a stage's kernel must not import to record its results: nbformat validates with jsonschema, whose format
# checker builds an RFC 3987 grammar at import (seconds per notebook, six notebooks a deploy)
HEAVY = ("nbformat", "jsonschema", "rfc3987_syntax")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_imports_leave_out_the_report_writer(path: Path):
    import subprocess
    import sys

    imports = [line for c in _cells(path) if c["cell_type"] == "code"
               for line in _source(c).splitlines() if line.startswith(("from ", "import "))]
    assert imports, f"{path.name}: no import"
    probe = "\n".join(imports + ["import sys", f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"])
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"{path.name} imports {proc.stdout.strip()}"


def test_talking_to_a_cluster_leaves_out_jsonschema():
    """The kubernetes client's package imports kubernetes-validate where it can, and that imports jsonschema's format
    checker: seconds in every stage that reads a cluster. The environment must not have it (the manifest tests use
    their own copy)."""
    import subprocess
    import sys

    probe = ("import sys, kubernetes, layernet.targets.kube\n"
             f"print(' '.join(m for m in {HEAVY!r} + ('kubernetes_validate',) if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"importing the kubernetes client imports {proc.stdout.strip()}"


def test_the_command_line_skips_the_iri_grammar():
    """nbformat validates with jsonschema, which imports rfc3987-syntax where it can: about 3 s of grammar building in
    every `layernet run`. The command line keeps it out; notebooks still validate."""
    import subprocess
    import sys

    probe = ("import sys\nfrom layernet import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "import nbformat\nnbformat.validate(nbformat.v4.new_notebook())\n"
             "print(sys.modules.get('rfc3987_syntax') is None)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
