"""A problem of a site file (file, field path, bad value, what was expected) and the error that lists them.

A value is shown cut to a bounded length, and a value that looks like a secret is never shown at all.
"""
from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

from layernet.errors import InputError
from layernet.site.secrets import contains_secret, redact

SHOWN_CHARS = 80
EXPECTED_CHARS = 400
SHOWN_PROBLEMS = 40


class _Marker:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


MISSING = _Marker("(missing)")
HIDDEN = _Marker("(value hidden)")

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = SHOWN_CHARS
_repr.maxother = SHOWN_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlong = 40


def show(value: Any) -> str:
    """A bounded, secret-free rendering of a bad value for an error line."""
    if isinstance(value, _Marker):
        return value.text
    if contains_secret(value):
        return "(value hidden: it looks like a secret)"
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return repr(value[:SHOWN_CHARS]) + f"... ({len(value)} characters)"
    text = _repr.repr(value)
    return text if len(text) <= 2 * SHOWN_CHARS else text[:2 * SHOWN_CHARS] + "..."


def show_path(name: Any) -> str:
    """A file name as it can be printed: control characters escaped, a very long one cut."""
    text = str(name)
    if not text:
        return "''"
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text):
        text = repr(text)
    return text if len(text) <= 2 * SHOWN_CHARS else text[:2 * SHOWN_CHARS] + "..."


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        expected = redact(str(self.expected))
        if len(expected) > EXPECTED_CHARS:
            expected = expected[:EXPECTED_CHARS] + "..."
        path = redact(str(self.path))
        if len(path) > SHOWN_CHARS * 2:
            path = path[:SHOWN_CHARS * 2] + "..."
        return f"{show_path(self.file)}: {path}: got {show(self.value)}; {expected}"


class SiteError(InputError, ValueError):
    """Every problem of a site file at once. Nothing was changed."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in site file {show_path(problems[0].file)}:" if problems else "invalid site"
        lines = [f"  - {p}" for p in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS:,} more problem(s) not shown")
        super().__init__("\n".join([head] + lines))
