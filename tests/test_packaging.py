"""pyproject.toml is the one list of dependencies: environment.yml lists exactly the same (runtime and test extra,
same bounds), and every third-party module that lib/ imports comes from a distribution pyproject.toml names itself
(not one that only arrives as somebody else's dependency)."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI name
CONDA_TO_PYPI = {"pyyaml": "pyyaml", "python-kubernetes": "kubernetes"}
NOT_DEPENDENCIES = {"python", "pip"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req(text: str) -> tuple[str, str]:
    """("name", "specifier without spaces") of a requirement line (no extras or markers are used here)."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*", text)
    assert m and "[" not in text and ";" not in text, f"unexpected requirement form: {text!r}"
    return _norm(m.group(1)), m.group(2).replace(" ", "")


def pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    reqs = [_req(r) for r in lines]
    assert len({n for n, _ in reqs}) == len(reqs), "a distribution is named twice in pyproject.toml"
    return dict(reqs)


def environment() -> tuple[dict[str, str], list[str]]:
    """Requirements of environment.yml keyed by PyPI name, and its pip lines that are not requirements."""
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    out, other = {}, []
    for item in deps:
        if isinstance(item, dict):
            for line in item["pip"]:
                if line.startswith("-"):
                    other.append(line)
                    continue
                name, spec = _req(line)
                assert name not in out, f"{name} listed twice in environment.yml"
                out[name] = spec
            continue
        name, spec = _req(item)
        if name in NOT_DEPENDENCIES:
            continue
        name = CONDA_TO_PYPI.get(name, name)
        assert name not in out, f"{name} listed twice in environment.yml"
        out[name] = spec
    return out, other


def test_environment_yml_lists_exactly_the_dependencies_of_pyproject():
    want, (have, other) = pyproject(), environment()
    missing = {n: s for n, s in want.items() if n not in have}
    extra = {n: s for n, s in have.items() if n not in want}
    bounds = {n: (want[n], have[n]) for n in want.keys() & have.keys() if want[n] != have[n]}
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"
    assert not bounds, f"bounds differ (pyproject, environment.yml): {bounds}"
    assert other == ["-e ."], other


def _imports(path: Path) -> set[str]:
    """Every absolute import of a module (dotted), including those inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def _module_owners() -> dict[str, set[str]]:
    """Installed module or package (dotted) -> the distributions that ship files for it. A namespace package
    (azure, azure.mgmt) belongs to several; its subpackages to one each."""
    owners: dict[str, set[str]] = {}
    for dist in md.distributions():
        name = _norm(dist.metadata["Name"])
        for f in dist.files or []:
            parts = f.parts
            if not parts or not parts[-1].endswith(".py") or ".." in parts or parts[0].endswith((".dist-info", ".data")):
                continue
            mod = list(parts[:-1]) + ([] if parts[-1] == "__init__.py" else [parts[-1][:-3]])
            for i in range(1, len(mod) + 1):
                owners.setdefault(".".join(mod[:i]), set()).add(name)
    return owners


def _owner(module: str, owners: dict[str, set[str]]) -> set[str]:
    """The distributions of the longest installed prefix of `module` that one distribution alone ships."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        found = owners.get(".".join(parts[:i]))
        if found and len(found) == 1:
            return found
    return owners.get(parts[0], set())


def test_every_third_party_import_in_lib_is_declared_in_pyproject():
    declared = set(pyproject())
    owners = _module_owners()
    undeclared, unknown = {}, []
    for path in sorted((ROOT / "lib").rglob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "layernet":
                continue
            dists = _owner(module, owners)
            if not dists:
                unknown.append(f"{module} ({path.relative_to(ROOT)})")
            elif not dists & declared:
                undeclared.setdefault(f"{module} from {'/'.join(sorted(dists))}", path.relative_to(ROOT).as_posix())
    assert not unknown, f"imported by lib/ but not installed: {unknown}"
    assert not undeclared, f"imported by lib/ but not declared in pyproject.toml: {undeclared}"


def test_the_check_finds_an_undeclared_import():
    """The owner lookup is exact enough to catch the two that were missing (PyJWT, requests) and a namespace
    subpackage (azure.core, not azure-identity)."""
    owners = _module_owners()
    assert _owner("jwt", owners) == {"pyjwt"}
    assert _owner("requests.adapters", owners) == {"requests"}
    assert _owner("azure.core.exceptions", owners) == {"azure-core"}
    assert _owner("azure.mgmt.resource.deployments", owners) == {"azure-mgmt-resource-deployments"}
    assert _owner("azure.mgmt.resource.resources", owners) == {"azure-mgmt-resource"}
