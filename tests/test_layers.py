"""The layer contract of lib/layernet (pyproject.toml, [tool.importlinter]; `make test` runs `lint-imports`) holds, and
it is a real check: a wrong-way import, one hidden inside a function, and a module the contract does not name each
break it. And there is no import cycle at all, counting imports inside functions and parent packages."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(lib: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts over the package found in `lib`."""
    env = {**os.environ, "PYTHONPATH": str(lib)}
    return subprocess.run([str(LINT), "--no-cache", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          env=env, cwd=lib, timeout=120)


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of lib/layernet to break."""
    shutil.copytree(ROOT / "lib" / "layernet", tmp_path / "layernet", ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    return tmp_path


def test_the_contract_holds():
    out = lint(ROOT / "lib")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def test_a_wrong_way_import_breaks_it(copy):
    path = copy / "layernet" / "errors.py"
    path.write_text(path.read_text() + "\nfrom layernet import stages  # noqa\n")
    out = lint(copy)
    assert out.returncode != 0
    assert "layernet.errors is not allowed to import layernet.stages" in out.stdout


def test_an_import_inside_a_function_counts(copy):
    path = copy / "layernet" / "render" / "envoy.py"
    path.write_text(path.read_text() + "\n\ndef _late():\n    from layernet.targets import get_target  # noqa\n"
                    "    return get_target\n")
    out = lint(copy)
    assert out.returncode != 0
    assert "layernet.render is not allowed to import layernet.targets" in out.stdout


def test_a_module_outside_the_contract_breaks_it(copy):
    (copy / "layernet" / "newthing.py").write_text('"""A module nobody placed in a layer."""\n')
    out = lint(copy)
    assert out.returncode != 0
    assert "layernet.newthing" in out.stdout and "not listed as layers" in out.stdout


def imports(lib: Path) -> dict[str, list[str]]:
    """{module: the modules of layernet it imports}, read by grimp (as import-linter does) in the package of `lib`."""
    code = ("import grimp, json; g = grimp.build_graph('layernet', cache_dir=None, exclude_type_checking_imports=True); "
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=lib,
                         env={**os.environ, "PYTHONPATH": str(lib)}, timeout=120)
    return json.loads(out.stdout)


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Every group of modules that import each other in a circle (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:            # Tarjan's algorithm; the graph is small, recursion depth is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles_at_all():
    assert cycles(imports(ROOT / "lib")) == []


def test_the_cycle_check_finds_a_cycle_made_inside_functions(copy):
    for name, other in (("paths", "progress"), ("progress", "paths")):
        path = copy / "layernet" / f"{name}.py"
        path.write_text(path.read_text() + f"\n\ndef _late():\n    from layernet import {other}  # noqa\n")
    assert ["layernet.paths", "layernet.progress"] in cycles(imports(copy))
