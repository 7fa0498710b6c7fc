"""One time policy: every time layernet reads, compares or writes is timezone-aware UTC, and a naive time (no
offset: a `since` typed by hand, a log line or manifest without one) IS UTC, never this machine's local time.

`utc(t)` applies the policy to a datetime, `parse(text)` to ISO 8601 text ("Z" or an offset allowed), `now()` is
the current time. Code that reads times from outside goes through these, so the lab and a plant agree.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

UTC = timezone.utc


def now() -> datetime:
    return datetime.now(UTC)


def utc(t: datetime) -> datetime:
    """`t` as an aware UTC time: a naive time is UTC, an aware one is converted."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse(text: Any) -> datetime:
    """ISO 8601 text as an aware UTC time (naive text is UTC). ValueError when it is not a time."""
    return utc(datetime.fromisoformat(str(text).strip().replace("Z", "+00:00")))
