"""Loading a site file: read it safely (`load`), apply the -p overrides (`overrides`), validate it into the `Site`
model and run the cross-field checks (`checks`). `load_site(path, overrides)` either returns a valid `Site` or raises
`SiteError` listing every problem found, each with the file, the field path (``levels[1].node_ip``), the bad value
and what was expected.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from layernet.site import checks
from layernet.site.checks.doc import Doc
from layernet.site.defaults import with_target_defaults
from layernet.site.load import load_yaml_file
from layernet.site.model import MAX_HOSTS, Site, declared_field
from layernet.site.overrides import apply_overrides
from layernet.site.problems import HIDDEN, MISSING, Problem, SiteError
from layernet.site.secrets import find_secrets

MAX_PROBLEMS = 200        # pydantic errors turned into problems; the rest are counted


def load_site(path: str | Path, overrides: Optional[list[str] | dict[str, Any]] = None) -> Site:
    """Read, override and validate a site file. Raises SiteError listing every problem."""
    fname = str(path)
    raw = load_yaml_file(path)
    if not isinstance(raw, dict):
        shown = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise SiteError([Problem(fname, "(top level)", MISSING if raw is None else raw,
                                 f"a mapping with keys name, target, egress_level, admin, levels, azure (this is {shown})")])
    problems = apply_overrides(raw, overrides, fname)
    if problems:
        raise SiteError(problems)
    return validate_site(raw, fname)


def validate_site(raw: dict, fname: str = "<site>") -> Site:
    problems: list[Problem] = []
    site: Optional[Site] = None
    if not isinstance(raw, dict):
        raise SiteError([Problem(fname, "(top level)", raw, "a mapping with keys name, target, egress_level, admin, levels, azure")])
    raw = with_target_defaults(raw)     # the checks below see what the model will hold
    # secrets first: a field holding one is reported once, without its value, and checked no further
    secret_paths: list[str] = []
    for path, kind in find_secrets(raw):
        if kind == "key" and declared_field(path):
            continue  # a field of the model (e.g. the name of a Kubernetes Secret), not a secret value
        if any(path.startswith((s + ".", s + "[")) or path == s for s in secret_paths):
            continue  # inside a field already refused
        secret_paths.append(path)
        if kind == "key":
            problems.append(Problem(fname, path, HIDDEN, "no secrets in a site file: this key names a secret (the value "
                                    "is hidden); remove it and give credentials through the environment or the Azure "
                                    "credential chain (az login, a managed identity)"))
        else:
            problems.append(Problem(fname, path, HIDDEN, "no secrets in a site file: this value looks like a connection "
                                    "string, token or key (the value is hidden); remove it and give credentials through "
                                    "the environment or the Azure credential chain"))
    for path in _control_characters(raw):
        if not any(path == s for s in secret_paths):
            problems.append(Problem(fname, path, MISSING, "text without control characters (escape sequences, NUL, "
                                    "line breaks inside names); retype the value"))
    try:
        site = Site.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        for err in errors[:MAX_PROBLEMS]:
            problems.append(Problem(fname, _loc(err["loc"]), _value_at(raw, err["loc"]), _expected(err)))
        if len(errors) > MAX_PROBLEMS:
            problems.append(Problem(fname, "(more)", MISSING, f"{len(errors) - MAX_PROBLEMS:,} more problem(s) of "
                                    "wrong or unknown values not listed; fix the ones above first"))
    doc = Doc(fname, raw, site)
    for phase in (checks.RAW, checks.SECTIONS):
        try:
            problems += [p for check in phase for p in check.check(doc)]
        except (TypeError, AttributeError, KeyError, ValueError):
            # a check tripped over a value of the wrong type: the model has reported that value already
            if site is not None:
                raise
    if site is not None and not problems:
        problems += [p for check in checks.SITE for p in check.check(doc)]
    # a field can be reported twice (type error + semantic); keep the first per path+message, and nothing more
    # for a field that holds a secret
    seen, unique = set(), []
    for p in problems:
        key = (p.path, p.expected)
        hidden_field = p.value is not HIDDEN and any(p.path == s or p.path.startswith((s + ".", s + "[")) for s in secret_paths)
        if key not in seen and not hidden_field:
            seen.add(key)
            unique.append(p)
    if unique:
        raise SiteError(unique)
    assert site is not None
    return site


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _control_characters(raw: Any, budget: int = MAX_HOSTS * 20) -> list[str]:
    """Field paths of strings (keys included) holding control characters: terminal escapes, NUL, bidi overrides."""
    out: list[str] = []
    todo: list[tuple[str, Any]] = [("", raw)]
    while todo and budget > 0 and len(out) < 20:
        path, v = todo.pop()
        budget -= 1
        if isinstance(v, dict):
            for k, item in v.items():
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and _CONTROL.search(k):
                    out.append((path or "(top level)") + " (a key)")
                    continue
                todo.append((sub, item))
        elif isinstance(v, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(v))
        elif isinstance(v, str) and _CONTROL.search(v):
            out.append(path or "(top level)")
    return out


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _value_at(raw: Any, loc: tuple) -> Any:
    cur = raw
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return cur


def _expected(err: dict) -> str:
    typ = err["type"]
    loc = err["loc"]
    if typ == "layernet_text":
        return err["msg"]
    if typ == "value_error":          # a section's own rule: its text says what is expected
        return str(err.get("msg", "")).removeprefix("Value error, ")
    if "ports" in loc and typ in ("int_type", "int_parsing", "int_from_float", "greater_than_equal", "less_than_equal"):
        return "a TCP port number 1-65535, unquoted (true, yes and no are not ports)"
    if "ports" in loc and typ == "list_type":
        return "a list of port numbers, e.g. ports: [443] (a single number needs brackets)"
    if typ == "string_pattern_mismatch" and tuple(loc) == ("lab", "prefix"):
        return "1-6 lowercase letters and digits, starting with a letter (it prefixes the lab's namespace names)"
    if typ == "string_pattern_mismatch":
        return f"text of the form {err.get('ctx', {}).get('pattern', '')}"
    if typ == "too_long":
        return f"at most {err.get('ctx', {}).get('max_length', 'a few')} entries"
    if typ == "string_type":
        return "text (a name or words), not a number, list or mapping; quote it if YAML reads it otherwise"
    if typ == "list_type":
        return "a list, e.g. [a, b] or one '- item' per line"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return "a mapping of key: value lines"
    if typ == "extra_forbidden":
        hint = _spelling_hint(err["loc"])
        return f"unknown key: remove it or fix its spelling{hint} (unknown keys are rejected so a typo is never ignored)"
    if typ == "bool_type":
        return "true or false (unquoted)"
    if typ in ("int_type", "int_parsing"):
        return "a whole number (unquoted), e.g. 3"
    if typ == "ip_v4_address":
        return "an IPv4 address such as 192.168.103.10"
    if typ == "ip_v4_network":
        return "an IPv4 network in CIDR form such as 192.168.103.0/24 (host bits zero)"
    if typ == "missing":
        return "this field is required"
    if typ == "literal_error":
        return f"expected {err['ctx'].get('expected', 'one of the allowed values')}"
    return err["msg"]


def _spelling_hint(loc: tuple) -> str:
    """' (did you mean 'node_ip'?)' for an unknown key close to a field of the model at that place."""
    import difflib

    model: Any = Site
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(getattr(model, "model_fields", {})), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
