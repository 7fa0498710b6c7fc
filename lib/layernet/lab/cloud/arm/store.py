"""The ARM stand-in's state: one JSON document, saved after every change (atomic replace), so a restarted
cloud keeps its subscriptions, provider registrations, resource groups, resources and operations.

Keys are lower-cased ids (ARM ids are case-insensitive); the stored objects keep the casing of their first PUT.
"""
from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path
from typing import Optional

SECTIONS = ("subscriptions", "providers", "groups", "resources", "operations", "heartbeats")


class Store:
    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else None
        self.lock = threading.RLock()
        self.data: dict = {s: {} for s in SECTIONS}
        if self.path and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except ValueError as exc:
                raise ValueError(f"{self.path}: not valid JSON ({exc}); move it away to start with an empty store") from None
            for s in SECTIONS:
                self.data[s] = dict(loaded.get(s) or {})

    def save(self) -> None:
        if not self.path:
            return
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)

    # small helpers; callers hold `lock` around read-modify-write sequences
    def get(self, section: str, key: str) -> Optional[dict]:
        return self.data[section].get(key.lower())

    def put(self, section: str, key: str, value: dict) -> None:
        self.data[section][key.lower()] = value

    def delete(self, section: str, key: str) -> Optional[dict]:
        return self.data[section].pop(key.lower(), None)

    def values(self, section: str) -> list[dict]:
        return list(self.data[section].values())

    def snapshot(self, section: str, key: str) -> Optional[dict]:
        with self.lock:
            v = self.get(section, key)
            return copy.deepcopy(v) if v is not None else None
