"""FakeCli: TEST DOUBLES of `az`, `kubectl` and `helm` for tests only.

tests/doubles/bin/{az,kubectl,helm} run this file. Every call appends its argv to a log and answers from canned
rules: the first rule whose tool matches and whose `match` list is a prefix of the arguments answers with its
exit code, stdout and stderr (`times`: how often it may answer; then the next matching rule does). No rule: exit 2
and a "no canned answer" line, so an unexpected command fails the test loudly.

In a test:
    cli = FakeCli(tmp_path, monkeypatch)          # puts tests/doubles/bin first on PATH
    cli.on("az", "group", "exists", stdout="false")
    ...
    cli.calls("az")                               # [["group", "exists", "-n", "rg"], ...]
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BIN = Path(__file__).resolve().parent / "bin"


class FakeCli:
    def __init__(self, tmp_path: Path, monkeypatch=None):
        self.dir = Path(tmp_path) / "fakecli"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self.dir / "rules.json"
        self.log = self.dir / "calls.jsonl"
        self.rules: list[dict] = []
        self._save()
        self.log.write_text("")
        if monkeypatch is not None:
            monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
            monkeypatch.setenv("FAKECLI_STATE", str(self.state))
            monkeypatch.setenv("FAKECLI_LOG", str(self.log))
            monkeypatch.setenv("FAKECLI_PYTHON", sys.executable)

    def on(self, tool: str, *match: str, stdout="", stderr: str = "", rc: int = 0, times: int | None = None) -> "FakeCli":
        if not isinstance(stdout, str):
            stdout = json.dumps(stdout)
        self.rules.append({"tool": tool, "match": list(match), "stdout": stdout, "stderr": stderr, "rc": rc,
                           "times": times, "used": 0})
        self._save()
        return self

    def _save(self) -> None:
        self.state.write_text(json.dumps(self.rules))

    def calls(self, tool: str | None = None) -> list[list[str]]:
        out = []
        for line in self.log.read_text().splitlines():
            rec = json.loads(line)
            if tool is None or rec["tool"] == tool:
                out.append(rec["argv"] if tool else [rec["tool"]] + rec["argv"])
        return out


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    with open(os.environ["FAKECLI_LOG"], "a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": args}) + "\n")
    state = Path(os.environ["FAKECLI_STATE"])
    rules = json.loads(state.read_text())
    for rule in rules:
        if rule["tool"] != tool or args[:len(rule["match"])] != rule["match"]:
            continue
        if rule["times"] is not None and rule["used"] >= rule["times"]:
            continue
        rule["used"] += 1
        state.write_text(json.dumps(rules))
        sys.stdout.write(rule["stdout"] + ("" if not rule["stdout"] or rule["stdout"].endswith("\n") else "\n"))
        sys.stderr.write(rule["stderr"])
        return rule["rc"]
    sys.stderr.write(f"fakecli: no canned answer for: {tool} {' '.join(args)}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
