"""The site's cross-field checks: one module per concern under layernet/site/checks, each `check(doc) -> list[Problem]`,
every one registered in a phase that validate_site runs."""
from __future__ import annotations

import importlib
import types
import typing
from pathlib import Path

import pytest
import yaml

from layernet.site import SiteError, checks, validate_site
from layernet.site.checks.doc import Doc
from layernet.site.problems import Problem

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(checks.__file__).parent
NOT_CHECKS = {"__init__", "doc"}       # the registry itself, and what every check reads


def registered() -> list[types.ModuleType]:
    return [m for phase in checks.PHASES for m in phase]


def test_every_check_module_is_registered_once():
    files = sorted(p.stem for p in CHECKS.glob("*.py") if p.stem not in NOT_CHECKS)
    names = [m.__name__.rsplit(".", 1)[-1] for m in registered()]
    assert sorted(names) == files, "a check module must be in a phase of layernet.site.checks (RAW, SECTIONS, SITE)"
    assert len(set(names)) == len(names)
    assert checks.PHASES == (checks.RAW, checks.SECTIONS, checks.SITE)


@pytest.mark.parametrize("name", sorted(p.stem for p in CHECKS.glob("*.py") if p.stem not in NOT_CHECKS))
def test_every_check_has_the_one_signature(name):
    module = importlib.import_module(f"layernet.site.checks.{name}")
    assert typing.get_type_hints(module.check) == {"doc": Doc, "return": list[Problem]}
    # one check per module: no second one under another name that no phase would run
    others = [n for n, f in vars(module).items() if isinstance(f, types.FunctionType)
              and f.__module__ == module.__name__ and n.startswith("check") and n != "check"]
    assert others == []


def test_validate_site_runs_the_registered_phases(monkeypatch):
    """A check added to a phase is run: its problem is reported after the problems of the checks before it."""
    raw = yaml.safe_load((ROOT / "params" / "lab.yaml").read_text())
    seen: list[Doc] = []

    def check(doc: Doc) -> list[Problem]:
        seen.append(doc)
        return [Problem(doc.file, "name", doc.raw.get("name"), "a problem of the added check")]

    added = types.SimpleNamespace(check=check)
    monkeypatch.setattr(checks, "SITE", checks.SITE + (added,))
    with pytest.raises(SiteError) as info:
        validate_site(raw, "x.yaml")
    assert [p.expected for p in info.value.problems] == ["a problem of the added check"]
    assert seen[0].site is not None and seen[0].site.name == raw["name"] and seen[0].file == "x.yaml"

    # a raw check runs on a document the model refuses, without the site, and before the section checks
    raw["levels"][0]["number"] = "four"
    raw["arc"] = {"onboarding_timeout": {"level9": 600}}
    seen.clear()
    monkeypatch.setattr(checks, "RAW", checks.RAW + (added,))
    with pytest.raises(SiteError) as info:
        validate_site(raw, "x.yaml")
    paths = [p.path for p in info.value.problems]
    assert paths == ["levels[0].number", "name", "arc.onboarding_timeout.level9"], paths
    assert seen[0].site is None
