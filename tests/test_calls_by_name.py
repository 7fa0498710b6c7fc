"""Functions called by name ("layernet.module:function", where the target's Azure calls run): every such name in
the library, the notebooks and the tests resolves, so a function that moves takes every name of it along."""
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"""["'](layernet(?:\.\w+)+):(\w+)["']""")


def names() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for folder, pattern in (("lib", "*.py"), ("tests", "*.py"), ("notebooks", "*.ipynb")):
        for path in sorted((ROOT / folder).rglob(pattern)):
            if ".ipynb_checkpoints" in path.parts or path == Path(__file__).resolve():
                continue
            for m in NAME.finditer(path.read_text(errors="replace")):
                if m[1] == "layernet.module":       # the docstrings' placeholder
                    continue
                out.setdefault(f"{m[1]}:{m[2]}", []).append(str(path.relative_to(ROOT)))
    return out


def test_every_function_called_by_name_exists():
    found = names()
    assert any(w.startswith("lib/") for where in found.values() for w in where)      # the scan reads the library
    missing = []
    for name, where in sorted(found.items()):
        module, _, func = name.partition(":")
        try:
            ok = callable(getattr(importlib.import_module(module), func, None))
        except ImportError:
            ok = False
        if not ok:
            missing.append(f"{name} (named in {', '.join(sorted(set(where)))})")
    assert not missing, missing
