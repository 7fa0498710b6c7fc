"""Where the access-log lines come from: a target (every proxy level, since a time) or a folder of saved logs.

A folder holds one log per level: ``<level>.log`` (or ``.jsonl``) or ``<level>/envoy-access.log`` (Envoy run as a
plain process from `layernet render --target lab` files) or the Envoy pods' output under ``<level>/cluster/pods/``
(the lab's), so a copy of a lab state folder works as is, with its rotations (``<level>.log.1``,
``<level>.log.2.gz``, ``<level>.log.gz``) read oldest first. Output of ``kubectl logs`` saved as ``<level>.log``
works too (the parser strips its prefixes and counts the proxy's own lines apart).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from layernet import clock
from layernet.errors import InputError
from layernet.progress import step
from layernet.render import manifests

# a lab with clusters keeps a level's pods under <level>/cluster/pods/<namespace>_<pod>_<uid>/ (lab/clusters/node.py)
LAB_ENVOY_PODS = f"cluster/pods/{manifests.NAMESPACE}_{manifests.APP}-*/{manifests.CONTAINER}.log"
LOG_NAMES = ("{level}.log", "{level}.jsonl", "{level}/envoy-access.log")
# a level's log and its rotations: level3.log, level3.log.1, level3.log.2.gz, level3.log.gz (also for .jsonl)
_ROTATED = re.compile(r"(?P<stem>.+?)\.(?P<ext>log|jsonl)(?:\.(?P<n>[0-9]+))?(?P<gz>\.gz)?")
GZIP_MAGIC = b"\x1f\x8b"


class AuditInputError(InputError, ValueError):
    """The audit cannot start: a missing folder, no logs in it, a time it cannot read. Nothing was read."""


def proxy_level_names(site) -> list[str]:
    """The names of the levels that run a proxy, from the egress level down."""
    return [lv.name for lv in site.proxy_levels()]


def collect(site, target, since: Optional[datetime] = None) -> dict[str, list[str]]:
    """Raw access-log lines of every proxy level through the target interface (`Target.logs`)."""
    out = {}
    for name in proxy_level_names(site):
        out[name] = target.logs(name, since)
        step(f"{name}: {len(out[name])} log line(s) collected")
    return out


def _age(f: Path) -> tuple:
    """Sort key, oldest first: level3.log.2.gz, level3.log.1, level3.log.gz / level3.log (the live one last)."""
    m = _ROTATED.fullmatch(f.name)
    n = int(m.group("n")) if m and m.group("n") else 0
    return (-n, f.name)


def _logs_in(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{level: {kind: files}} of a folder; kind is "log", "jsonl" or "envoy-access.log" (the lab's layout)."""
    found: dict[str, dict[str, list[Path]]] = {}
    for f in sorted(root.iterdir()):
        if f.is_file():
            m = _ROTATED.fullmatch(f.name)
            if m:
                found.setdefault(m.group("stem"), {}).setdefault(m.group("ext"), []).append(f)
        elif f.is_dir():
            inner = [g for g in f.iterdir() if g.is_file() and (g.name == "envoy-access.log"
                                                                   or g.name.startswith("envoy-access.log."))]
            if inner:
                found.setdefault(f.name, {})["envoy-access.log"] = inner
            pods = sorted(f.glob(LAB_ENVOY_PODS), key=lambda g: g.stat().st_mtime)
            if pods:                  # a lab with clusters: the Envoy pods' output, oldest pod first
                found.setdefault(f.name, {})["pod log"] = pods
    return {lv: {k: v if k == "pod log" else sorted(v, key=_age) for k, v in kinds.items()} for lv, kinds in found.items()}


def _one(root: Path, level: str, kinds: dict[str, list[Path]]) -> list[Path]:
    if len(kinds) > 1:
        names = [str(files[-1]) for files in kinds.values()]
        raise AuditInputError(f"{root}: level {level} has more than one log: {' and '.join(names)}; keep one of "
                              f"them (or move the other to another folder) so no record is read twice or missed")
    return next(iter(kinds.values()))


def read_logdir(path, levels: Optional[list[str]] = None) -> dict[str, list[Path]]:
    """{level: files, oldest first} for a folder of saved logs (rotated and gzip-compressed files included).
    With `levels`, every one of them is looked for (a level without a file is an error, so a forgotten copy is
    not mistaken for a quiet level); without, every log found. Empty and unreadable files are errors."""
    root = Path(path)
    expected = ", ".join(n.format(level="<level>") for n in LOG_NAMES)
    if not root.is_dir():
        raise AuditInputError(f"{root}: no such folder; give a folder with one log per level ({expected}, "
                              f"rotations such as <level>.log.1 and <level>.log.2.gz included)")
    found = _logs_in(root)
    out: dict[str, list[Path]] = {}
    if levels is None:
        for lv, kinds in found.items():
            out[lv] = _one(root, lv, kinds)
        if not out:
            raise AuditInputError(f"{root}: no logs found; expected files named {expected}")
    else:
        missing = [lv for lv in levels if lv not in found]
        if missing:
            raise AuditInputError(f"{root}: no log for level(s) {', '.join(missing)}; expected one of "
                                  + ", ".join(str(root / n.format(level=missing[0])) for n in LOG_NAMES))
        for lv in levels:
            out[lv] = _one(root, lv, found[lv])
    for lv, files in out.items():
        _readable(root, lv, files)
    return out


