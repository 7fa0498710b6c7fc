"""Progress lines from long library steps. The runner streams lines that start with MARK to the console."""
from __future__ import annotations

import sys
import time

MARK = "▸ "


def step(message: str) -> None:
    print(f"{MARK}{time.strftime('%H:%M:%S')} {message}", file=sys.stdout, flush=True)
