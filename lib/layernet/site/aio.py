"""Site section `aio`: what stage 03 deploys on each level (filled in by the AIO stage)."""
from __future__ import annotations

from layernet.site.base import Strict


class Aio(Strict):
    release: str = "1.2"