def _readable(root: Path, level: str, files: list[Path]) -> None:
    """Fail early on a level whose files are all empty, unreadable or binary (a gzip file without .gz)."""
    why = []
    for f in files:
        try:
            with open(f, "rb") as h:
                head = h.read(4096)
        except OSError as exc:
            why.append(f"{f}: cannot be read ({exc.strerror})")
            continue
        if not head:
            why.append(f"{f}: empty")
        elif head.startswith(GZIP_MAGIC) and not f.name.endswith(".gz"):
            why.append(f"{f}: gzip-compressed but not named .gz (rename it to {f.name}.gz)")
        else:
            return
    raise AuditInputError(f"{root}: level {level} has no readable log lines: " + "; ".join(why))


def _has_record(files: list[Path], limit: int = 64 << 20) -> bool:
    """Whether any line of the files (in the first `limit` bytes of each) is an access-log record."""
    import gzip
    import json

    for f in files:
        seen = 0
        with (gzip.open(f, "rb") if f.name.endswith(".gz") else open(f, "rb")) as h:
            try:
                for line in h:
                    seen += len(line)
                    i = line.find(b"{")
                    if i >= 0:
                        try:
                            rec = json.loads(line[i:])
                        except ValueError:
                            rec = None
                        if isinstance(rec, dict) and rec.get("time") is not None and rec.get("listener_port") is not None:
                            return True
                    if seen > limit:
                        break
            except (OSError, EOFError):       # a damaged gzip file: what was read so far counts
                continue
    return False


def check_logdir(path, site) -> dict[str, list[Path]]:
    """What a runbook checks before it runs the audit stage on saved logs: the folder, every proxy level's files,
    and at least one access-log record per level. Raises AuditInputError (bad input, exit 2)."""
    levels = proxy_level_names(site)
    files = read_logdir(path, levels)
    empty = [lv for lv in levels if not _has_record(files[lv])]
    if empty:
        raise AuditInputError(f"{path}: no access-log record in the log of level(s) {', '.join(empty)} ("
                              + "; ".join(f"{lv}: {', '.join(str(f) for f in files[lv])}" for lv in empty)
                              + "); give the Envoy JSON access log of each proxy level")
    return files


def check_records(parsed, levels: list[str], where: str) -> None:
    """Bad input: a proxy level whose saved logs hold no access-log record at all."""
    have = parsed.levels_with_records()
    empty = [lv for lv in levels if lv not in have]
    if empty:
        files = "; ".join(f"{lv}: {', '.join(parsed.files.get(lv, [])) or 'no file'}" for lv in empty)
        raise AuditInputError(f"{where}: no access-log record for level(s) {', '.join(empty)} ({files}); "
                              f"{len(parsed.malformed)} malformed line(s). Give the Envoy JSON access log of "
                              f"each proxy level")


_REL = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|min|h|d)\s*", re.IGNORECASE)


def parse_since(text: str | datetime | None, now: Optional[datetime] = None) -> Optional[datetime]:
    """"" or None: everything; "90m", "2h", "1d": that long ago; otherwise an ISO 8601 time (naive = UTC)."""
    if text is None or text == "":
        return None
    if isinstance(text, datetime):
        return clock.utc(text)
    m = _REL.fullmatch(str(text))
    if m:
        value, unit = float(m.group(1)), m.group(2).lower()
        seconds = value * {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[unit]
        return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
    try:
        return clock.parse(text)
    except ValueError:
        raise AuditInputError(f"since={text!r}: give an ISO 8601 time (2025-03-01T08:00:00Z) or a duration "
                              "back from now (90m, 2h, 1d)") from None


def check_since(text: str, flag: str = "--since") -> Optional[datetime]:
    """A `since` a user gave (--since, -s audit.since): a time in the past (ISO 8601, from the year 2000) or a
    duration back from now a calendar can hold; AuditInputError naming `flag` otherwise."""
    shown = text if len(str(text)) <= 60 else str(text)[:60] + "..."
    fix = "give an ISO 8601 time such as 2025-03-01T08:00:00Z, or a duration back from now such as 2h or 30d"
    if not isinstance(text, str):
        raise AuditInputError(f"{flag} {shown!r}: not a time; {fix}")
    try:
        when = parse_since(text)
    except AuditInputError:
        raise AuditInputError(f"{flag} {shown}: not a time; {fix}") from None
    except (OverflowError, ValueError):
        raise AuditInputError(f"{flag} {shown}: out of range; {fix}") from None
    if when is not None and when > datetime.now(timezone.utc):
        raise AuditInputError(f"{flag} {shown}: is in the future; give a time in the past or a duration such as 2h")
    if when is not None and when.year < 2000:
        raise AuditInputError(f"{flag} {shown}: out of range (before the year 2000); give a recent time or a "
                              "duration such as 30d")
    return when
