"""One time policy: every time layernet reads, compares or writes is timezone-aware UTC, and a naive time (no
offset: a `since` typed by hand, a log line or manifest without one) IS UTC, never this machine's local time.

`utc(t)` applies the policy to a datetime, `parse(text)` to ISO 8601 text ("Z" or an offset allowed), `iso(t)`
writes a time (a datetime or seconds since the epoch) as ISO 8601 UTC text, `now()` is the current time. Code that reads times from outside goes through these, so the lab and a plant agree.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Union

UTC = timezone.utc


def now() -> datetime:
    return datetime.now(UTC)


def utc(t: datetime) -> datetime:
    """`t` as an aware UTC time: a naive time is UTC, an aware one is converted."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse(text: Any) -> datetime:
    """ISO 8601 text as an aware UTC time (naive text is UTC). ValueError when it is not a time."""
    return utc(datetime.fromisoformat(str(text).strip().replace("Z", "+00:00")))


def iso(t: Union[datetime, float]) -> str:
    """`t` (a datetime, naive = UTC, or seconds since the epoch) as ISO 8601 UTC with microseconds and "Z"
    (what OPC UA, Azure and KQL read)."""
    when = datetime.fromtimestamp(t, UTC) if isinstance(t, (int, float)) else utc(t)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
