"""-p overrides of a site file: `key.path=value` pairs, parsed as YAML values and set into the raw document before
it is validated. `levels.level3.proxy` addresses a list item by its name."""
from __future__ import annotations

import re
from typing import Any, Optional

from layernet.site.load import parse_value
from layernet.site.problems import HIDDEN, MISSING, Problem, SiteError
from layernet.site.secrets import contains_secret, is_secret_key, looks_secret

MAX_OVERRIDES = 200


def apply_overrides(raw: dict, overrides: Optional[list[str] | dict[str, Any]], fname: str) -> list[Problem]:
    """Set every override into `raw`; the problems of those that cannot be set (each field once). Raises SiteError
    for more than MAX_OVERRIDES."""
    problems: list[Problem] = []
    items = _normalise_overrides(overrides)
    if len(items) > MAX_OVERRIDES:
        raise SiteError([Problem(fname, "(overrides)", MISSING, f"at most {MAX_OVERRIDES} -p overrides; put the values in a copy of the site file")])
    given: dict[tuple, int] = {}
    for n, (key, value) in enumerate(items, 1):
        try:
            parts = tuple(split_path(key))
        except _PathError:
            parts = None
        if parts is not None and parts in given:
            problems.append(Problem(fname, key, HIDDEN if _secret_override(key, value) else value,
                                    f"each field once: -p {key[:80]} is given as override {given[parts]} and again as "
                                    f"override {n} (the second would silently win); drop one"))
            continue
        if parts is not None:
            given[parts] = n
        if isinstance(value, _BadValue):
            shown = MISSING if value.text is None else HIDDEN if looks_secret(value.text) else value.text
            problems.append(Problem(fname, key or "(override)", shown, value.why))
            continue
        err = _apply_override(raw, key, value)
        if err:
            problems.append(Problem(fname, key or "(override)", HIDDEN if _secret_override(key, value) else value, err))
    return problems


def _secret_override(key: str, value: Any) -> bool:
    return any(is_secret_key(part) for part in re.split(r"[.\[\]]", key or "")) or contains_secret(value)


def _normalise_overrides(overrides) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    out: list[tuple[str, Any]] = []
    for item in overrides:
        item = str(item)
        if "=" not in item:
            key = item.strip()
            out.append((key, _BadValue(None, f"an override must look like key.path=value, e.g. -p azure.location=westeurope"
                                            f"{'' if not key else ' (' + key[:60] + '=...)'}")))
            continue
        key, text = item.split("=", 1)
        value, why = parse_value(text)
        if why is not None:
            value = _BadValue(text, f"a YAML value after '=' ({why}; quote text that holds ':', '[', '{{' or '#', "
                                    "e.g. -p 'description=\"a: b\"')")
        out.append((key.strip(), value))
    return out


class _BadValue:
    def __init__(self, text: str, why: str):
        self.text, self.why = text, why

    def __repr__(self) -> str:
        return repr(self.text)


_PIECE = re.compile(r"([^.\[\]=\s]+)((?:\[[0-9]{1,6}\])*)")


class _PathError(ValueError):
    pass


def split_path(key: str) -> list[str | int]:
    """`levels[1].node_ip` -> ['levels', 1, 'node_ip']; `levels.level3.proxy` -> ['levels', 'level3', 'proxy'].
    Raises _PathError (a text for the user) on an empty segment, a stray bracket or a negative index."""
    if not key:
        raise _PathError("an override needs a field path, e.g. -p azure.location=westeurope")
    parts: list[str | int] = []
    for piece in key.split("."):
        m = _PIECE.fullmatch(piece)
        if not m:
            if piece == "":
                raise _PathError(f"a field path without empty segments: {key[:80]!r} has '..' or a leading or "
                                 "trailing '.'; write e.g. azure.location")
            raise _PathError(f"a field path of names and [index]es separated by '.', e.g. levels[1].node_ip or "
                             f"levels.level3.proxy; {piece[:60]!r} is not a path segment")
        parts.append(m.group(1))
        parts += [int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2))]
    return parts


def _apply_override(raw: dict, key: str, value: Any) -> Optional[str]:
    """Set raw[key.path] = value. `levels.level3.proxy` addresses a level by name. Returns an error text."""
    try:
        parts = split_path(key)
    except _PathError as exc:
        return str(exc)
    cur: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list) and isinstance(part, str):
            match = [j for j, x in enumerate(cur) if isinstance(x, dict) and x.get("name") == part]
            if not match:
                return f"no list item named {part[:60]!r}; use an index like levels[0] or an existing level name"
            part = match[0]
        if isinstance(part, int):
            if not isinstance(cur, list) or part >= len(cur):
                return f"index [{part}] does not exist"
            if last:
                cur[part] = value
                return None
            cur = cur[part]
            continue
        if not isinstance(cur, dict):
            return "this path does not lead to a settable field" if last else f"{part[:60]!r} cannot be set inside a {type(cur).__name__}"
        if last:
            cur[part] = value
            return None
        if part not in cur or cur[part] is None:
            cur[part] = [] if isinstance(parts[i + 1], int) else {}
        cur = cur[part]
    return "this path does not lead to a settable field"
