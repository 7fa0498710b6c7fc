"""Reading a site file safely: UTF-8 text, one YAML document, no duplicate keys, bounded nesting and a bounded
number of values (alias expansion included), all checked while parsing, before anything is built.

The event stream comes from libyaml's C parser when PyYAML was built with it (the pure-Python parser otherwise);
values are built here from the events, so a budget or nesting violation stops the parse at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (AliasEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent, StreamEndEvent)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from layernet.site.problems import MISSING, Problem, SiteError

MAX_FILE_BYTES = 4 * 1024 * 1024      # a site describes levels, not data; the largest real one is a few KB
MAX_VALUES = 50_000                   # values after alias expansion
MAX_DEPTH = 32                        # nesting of mappings and lists
HINT = "pass --site params/lab.yaml or a copy of params/site-example.yaml"

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
LIBYAML = Loader is not yaml.SafeLoader
_STANDARD_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}
_resolver = Resolver()
_constructor = SafeConstructor()


def read_site_text(path: str | Path, kind: str = "site file", hint: str = HINT) -> str:
    """The text of a site file (or another YAML input of `kind`, e.g. a fleet file), or SiteError saying what the
    file is instead."""
    fname = str(path)
    p = Path(path)

    def fail(expected: str, value: Any = MISSING) -> SiteError:
        return SiteError([Problem(fname, "(file)", value, expected)])

    if not fname.strip():
        raise fail(f"a {kind} path, not an empty one; {hint}")
    try:
        if p.is_dir():
            raise fail(f"a {kind}, but this is a directory; {hint}")
        if not p.exists():
            raise fail(f"the {kind} must exist; {hint}")
        if not p.is_file():
            raise fail(f"a regular {kind} (this is a device, pipe or socket); {hint}")
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise fail(f"a readable {kind} path ({exc.strerror or exc}); {hint}") from None
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise fail(f"a {kind} of at most {MAX_FILE_BYTES // (1024 * 1024)} MB; this one is "
                       f"{size / (1024 * 1024):.1f} MB (a {kind} describes names and paths, not data)")
        data = p.read_bytes()
    except PermissionError:
        raise fail("a readable file: permission denied") from None
    except OSError as exc:
        raise fail(f"a readable file ({exc.strerror})") from None
    if b"\x00" in data[:65536]:
        raise fail("YAML text, but this is a binary file (it holds NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise fail(f"UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} is not UTF-8 "
                   "(save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`)") from None


class YamlProblem(Exception):
    def __init__(self, where: str, expected: str, value: Any = MISSING):
        super().__init__(expected)
        self.where, self.expected, self.value = where, expected, value


def _at(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"


def _scalar(ev: ScalarEvent) -> Any:
    if ev.tag and ev.tag != "!" and ev.tag not in _STANDARD_TAGS:
        raise YamlProblem(_at(ev.start_mark), f"plain YAML without tags; remove the tag {ev.tag[:40]!r}")
    if ev.tag in _STANDARD_TAGS:
        tag = ev.tag
    else:
        tag = _resolver.resolve(ScalarNode, ev.value, ev.implicit)
    if tag == "tag:yaml.org,2002:str" or tag not in _constructor.yaml_constructors:
        return ev.value
    try:
        return _constructor.yaml_constructors[tag](_constructor, ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark))
    except (ConstructorError, ValueError, OverflowError):
        raise YamlProblem(_at(ev.start_mark), f"a valid {tag.rsplit(':', 1)[-1]} value", ev.value) from None


class _Collection:
    __slots__ = ("value", "anchor", "mark", "size", "key", "has_key", "lines", "merges")

    def __init__(self, value, anchor, mark):
        self.value, self.anchor, self.mark, self.size = value, anchor, mark, 1
        self.key, self.has_key, self.lines, self.merges = None, False, {}, []


def parse_yaml(text: str, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> Any:
    """The one YAML document in `text` as plain Python values. Raises YamlProblem (with a line) when the text
    is not one document, repeats a key, nests deeper than `max_depth` or expands to more than `max_values`."""
    loader = Loader(text)
    anchors: dict[str, tuple[Any, int]] = {}
    open_anchors: set[str] = set()
    stack: list[_Collection] = []
    total = 0
    root: Any = MISSING
    documents = 0

    def place(value: Any, size: int, mark, text: Optional[str] = None) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        top.size += size
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if not top.has_key:
            if isinstance(value, (list, dict)):
                raise YamlProblem(_at(mark), "a plain key (text), not a list or mapping as a key")
            if not isinstance(value, str):
                written = (text if text is not None else str(value))[:40]
                raise YamlProblem(_at(mark), f"text keys: {written!r} reads as the {type(value).__name__} {value!r:.40}; "
                                  f"quote it ('{written}': ...)", value)
            top.key, top.has_key = value, True
            return
        key, top.has_key = top.key, False
        if key == "<<" and isinstance(value, (dict, list)):  # YAML merge key
            top.merges.append(value)
            return
        if key in top.value:
            shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:60] + "..."
            raise YamlProblem(_at(mark), f"each key once: {shown} is set on line {top.lines[key]} and again on "
                              f"line {mark.line + 1} (the second would silently win); remove one", str(key))
        top.lines[key] = mark.line + 1
        top.value[key] = value

    try:
        while True:
            ev = loader.get_event()
            if isinstance(ev, StreamEndEvent):
                break
            if isinstance(ev, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise YamlProblem(_at(ev.start_mark), "one YAML document per file: remove the '---' "
                                      "and everything after it, or merge the documents")
                continue
            if isinstance(ev, (ScalarEvent, AliasEvent, SequenceStartEvent, MappingStartEvent)):
                total += 1
                if total > max_values:
                    raise YamlProblem(_at(ev.start_mark), f"at most {max_values:,} values; a site or fleet file "
                                      "describes levels and names, not data")
            if isinstance(ev, ScalarEvent):
                value = _scalar(ev)
                if ev.anchor:
                    anchors[ev.anchor] = (value, 1)
                place(value, 1, ev.start_mark, ev.value)
            elif isinstance(ev, AliasEvent):
                if ev.anchor in open_anchors:
                    raise YamlProblem(_at(ev.start_mark), f"an alias outside its anchor: *{ev.anchor[:40]} refers "
                                      "to a list or mapping that contains it")
                if ev.anchor not in anchors:
                    raise YamlProblem(_at(ev.start_mark), f"an alias to a defined anchor: &{ev.anchor[:40]} is "
                                      "not defined before it")
                value, size = anchors[ev.anchor]
                total += size - 1
                if total > max_values:
                    raise YamlProblem(_at(ev.start_mark), f"at most {max_values:,} values after alias expansion: "
                                      f"*{ev.anchor[:40]} expands past the budget (an alias bomb?)")
                place(value, size, ev.start_mark)
            elif isinstance(ev, (SequenceStartEvent, MappingStartEvent)):
                if ev.tag and ev.tag != "!" and ev.tag not in _STANDARD_TAGS:
                    raise YamlProblem(_at(ev.start_mark), f"plain YAML without tags; remove the tag {ev.tag[:40]!r}")
                if len(stack) >= max_depth:
                    raise YamlProblem(_at(ev.start_mark), f"at most {max_depth} levels of nesting; this file "
                                      "nests deeper (a site or fleet file is a few levels deep)")
                col = _Collection([] if isinstance(ev, SequenceStartEvent) else {}, ev.anchor, ev.start_mark)
                if ev.anchor:
                    open_anchors.add(ev.anchor)
                stack.append(col)
            elif isinstance(ev, (SequenceEndEvent, MappingEndEvent)):
                col = stack.pop()
                for merged in col.merges:
                    for m in (merged if isinstance(merged, list) else [merged]):
                        if not isinstance(m, dict):
                            raise YamlProblem(_at(col.mark), "a mapping (or list of mappings) after '<<'")
                        for k, v in m.items():
                            col.value.setdefault(k, v)
                if col.anchor:
                    open_anchors.discard(col.anchor)
                    anchors[col.anchor] = (col.value, col.size)
                place(col.value, col.size, col.mark)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if "nesting depth" in str(exc.problem):
            raise YamlProblem(_at(mark), f"at most {max_depth} levels of nesting; this file nests deeper "
                              "(a site or fleet file is a few levels deep)") from None
        raise YamlProblem(_at(mark), f"valid YAML ({str(exc.problem or exc.context or 'parse error')[:120]})") from None
    except yaml.YAMLError as exc:  # reader errors: characters YAML does not allow
        raise YamlProblem("(file)", f"valid YAML text ({str(exc).splitlines()[0][:120]})") from None
    except RecursionError:
        raise YamlProblem("(file)", f"at most {max_depth} levels of nesting") from None
    finally:
        loader.dispose()
    return None if root is MISSING else root


def load_yaml_file(path: str | Path, kind: str = "site file", hint: str = HINT) -> Any:
    """Read and parse a site file (or another YAML input of `kind`) within the budgets of size, nesting and values,
    each key once; SiteError names the file, the line and the fix."""
    fname = str(path)
    text = read_site_text(path, kind, hint)
    try:
        return parse_yaml(text)
    except YamlProblem as exc:
        raise SiteError([Problem(fname, exc.where, exc.value, exc.expected)]) from None


def parse_value(text: str) -> tuple[Optional[Any], Optional[str]]:
    """A -p/-s value: (value, None), or (None, why it is not one YAML value)."""
    if not text.strip():
        return "", None
    try:
        return parse_yaml(text, max_values=5_000, max_depth=16), None
    except YamlProblem as exc:
        return None, exc.expected
