"""One observation window: stage 04's proof, the verify command and the loopback flow all watch the path through
`layernet.telemetry.verify.observe`; no other function of the library opens MQTT taps or reads the event hub."""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib" / "layernet"

# the only functions that may open a tap or a hub consumer: the window, its settle wait, its hub readers
ALLOWED = {
    ("telemetry/verify.py", "observe"), ("telemetry/verify.py", "wait_flowing"), ("telemetry/verify.py", "kafka_hub"),
    ("telemetry/window.py", "consume"),
}


def _calls(tree: ast.AST):
    """(enclosing top-level function, called name) for every call in a module."""
    for top in ast.iter_child_nodes(tree):
        if isinstance(top, (ast.FunctionDef, ast.ClassDef)):
            for node in ast.walk(top):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                    yield top.name, name


def _library():
    for path in sorted(LIB.rglob("*.py")):
        yield str(path.relative_to(LIB)), ast.parse(path.read_text())


def test_only_the_window_opens_taps_and_hub_consumers():
    found = {(rel, fn) for rel, tree in _library() for fn, name in _calls(tree)
             if name in ("MqttTap", "consume_kafka")}
    assert found <= ALLOWED, f"a second observation window: {sorted(found - ALLOWED)}"
    assert ("telemetry/verify.py", "observe") in found


def test_stage_04_the_command_and_the_loopback_flow_call_the_same_window():
    callers = {(rel, fn) for rel, tree in _library() for fn, name in _calls(tree) if name == "observe"}
    assert {("stages/telemetry.py", "messages"), ("telemetry/verify.py", "verify"),
            ("telemetry/loopback.py", "measure")} <= callers
    for rel in ("stages/telemetry.py", "telemetry/loopback.py"):
        tree = ast.parse((LIB / rel).read_text())
        sources = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and any(a.name == "observe" for a in node.names)}
        assert sources == {"layernet.telemetry.verify"}, (rel, sources)
