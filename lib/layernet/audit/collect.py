"""Where the access-log lines come from: a target (every proxy level, since a time) or a folder of saved logs.

A folder holds one log per level: ``<level>.log`` (or ``.jsonl``) or ``<level>/envoy-access.log`` (the lab's
own layout, so a copy of the lab state folder works as is).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from layernet.progress import step

LOG_NAMES = ("{level}.log", "{level}.jsonl", "{level}/envoy-access.log")


class AuditInputError(ValueError):
    """The audit cannot start: a missing folder, no logs in it, a time it cannot read. Nothing was read."""


def proxy_level_names(site) -> list[str]:
    """The levels that run a proxy, from the egress level down."""
    return [lv.name for lv in site.chain if lv.proxy]


def collect(site, target, since: Optional[datetime] = None) -> dict[str, list[str]]:
    """Raw access-log lines of every proxy level through the target interface (`Target.logs`)."""
    out = {}
    for name in proxy_level_names(site):
        out[name] = target.logs(name, since)
        step(f"{name}: {len(out[name])} log line(s) collected")
    return out


def read_logdir(path, levels: Optional[list[str]] = None) -> dict[str, Path]:
    """{level: file} for a folder of saved logs. With `levels`, every one of them is looked for (a level without
    a file is an error, so a forgotten copy is not mistaken for a quiet level); without, every log found."""
    root = Path(path)
    if not root.is_dir():
        raise AuditInputError(f"{root}: no such folder; give a folder with one log per level "
                              f"({', '.join(n.format(level='<level>') for n in LOG_NAMES)})")
    found: dict[str, Path] = {}
    if levels is None:
        for f in sorted(root.iterdir()):
            if f.is_file() and f.suffix in (".log", ".jsonl"):
                found.setdefault(f.stem, f)
            elif f.is_dir() and (f / "envoy-access.log").is_file():
                found.setdefault(f.name, f / "envoy-access.log")
        if not found:
            raise AuditInputError(f"{root}: no logs found; expected files named "
                                  f"{', '.join(n.format(level='<level>') for n in LOG_NAMES)}")
        return found
    missing = []
    for level in levels:
        for pattern in LOG_NAMES:
            f = root / pattern.format(level=level)
            if f.is_file():
                found[level] = f
                break
        else:
            missing.append(level)
    if missing:
        raise AuditInputError(f"{root}: no log for level(s) {', '.join(missing)}; expected one of "
                              + ", ".join(str(root / n.format(level=missing[0])) for n in LOG_NAMES))
    return found


_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$", re.IGNORECASE)


def parse_since(text: str | datetime | None, now: Optional[datetime] = None) -> Optional[datetime]:
    """"" or None: everything; "90m", "2h", "1d": that long ago; otherwise an ISO 8601 time (naive = UTC)."""
    if text is None or text == "":
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    m = _REL.match(str(text))
    if m:
        value, unit = float(m.group(1)), m.group(2).lower()
        seconds = value * {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[unit]
        return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
    try:
        t = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise AuditInputError(f"since={text!r}: give an ISO 8601 time (2025-03-01T08:00:00Z) or a duration "
                              "back from now (90m, 2h, 1d)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
