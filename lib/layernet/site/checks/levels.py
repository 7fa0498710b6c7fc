"""The site's name and its levels: valid, unique names and Purdue numbers, one chain of parents ending at the egress
level, numbers growing towards it. `read` also hands the other checks the levels they may rely on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from layernet.site import names
from layernet.site.checks.doc import Doc, items, text
from layernet.site.model import LAB_NAMESPACES
from layernet.site.problems import Problem


@dataclass
class Levels:
    good: list[tuple[int, dict]]                 # (index, level) of the levels with a valid name of their own
    by_name: dict[str, tuple[int, dict]]         # the good levels by name
    chain: list[tuple[int, dict]]                # the good levels that reach the egress level by their parents
    egress: Optional[str]                        # egress_level, when it is text
    listed: str                                  # the good levels' names for a message, "none defined" without any
    problems: list[Problem] = field(default_factory=list)


def check(doc: Doc) -> list[Problem]:
    return read(doc).problems


def read(doc: Doc) -> Levels:
    raw = doc.raw
    P: list[Problem] = []

    def add(path: str, value: Any, expected: str) -> None:
        P.append(Problem(doc.file, path, value, expected))

    why = names.check_site_name(raw.get("name"))
    if why:
        add("name", raw.get("name"), why)
    levels = raw.get("levels")
    if isinstance(levels, list) and not levels:
        add("levels", levels, "at least one level")
    have_levels = isinstance(levels, list) and bool(levels)
    levels = items(levels, 6)
    good = [(i, lv) for i, lv in enumerate(levels) if isinstance(lv, dict)]
    names_: dict[str, int] = {}
    numbers: dict[Any, int] = {}
    duplicates: set[int] = set()
    for i, lv in good:
        n = text(lv.get("name"))
        if n is not None:
            why = names.check_level_name(n)
            if not why and raw.get("target") == "lab" and n in LAB_NAMESPACES:
                why = (f"a name other than {', '.join(LAB_NAMESPACES)}: the lab names its own namespaces so "
                       f"(<prefix>-{n} would be taken twice)")
            if why:
                add(f"levels[{i}].name", n, why)
                duplicates.add(i)
            elif n in names_:
                add(f"levels[{i}].name", n, f"a unique level name; levels[{names_[n]}] already uses it")
                duplicates.add(i)
            else:
                names_[n] = i
        num = lv.get("number")
        if isinstance(num, int) and not isinstance(num, bool):
            if num in numbers:
                add(f"levels[{i}].number", num, f"a unique Purdue number; levels[{numbers[num]}] already uses it")
            else:
                numbers[num] = i
    # a level whose name is taken or invalid is reported above and kept out of the chain checks
    good = [(i, lv) for i, lv in good if i not in duplicates and isinstance(lv.get("name"), str)]
    by_name = {lv["name"]: (i, lv) for i, lv in good}
    level_list = ", ".join(by_name) or "none defined"

    # parents exist, one chain ending at the egress level
    egress = text(raw.get("egress_level"))
    if have_levels and egress is not None and egress not in by_name:
        add("egress_level", egress, f"the name of a level ({level_list})")
    children: dict[str, list[int]] = {}
    for i, lv in good:
        parent = lv.get("parent")
        if parent is not None and not isinstance(parent, str):
            continue  # a type error, reported by the model
        if lv.get("name") == egress:
            if parent is not None:  # reported once, below; the egress level's parent is not a chain link
                add(f"levels[{i}].parent", parent, f"no parent: {egress} is the egress level, the top of the chain")
            continue
        if parent is None:
            if egress in by_name:
                add(f"levels[{i}].parent", parent, f"a parent level: only the egress level ({egress}) may have none")
            continue
        if parent not in by_name:
            add(f"levels[{i}].parent", parent, f"the name of another level ({level_list})")
            continue
        if parent == lv.get("name"):
            add(f"levels[{i}].parent", parent, "a level other than itself")
            continue
        children.setdefault(parent, []).append(i)
    for parent, kids in children.items():
        if len(kids) > 1:
            i = kids[1]
            add(f"levels[{i}].parent", parent, f"one child per level (the levels form one chain); levels[{kids[0]}] already has parent {parent}")
    # every level reaches the egress level by following parents, without cycles
    on_chain: set[int] = set()
    cycle_reported = False
    for i, lv in good:
        seen, cur = set(), lv
        while (cur.get("name") != egress and text(cur.get("parent")) in by_name
               and cur.get("parent") != cur.get("name") and cur.get("name") not in seen):
            seen.add(cur.get("name"))
            cur = by_name[cur["parent"]][1]
        if cur.get("name") == egress:
            on_chain.add(i)
        elif cur.get("name") in seen and not cycle_reported:
            add(f"levels[{i}].parent", lv.get("parent"), "a chain without cycles that ends at the egress level")
            cycle_reported = True
    chain = [(i, lv) for i, lv in good if i in on_chain]

    def number(lv: dict) -> Optional[int]:
        n = lv.get("number")
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    # Purdue numbers grow towards the egress level
    for i, lv in chain:
        p = by_name.get(lv.get("parent")) if lv.get("name") != egress else None
        if p and number(lv) is not None and number(p[1]) is not None and number(p[1]) <= number(lv):
            add(f"levels[{i}].number", lv["number"], f"a Purdue number below its parent's ({p[1]['number']})")
    return Levels(good, by_name, chain, egress, level_list, P)
