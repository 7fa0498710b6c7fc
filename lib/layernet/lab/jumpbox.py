"""The lab's jump box: where a lab run's Azure CLI/SDK calls are made, as on a real site's jump box.

On a real site every `az` command and SDK call runs on the jump box, which has internet: its traffic to Azure
never crosses the plant's levels. In the lab the notebook kernel runs in the host's namespace, whose resolver
and routes must not change, so the jump box's internet side is a namespace of its own, `<prefix>-jumpbox`:

- a link to the lab router (a free 100.64.x.0/29, see netns.jumpbox_network); the router lets it reach the
  cloud on 443 and the cloud's DNS, nothing else (it is outside the plant, so not a flow of layernet.flows);
- `/etc/netns/<prefix>-jumpbox/resolv.conf` names the lab's internet DNS, so `management.azure.com`,
  `login.microsoftonline.com`, ... resolve to the cloud stand-in exactly as the real names resolve on a real
  jump box, and the real Azure SDK clients connect by name, with TLS verified against the lab CA.

`call(site, "package.module:function", **kwargs)` runs one layernet function there, in a child process
(`ip netns exec <prefix>-jumpbox python -m layernet.lab.jumpbox`), streams its progress lines as they come,
and returns its JSON result. The site travels as its validated JSON model, keyword arguments as JSON; a
`LayernetError` raised inside comes back as the same type with the same message. Nothing secret is passed on
the command line: the lab's Entra client secret is read inside from the lab state folder.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any, Callable, Optional

from layernet import errors
from layernet.lab import LabError, netns

RESULT, ERROR = "\x1elayernet-result ", "\x1elayernet-error "


def namespace(site) -> str:
    return netns.topology(site).jumpbox_ns


def call(site, func: str, progress: Optional[Callable[[str], None]] = None, timeout: float = 900.0, **kwargs) -> Any:
    """Run `func` ("module:function", called as function(site, **kwargs)) on the lab's jump box."""
    ns = namespace(site)
    if ns not in netns.list_namespaces():
        raise LabError(f"the lab's jump box namespace {ns} does not exist: bring the lab up first "
                       f"(layernet lab up --site FILE)")
    request = json.dumps({"func": func, "site": site.model_dump(mode="json"), "kwargs": kwargs})
    say = progress or (lambda line: print(line, flush=True))
    admin_side = os.open("/proc/thread-self/ns/net", os.O_RDONLY)     # its admin side: netns.in_root
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{netns.ADMIN_SIDE_FD: str(admin_side)})
    try:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "layernet.lab.jumpbox"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, pass_fds=(admin_side,))
    finally:
        os.close(admin_side)
    assert proc.stdin and proc.stdout
    proc.stdin.write(request)
    proc.stdin.close()
    result, failure = None, None
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT):])
        elif line.startswith(ERROR):
            failure = json.loads(line[len(ERROR):])
        else:
            say(line)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise LabError(f"{func} on the jump box did not finish within {timeout:g} s")
    stderr = (proc.stderr.read() if proc.stderr else "").strip()
    if failure is not None:
        cls = getattr(errors, failure.get("type", ""), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.LayernetError)):
            cls = errors.StageFailed
        raise cls(failure.get("message", "failed on the jump box"))
    if proc.returncode != 0 or result is None:
        tail = "\n".join(stderr.splitlines()[-12:])
        raise LabError(f"{func} on the jump box exited with {proc.returncode}:\n{tail}")
    return result


def _resolve(func: str) -> Callable:
    module, _, name = func.partition(":")
    if not module.startswith("layernet.") or not name:
        raise LabError(f"not a layernet function: {func!r}")
    return getattr(importlib.import_module(module), name)


def main() -> int:
    from layernet.site import Site

    req = json.loads(sys.stdin.read())
    try:
        site = Site.model_validate(req["site"])
        out = _resolve(req["func"])(site, **req.get("kwargs", {}))
        print(RESULT + json.dumps(out, default=str), flush=True)
        return 0
    except errors.LayernetError as exc:
        print(ERROR + json.dumps({"type": type(exc).__name__, "message": str(exc)}), flush=True)
        return 1
    except LabError as exc:
        print(ERROR + json.dumps({"type": "StageFailed", "message": str(exc)}), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
