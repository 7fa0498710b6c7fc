"""Deliberate errors reach a notebook (and so a stage's report) as their message, without a traceback."""
from __future__ import annotations

from IPython.core.interactiveshell import InteractiveShell

from layernet.errors import DriftError, StageFailed
from layernet.targets.kube import KubeError


def shown(code: str) -> list:
    """What IPython (the kernel of every stage notebook) puts in the cell's error output for `code`."""
    shell = InteractiveShell.instance()
    seen: list = []
    original = shell._showtraceback
    shell._showtraceback = lambda etype, evalue, stb: seen.append(stb)
    try:
        shell.run_cell(code)
    finally:
        shell._showtraceback = original
    return seen


def test_a_kube_error_is_shown_as_its_message_only():
    msg = "level3: deployment layernet/envoy not rolled out after 8s; pod layernet/envoy-1 is not ready"
    assert shown(f"from layernet.targets.kube import KubeError\nraise KubeError({msg!r})") == [[f"KubeError: {msg}"]]
    assert isinstance(KubeError(msg), RuntimeError) and KubeError(msg).exit_code == 1


def test_every_layernet_error_is_shown_without_a_traceback_and_others_keep_theirs():
    assert shown("from layernet.errors import StageFailed\nraise StageFailed('3 of 40 probes failed')") == [
        ["StageFailed: 3 of 40 probes failed"]]
    assert DriftError("x")._render_traceback_() == ["DriftError: x"] and StageFailed.exit_code == 1
    other = shown("raise ValueError('a bug')")
    assert len(other) == 1 and any("Traceback" in line or "ValueError" in line for line in other[0])
    assert len(other[0]) > 1                     # a bug keeps its traceback
