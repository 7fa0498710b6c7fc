"""What every site check reads (`Doc`), and the readers of raw values that never trip over a wrong type.

A check sees the raw document (target defaults applied) before the model has accepted it, so any value may be
missing or of the wrong type: the readers below return None (or an empty list or mapping) for such a value, which
the model reports itself.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from layernet.site.model import MAX_HOSTS, Site


@dataclass(frozen=True)
class Doc:
    file: str                       # the site file, as the problems name it
    raw: dict                       # the document as written, target defaults applied
    site: Optional[Site] = None     # the validated model: set for the checks of the validated site only


def net(value: Any) -> Optional[ipaddress.IPv4Network]:
    if not isinstance(value, (str, ipaddress.IPv4Network)):
        return None
    try:
        return ipaddress.IPv4Network(value)
    except (ValueError, TypeError):
        return None


def ip(value: Any) -> Optional[ipaddress.IPv4Address]:
    if not isinstance(value, (str, ipaddress.IPv4Address)):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return None


def text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def items(value: Any, cap: int = MAX_HOSTS) -> list:
    """A list value cut to `cap` items (the model reports a longer one), or [] for anything else."""
    return value[:cap] if isinstance(value, list) else []
