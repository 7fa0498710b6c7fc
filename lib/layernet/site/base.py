"""The base of every site model: strict (unknown keys are errors) and frozen (a loaded site never changes)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
