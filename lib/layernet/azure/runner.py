"""Running `az`, `kubectl` and `helm` on the jump box: exact argv, captured output, retries of known transient
failures, and a refusal to put anything secret-looking on a command line.

Credentials never travel as arguments: the az CLI uses its own login state (`az login` done beforehand by the
operator), the SDK clients use the Azure credential chain. `check_argv` is the guard; every command goes through it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from layernet.errors import InputError, StageFailed
from layernet.site.secrets import looks_secret

# Failures worth another attempt: (pattern in stderr/stdout, what it means). Anything else fails at once.
TRANSIENT = [
    (re.compile(r"\b429\b|Too ?Many ?Requests|throttl", re.I), "throttled by ARM (429)"),
    (re.compile(r"timed out|Timeout(Error|Expired|Exception)|ConnectTimeout|ReadTimeout", re.I), "a request timed out"),
    (re.compile(r"connection (was )?reset|ECONNRESET|Connection aborted", re.I), "connection reset"),
    (re.compile(r"\b50[234]\b|Service ?Unavailable|Bad ?Gateway|Gateway ?Time", re.I), "ARM returned 502/503/504"),
    (re.compile(r"AnotherOperationInProgress|Conflict.*in progress", re.I), "another operation on the resource is in progress"),
    (re.compile(r"Temporary failure in name resolution|Name or service not known", re.I), "DNS lookup failed"),
]

# Flags whose value is a secret, and values that look like one. Either on a command line is refused.
_SECRET_FLAGS = {"--password", "-p", "--client-secret", "--secret", "--token", "--access-token", "--account-key",
                 "--connection-string", "--sas-token", "--certificate-password", "--service-principal-secret"}


def secret_in(argv: Sequence[str]) -> Optional[str]:
    """Why argv carries something secret-looking (the flag or the kind of value, never the value), or None."""
    for i, arg in enumerate(argv):
        flag = arg.split("=", 1)[0]
        if flag in _SECRET_FLAGS and argv[0] != "kubectl":
            return f"the flag {flag}"
        if looks_secret(arg):         # the one secret-shape detection (layernet.site.secrets)
            return f"argument {i} looks like a secret (a connection string, token, key or password)"
    return None


def check_argv(argv: Sequence[str]) -> None:
    why = secret_in(argv)
    if why:
        words = []
        for a in argv[1:4]:
            if a.startswith("-") or secret_in([a]):
                break
            words.append(a)
        raise InputError(f"refusing to run {' '.join([argv[0]] + words)} ...: {why} would put a secret on the "
                         "command line; use `az login` on the jump box or the Azure credential chain instead")


def transient_reason(text: str) -> Optional[str]:
    for pat, why in TRANSIENT:
        if pat.search(text or ""):
            return why
    return None


@dataclass
class Result:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    attempts: int = 1
    seconds: float = 0.0
    retried_for: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def json(self):
        return json.loads(self.stdout) if self.stdout.strip() else None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def tail(self, n: int = 6) -> str:
        lines = [l for l in (self.stderr or self.stdout).strip().splitlines() if l.strip()]
        return "\n".join(lines[-n:])


class CommandFailed(StageFailed):
    """A command failed for a reason a retry does not fix (exit 1 like any failed stage)."""

    def __init__(self, result: Result, what: str = ""):
        self.result = result
        super().__init__(f"{what or result.command} failed (exit {result.rc} after {result.attempts} attempt(s)): "
                         f"{result.tail(3) or 'no output'}")


class Runner:
    """Runs commands. `record_dir`: every run command's argv, stdout, stderr and exit code land there as
    NN-<name>.{cmd,out,err,rc}. `sleep` and `backoff` are injectable so tests do not wait."""

    def __init__(self, record_dir: Optional[Path] = None, attempts: int = 3, backoff: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep, env: Optional[dict] = None,
                 timeout: Optional[float] = None):
        self.record_dir = Path(record_dir) if record_dir else None
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.env = env
        self.timeout = timeout
        self.count = 0
        self.history: list[Result] = []

    def run(self, argv: Sequence[str], name: str = "", retry: bool = True,
            timeout: Optional[float] = None, final: Optional[re.Pattern] = None,
            echo: Optional[Callable[[str], None]] = None) -> Result:
        """Run argv; retry a transient failure unless `final` matches the output (a failure that a retry would
        only repeat, e.g. the Arc pre-onboarding check timing out). `echo` receives each output line as it
        arrives (live progress of long commands such as `az connectedk8s connect`)."""
        argv = [str(a) for a in argv]
        check_argv(argv)
        t0 = time.monotonic()
        reasons: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            rc, out, err = (self._stream(argv, timeout or self.timeout, echo) if echo
                            else self._once(argv, timeout or self.timeout))
            why = transient_reason(err + "\n" + out) if rc != 0 else None
            if why and final is not None and final.search(err + "\n" + out):
                why = None
            if rc == 0 or not retry or why is None or attempt >= self.attempts:
                break
            reasons.append(why)
            if echo:
                echo(f"{why}: attempt {attempt + 1} of {self.attempts} in {self.backoff * attempt:g} s")
            self.sleep(self.backoff * attempt)
        res = Result(argv, rc, out, err, attempt, round(time.monotonic() - t0, 3), reasons)
        self.history.append(res)
        self._record(res, name)
        return res

    def _once(self, argv: list[str], timeout: Optional[float]) -> tuple[int, str, str]:
        env = dict(os.environ if self.env is None else self.env)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found on this machine (install it on the jump box)"
        except subprocess.TimeoutExpired:
            return 124, "", f"{argv[0]}: timed out after {timeout} s"
        return p.returncode, p.stdout, p.stderr

    def _stream(self, argv: list[str], timeout: Optional[float], echo: Callable[[str], None]) -> tuple[int, str, str]:
        env = dict(os.environ if self.env is None else self.env)
        try:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1)
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found on this machine (install it on the jump box)"
        chunks: dict[str, list[str]] = {"out": [], "err": []}

        def pump(stream, key: str) -> None:
            for line in iter(stream.readline, ""):
                chunks[key].append(line)
                if line.strip():
                    echo(line.rstrip())
            stream.close()

        threads = [threading.Thread(target=pump, args=(p.stdout, "out"), daemon=True),
                   threading.Thread(target=pump, args=(p.stderr, "err"), daemon=True)]
        for t in threads:
            t.start()
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            for t in threads:
                t.join(5)
            return 124, "".join(chunks["out"]), "".join(chunks["err"]) + f"{argv[0]}: timed out after {timeout} s\n"
        for t in threads:
            t.join()
        return rc, "".join(chunks["out"]), "".join(chunks["err"])

    def _record(self, res: Result, name: str) -> None:
        if not self.record_dir:
            return
        self.count += 1
        self.record_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or " ".join(res.argv[:3])).strip("-")[:60]
        base = self.record_dir / f"{self.count:02d}-{slug}"
        base.with_suffix(".cmd").write_text(res.command + "\n")
        base.with_suffix(".out").write_text(res.stdout)
        base.with_suffix(".err").write_text(res.stderr)
        base.with_suffix(".rc").write_text(f"{res.rc}\n" + (f"retried for: {', '.join(res.retried_for)}\n"
                                                             if res.retried_for else ""))


def az_json(runner: Runner, argv: Sequence[str], name: str = "", missing_ok: bool = True):
    """Run a read-only az command with `-o json`. A missing resource (ResourceNotFound / not found) is None
    when missing_ok; any other failure raises CommandFailed."""
    argv = list(argv)
    if "-o" not in argv and "--output" not in argv:
        argv += ["-o", "json"]
    res = runner.run(argv, name=name)
    if res.ok:
        return res.json()
    text = res.stderr + res.stdout
    if missing_ok and re.search(r"ResourceNotFound|ResourceGroupNotFound|NotFound|could not be found|was not found|"
                                r"does not exist", text, re.I):
        return None
    raise CommandFailed(res)
