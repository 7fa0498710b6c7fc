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


def _parsed(kind, value: Any):
    """`value` as `kind` (an address or a network) when it is one or a string naming one, else None."""
    if not isinstance(value, (str, kind)):
        return None
    try:
        return kind(value)
    except (ValueError, TypeError):
        return None


def net(value: Any) -> Optional[ipaddress.IPv4Network]:
    return _parsed(ipaddress.IPv4Network, value)


def ip(value: Any) -> Optional[ipaddress.IPv4Address]:
    return _parsed(ipaddress.IPv4Address, value)


def text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def items(value: Any, cap: int = MAX_HOSTS) -> list:
    """A list value cut to `cap` items (the model reports a longer one), or [] for anything else."""
    return value[:cap] if isinstance(value, list) else []
