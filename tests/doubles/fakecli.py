"""FakeCli: TEST DOUBLES of `az`, `kubectl` and `helm` for tests only.

tests/doubles/bin/{az,kubectl,helm} run this file. Every call appends its argv to a log and answers from canned
rules: the first rule whose tool matches and whose `match` list is a prefix of the arguments answers with its
exit code, stdout and stderr (`times`: how often it may answer; then the next matching rule does). No rule: exit 2
and a "no canned answer" line, so an unexpected command fails the test loudly. For the az commands the plans use,
the flags are checked first against az_flags.json (the flags each command accepts at the pinned CLI and extension
versions, with where they came from): an unknown or deprecated flag is exit 2 with az's error, as the real az does.

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


FLAGS = Path(__file__).resolve().parent / "az_flags.json"


def az_flag_error(args: list[str], data: dict | None = None) -> str | None:
    """Why the real `az` would refuse these arguments, for a command whose flags az_flags.json knows (the
    versions it came from are in its `sources`): an unknown flag or a deprecated one. None when they pass or the
    command is not one the plans use."""
    data = data or json.loads(FLAGS.read_text())
    words = []
    for a in args:
        if a.startswith("-"):
            break
        words.append(a)
    cmd = next((" ".join(words[:n]) for n in range(len(words), 0, -1) if " ".join(words[:n]) in data["commands"]), None)
    if cmd is None:
        return None
    spec = data["commands"][cmd]
    allowed = set(spec["flags"]) | set(data["global_flags"])
    version = data["sources"][spec["from"]].get("version", "")
    for a in args[len(cmd.split()):]:
        if not a.startswith("-") or a == "-" or a[1:2].isdigit():
            continue
        flag = a.split("=", 1)[0]
        if flag in spec.get("deprecated", []):
            return (f"az {cmd}: {flag} is deprecated in {spec['from']} {version}".rstrip() +
                    " (refused by this fake: use the current flag)")
        if flag not in allowed:
            return f"az {cmd}: unrecognized arguments: {flag} ({spec['from']} {version})".replace(" )", ")")
    return None


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    with open(os.environ["FAKECLI_LOG"], "a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": args}) + "\n")
    if tool == "az":
        bad = az_flag_error(args)
        if bad:
            sys.stderr.write(f"ERROR: {bad}\n")
            return 2
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
