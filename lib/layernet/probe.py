"""Network probes: DNS answers, TLS through the proxy chain, refusals. Standard library only.

This file runs where layernet is not installed: inside a lab namespace (``ip netns exec``) and as a
Kubernetes Job in a plain python image (mounted from a ConfigMap as /probe/probe.py). It must not import
layernet or any third-party package, and it keeps to Python 3.8 syntax.

Contract: ``python -m layernet.probe`` (or ``python probe.py [FILE]``) reads ``{"level": NAME, "checks":
[...], "timeout": SECONDS?, "workers": N?}`` from stdin (or FILE) and writes a JSON list of result rows to
stdout. ``run_checks(level, checks)`` does the same in-process.

Check kinds (JSON objects; ``kind`` selects one; optional everywhere: ``timeout`` in seconds):

``dns``          {host, server, expect_ip?, parent?}
                 A query over UDP to ``server`` ("IP" or "IP:PORT", port 53 by default). ok when the answer is
                 NOERROR and its A records are exactly ``expect_ip`` (any A record when expect_ip is null),
                 each owned by the question name. ``parent`` names the level the answer should point at.
``dns-refused``  {host, server}
                 ok when the server answers quickly with REFUSED, NXDOMAIN or no A record; a timeout fails.
``tls``          {host, port, connect_ip?, server?, ca_file?, expect_peer?, expect_echo?, proxy?}
                 TLS handshake with SNI=host to connect_ip:port (connect_ip resolved through ``server`` with the
                 DNS client when absent); the chain must verify against ca_file (system trust when absent) and
                 the certificate must match host; the client offers the ALPN protocol "layernet-echo", for
                 which the lab cloud answers with its echo whatever the name, one JSON line {"host","port","peer"}:
                 host must equal the SNI and peer's address must equal expect_peer (when given). With
                 ``expect_echo: false`` (real endpoints, which send nothing first) the verified handshake is the
                 proof. ``proxy`` names the level whose proxy listens at connect_ip.
``path``         {connect_ip, port, flow?}
                 a non-TLS flow of the site (MQTT between brokers): ok when the TCP path is open (the target
                 connects or refuses); a timeout or local firewall refusal fails.
``refused``      {host, port, connect_ip, proxy?}
                 ok when the connection is reset or closed before a TLS handshake completes. host "" or
                 "(no-sni)" sends a ClientHello without SNI; "(non-tls)" sends plain HTTP bytes instead of TLS.

Result row (every check, in input order): level, check, host, port, expected, observed, ok, latency_ms,
hint ("" when ok; otherwise what to fix).
"""
from __future__ import annotations

import concurrent.futures
import json
import random
import socket
import ssl
import struct
import sys
import time

NO_SNI = "(no-sni)"
ECHO_ALPN = "layernet-echo"
NON_TLS = "(non-tls)"
DEFAULT_TIMEOUT = 3.0
ROW_FIELDS = ("level", "check", "host", "port", "expected", "observed", "ok", "latency_ms", "hint")

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
QTYPE_A = 1


class ProbeTimeout(Exception):
    pass


