"""The exceptions layernet raises on purpose, and the exit code each one means for the CLI and the runner.

- `InputError` (exit 2): the user's input is wrong (site file, parameter, command line). Nothing was changed.
- `StageFailed` (exit 1): a stage ran and its evidence says it did not reach the desired state.
- `DriftError` (exit 1): the live state changed between the reviewed plan and apply; nothing was applied.
Every message says what is wrong, where, and what to do, and never carries a secret value; a notebook (and so a
stage's report) shows the message without a traceback.
"""
from __future__ import annotations


class LayernetError(Exception):
    exit_code = 1

    def _render_traceback_(self) -> list[str]:
        """How IPython shows it in a notebook (and so in a stage's report): the message, not a traceback; the
        message is written for the user and says what to fix."""
        return [f"{type(self).__name__}: {self}"]


class InputError(LayernetError):
    exit_code = 2


class StageFailed(LayernetError):
    exit_code = 1


class DriftError(LayernetError):
    exit_code = 1


def exit_code(exc: BaseException) -> int:
    return getattr(exc, "exit_code", 1)