class Deadline:
    """One time budget shared by every socket operation of a check."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise ProbeTimeout()
        return left


# ----------------------------------------------------------------------------------------------- DNS
def build_query(name: str, qid: int, qtype: int = QTYPE_A) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    qname = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        qname += bytes([len(raw)]) + raw
    return header + qname + b"\x00" + struct.pack("!HH", qtype, 1)


def _read_name(buf: bytes, off: int):
    labels, jumped, end, hops = [], False, off, 0
    while True:
        if off >= len(buf):
            raise ValueError("truncated name")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf) or hops > 32:
                raise ValueError("bad compression pointer")
            if not jumped:
                end = off + 2
            off, jumped, hops = ((n & 0x3F) << 8) | buf[off + 1], True, hops + 1
            continue
        if n == 0:
            if not jumped:
                end = off + 1
            return ".".join(labels), end
        labels.append(buf[off + 1: off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def parse_response(buf: bytes, qid: int):
    """Return (rcode name, [(owner, ip)] of A records). Raises ValueError on a malformed or foreign reply."""
    if len(buf) < 12:
        raise ValueError("short DNS reply")
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", buf[:12])
    if rid != qid or not flags & 0x8000:
        raise ValueError("reply id does not match the query")
    off = 12
    for _ in range(qd):
        _, off = _read_name(buf, off)
        off += 4
    answers = []
    for _ in range(an):
        owner, off = _read_name(buf, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", buf[off: off + 10])
        off += 10
        rdata = buf[off: off + rdlen]
        off += rdlen
        if rtype == QTYPE_A and rdlen == 4:
            answers.append((owner, socket.inet_ntoa(rdata)))
    rcode = flags & 0x000F
    return RCODES.get(rcode, f"RCODE{rcode}"), answers


def _server_addr(server: str):
    host, _, port = str(server).partition(":")
    return host, int(port) if port else 53


def dns_query(name: str, server: str, deadline: Deadline):
    """One A query over UDP. Returns (rcode, [(owner, ip)]); raises ProbeTimeout when no reply in time."""
    qid = random.randint(0, 0xFFFF)
    addr = _server_addr(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(deadline.left())
        sock.sendto(build_query(name, qid), addr)
        while True:
            sock.settimeout(deadline.left())
            try:
                data, frm = sock.recvfrom(4096)
            except socket.timeout:
                raise ProbeTimeout() from None
            if frm[0] != addr[0]:
                continue
            try:
                return parse_response(data, qid)
            except ValueError:
                continue  # a stray or malformed datagram: keep waiting for ours


def _describe_dns(rcode: str, answers) -> str:
    if rcode != "NOERROR":
        return rcode
    if not answers:
        return "NOERROR, no A record"
    return ", ".join(ip for _, ip in answers)


def check_dns(level: str, c: dict, deadline: Deadline) -> dict:
    host, server, want = c["host"], c["server"], c.get("expect_ip")
    parent = c.get("parent") or want or "the parent level"
    expected = f"A {want}" if want else "A record(s)"
    row = {"expected": expected, "port": _server_addr(server)[1]}
    try:
        rcode, answers = dns_query(host, server, deadline)
    except ProbeTimeout:
        return dict(row, observed="timeout", ok=False,
                    hint=f"DNS at {level} ({server}) did not answer within {deadline.seconds:g}s: is the DNS server "
                         f"running and is UDP 53 open to it?")
    observed = _describe_dns(rcode, answers)
    ips = sorted({ip for _, ip in answers})
    foreign = [owner for owner, _ in answers if owner.lower().rstrip(".") != host.lower().rstrip(".")]
    if rcode != "NOERROR" or not ips:
        hint = (f"DNS at {level} has no answer for {host}: add it to the override that points at {parent}")
        return dict(row, observed=observed, ok=False, hint=hint)
    if want and ips != [want] and not c.get("parent"):
        return dict(row, observed=observed, ok=False,
                    hint=f"the resolver {server} used by {level} answers {', '.join(ips)} for {host}, not {want}: "
                         f"check the enterprise/upstream DNS")
    if want and ips != [want]:
        hint = (f"DNS at {level} answers {', '.join(ips)}: check the CoreDNS override points at "
                f"{parent}'s node IP ({want})")
        return dict(row, observed=observed, ok=False, hint=hint)
    if foreign:
        return dict(row, observed=f"{observed} (owner {foreign[0]})", ok=False,
                    hint=f"DNS at {level} answers with owner name {foreign[0]}, not {host}: use a per-name answer "
                         f"(local-data / hosts) instead of a rewrite to the zone apex")
    return dict(row, observed=observed, ok=True, hint="")


def check_dns_refused(level: str, c: dict, deadline: Deadline) -> dict:
    host, server = c["host"], c["server"]
    row = {"expected": "REFUSED, NXDOMAIN or no A record", "port": _server_addr(server)[1]}
    try:
        rcode, answers = dns_query(host, server, deadline)
    except ProbeTimeout:
        return dict(row, observed="timeout", ok=False,
                    hint=f"DNS at {level} ({server}) let the query for {host} time out: names outside the allow "
                         f"list must be refused fast (or go to a reachable upstream), never time out")
    observed = _describe_dns(rcode, answers)
    if answers:
        return dict(row, observed=observed, ok=False,
                    hint=f"DNS at {level} resolves {host}, which is not allowed: remove it from the override "
                         f"(or its wildcard zone catches it)")
    return dict(row, observed=observed, ok=True, hint="")


# ----------------------------------------------------------------------------------------------- TLS
def _connect(ip: str, port: int, deadline: Deadline) -> socket.socket:
    sock = socket.create_connection((ip, int(port)), timeout=deadline.left())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_line(tls: socket.socket, deadline: Deadline, limit: int = 4096) -> bytes:
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        tls.settimeout(deadline.left())
        try:
            chunk = tls.recv(limit)
        except socket.timeout:
            raise ProbeTimeout() from None
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


def _peer_ip(peer) -> str:
    text = str(peer or "")
    if text.count(":") == 1:  # "ip:port"
        return text.split(":")[0]
    return text


def _failure(exc: BaseException) -> str:
    """A short name for what went wrong on a connection."""
    if isinstance(exc, (ProbeTimeout, socket.timeout)):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        if "EOF" in str(exc) or "UNEXPECTED_EOF" in str(exc):
            return "closed"
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def check_tls(level: str, c: dict, deadline: Deadline) -> dict:
    host, port = c["host"], int(c["port"])
    want_peer, echo = c.get("expect_peer"), c.get("expect_echo", True)
    expected = f"handshake ok, certificate valid for {host}" + (f", peer {want_peer}" if want_peer and echo else "")
    row = {"expected": expected, "port": port}
    ip = c.get("connect_ip")
    if not ip:
        server = c.get("server")
        if not server:
            return dict(row, observed="no connect_ip and no DNS server given", ok=False,
                        hint="the check needs connect_ip or server")
        try:
            rcode, answers = dns_query(host, server, deadline)
        except ProbeTimeout:
            return dict(row, observed=f"DNS timeout at {server}", ok=False,
                        hint=f"DNS at {level} ({server}) did not answer for {host}: fix DNS first (see the dns row)")
        if not answers:
            return dict(row, observed=f"DNS {_describe_dns(rcode, answers)} at {server}", ok=False,
                        hint=f"DNS at {level} has no A record for {host}: fix DNS first (see the dns row)")
        ip = answers[0][1]
    where = f"{ip}:{port}" + (f" ({c['proxy']})" if c.get("proxy") else "")
    ctx = ssl.create_default_context(cafile=c.get("ca_file") or None)
    if echo:
        ctx.set_alpn_protocols([ECHO_ALPN])    # the lab cloud answers this protocol with its echo, whatever the name
    try:
        raw = _connect(ip, port, deadline)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        return dict(row, observed=f"connect {ip}:{port}: {_failure(exc)}", ok=False, hint=_connect_hint(exc, where))
    try:
        raw.settimeout(deadline.left())
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            line = _read_line(tls, deadline) if echo else b""
    except Exception as exc:  # noqa: BLE001
        raw.close()
        what = _failure(exc)
        if what in ("reset", "closed"):
            hint = (f"TLS {what} at {where}: {host} is not in the allow list of the proxy there, the source "
                    f"address is not in its allowed ranges, or a proxy further up refused it (see its access log)")
        elif what.startswith("certificate"):
            hint = (f"the certificate for {host} did not verify: something on the path terminates TLS or serves "
                    f"the wrong certificate, or ca_file is not the CA that signed it")
        elif what == "timeout":
            hint = f"no complete handshake with {where} within {deadline.seconds:g}s: a hop forwards to an address that does not answer"
        else:
            hint = f"TLS with {where} failed: {what}"
        return dict(row, observed=f"handshake: {what}", ok=False, hint=hint)
    if not echo:
        return dict(row, observed="handshake ok, certificate valid", ok=True, hint="")
    try:
        info = json.loads(line.decode("utf-8", "replace"))
        seen_host, peer = str(info.get("host", "")), _peer_ip(info.get("peer"))
    except (ValueError, AttributeError):
        return dict(row, observed=f"handshake ok; far end sent {line[:60]!r}", ok=False,
                    hint="the far end did not send the JSON line {host, port, peer}: is it the lab cloud server?")
    observed = f"handshake ok; far end saw host {seen_host}, peer {peer}"
    if seen_host.lower() != host.lower():
        return dict(row, observed=observed, ok=False,
                    hint=f"the far end answered for {seen_host}, not {host}: a proxy forwards to the wrong upstream")
    if want_peer and peer != want_peer:
        return dict(row, observed=observed, ok=False,
                    hint=f"the connection reached the far end from {peer}, not from the egress node {want_peer}: "
                         f"traffic did not leave through the egress proxy")
    return dict(row, observed=observed, ok=True, hint="")


def _connect_hint(exc: BaseException, where: str) -> str:
    what = _failure(exc)
    if what == "connection refused":
        return f"nothing listens on {where}: is the proxy running with this port in its listeners?"
    if what == "timeout":
        return f"no TCP answer from {where}: a firewall drops it or the address is wrong"
    return f"cannot connect to {where}: {what} (route or firewall)"


def check_refused(level: str, c: dict, deadline: Deadline) -> dict:
    host, port, ip = c.get("host") or "", int(c["port"]), c["connect_ip"]
    row = {"expected": "reset or closed before a handshake", "port": port}
    where = f"{ip}:{port}" + (f" ({c['proxy']})" if c.get("proxy") else "")
    try:
        raw = _connect(ip, port, deadline)
    except Exception as exc:  # noqa: BLE001
        return dict(row, observed=f"connect: {_failure(exc)}", ok=False,
                    hint=_connect_hint(exc, where) + " (a refusal can only be proven by a running proxy)")
    try:
        raw.settimeout(deadline.left())
        if host == NON_TLS:
            raw.sendall(b"GET / HTTP/1.0\r\nHost: layernet-probe\r\n\r\n")
            data = raw.recv(4096)
            if data:
                return dict(row, observed=f"got {len(data)} bytes back", ok=False,
                            hint=f"the listener at {where} answers non-TLS bytes: it needs tls_inspector and no default filter chain")
            return dict(row, observed="closed", ok=True, hint="")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sni = None if host in ("", NO_SNI) else host
        with ctx.wrap_socket(raw, server_hostname=sni):
            pass
        return dict(row, observed="handshake completed", ok=False,
                    hint=f"the proxy at {where} let {'a connection without SNI' if sni is None else sni} through: "
                         f"its filter chains must match only allowed names and it must have no default chain")
    except Exception as exc:  # noqa: BLE001
        what = _failure(exc)
        if what in ("reset", "closed"):
            return dict(row, observed=what, ok=True, hint="")
        if what == "timeout":
            return dict(row, observed="timeout", ok=False,
                        hint=f"{where} neither answered nor reset within {deadline.seconds:g}s: a refused name must be reset at once")
        return dict(row, observed=what, ok=False, hint=f"unexpected failure at {where}: {what}")
    finally:
        raw.close()


def check_path(level: str, c: dict, deadline: Deadline) -> dict:
    """A non-TLS flow (e.g. MQTT between the levels' brokers): the TCP path to connect_ip:port must be open.
    Open means the far end answered (connected, or refused because its service is not running yet); a timeout or
    a local firewall refusal means a firewall on the way drops it."""
    port, ip = int(c["port"]), c["connect_ip"]
    what = c.get("flow") or "flow"
    row = {"expected": f"TCP path open ({what})", "port": port}
    try:
        raw = _connect(ip, port, deadline)
    except Exception as exc:  # noqa: BLE001
        failure = _failure(exc)
        if failure == "connection refused":
            return dict(row, observed="open (nothing listens yet: connection refused by the target)", ok=True, hint="")
        return dict(row, observed=f"connect: {failure}", ok=False,
                    hint=f"{ip}:{port} is not reachable for {what}: {_connect_hint(exc, f'{ip}:{port}')}")
    raw.close()
    return dict(row, observed="open (connected)", ok=True, hint="")


CHECKS = {"dns": check_dns, "dns-refused": check_dns_refused, "tls": check_tls, "refused": check_refused,
          "path": check_path}


# ----------------------------------------------------------------------------------------------- running
def run_check(level: str, check: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
    kind = check.get("kind", "")
    started = time.monotonic()
    fn = CHECKS.get(kind)
    try:
        if fn is None:
            part = {"expected": "", "port": check.get("port"), "observed": f"unknown check kind {kind!r}", "ok": False,
                    "hint": f"kind must be one of {', '.join(CHECKS)}"}
        else:
            part = fn(level, check, Deadline(float(check.get("timeout") or timeout)))
    except Exception as exc:  # noqa: BLE001 - a broken check must still give a row
        part = {"expected": "", "port": check.get("port"), "observed": f"probe error: {type(exc).__name__}: {exc}",
                "ok": False, "hint": "the check itself is malformed or the probe has a bug"}
    return _row(level, kind, check.get("host", ""), started, part)


def _row(level: str, kind: str, host: str, started: float, part: dict) -> dict:
    return {
        "level": level, "check": kind, "host": host, "port": part.get("port"),
        "expected": part.get("expected", ""), "observed": part.get("observed", ""), "ok": bool(part.get("ok")),
        "latency_ms": round((time.monotonic() - started) * 1000.0, 1), "hint": part.get("hint", ""),
    }


def run_checks(level: str, checks: list, workers: int = 32, timeout: float = DEFAULT_TIMEOUT) -> list:
    """Run every check concurrently; rows come back in the order of `checks`."""
    if not checks:
        return []
    workers = max(1, min(workers, len(checks)))
    budgets = [float(c.get("timeout") or timeout) for c in checks]
    # every socket call is bounded by its check's deadline; this overall wait is only a safety net
    waves = -(-len(checks) // workers)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    started = time.monotonic()
    futures = [pool.submit(run_check, level, c, timeout) for c in checks]
    concurrent.futures.wait(futures, timeout=max(budgets) * waves + 2.0)
    rows = []
    for c, fut in zip(checks, futures):
        if fut.done():
            rows.append(fut.result())
        else:
            fut.cancel()
            rows.append(_row(level, c.get("kind", ""), c.get("host", ""), started,
                             {"port": c.get("port"), "observed": "timeout (check did not finish)", "ok": False,
                              "hint": "the probe could not finish this check in time"}))
    pool.shutdown(wait=False)
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] != "-":
            with open(argv[0], encoding="utf-8") as fh:
                request = json.load(fh)
        else:
            request = json.load(sys.stdin)
        level, checks = request["level"], request["checks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"probe: expected JSON {{\"level\": NAME, \"checks\": [...]}} on stdin or in a file: {exc}", file=sys.stderr)
        return 2
    rows = run_checks(level, checks, workers=int(request.get("workers", 32)),
                      timeout=float(request.get("timeout", DEFAULT_TIMEOUT)))
    json.dump(rows, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
