"""Clients for the hardening checks. Standard library only; runs inside a lab namespace.

Contract: ``python -m layernet.harden.wire`` reads one JSON request from stdin and writes one JSON answer to
stdout. ``{"op": ...}`` selects what to do:

``hello``  {cases: [{id, connect_ip, port, mode, sni?, chunks?}], workers?, timeout?}
           One TCP connection per case. ``mode`` "tls" sends a ClientHello whose server_name extension
           carries exactly the bytes of ``sni`` (UTF-8), "no-sni" one without that extension, "split" the
           same ClientHello as "tls" in ``chunks`` TCP segments (TCP_NODELAY, a short pause between them),
           "non-tls" plain HTTP bytes. The ClientHello comes from the local TLS library (so the far end can
           answer it) with its server_name extension rewritten, which lets any name be sent, also ones the
           library would refuse (IP addresses, empty labels, 64-character labels, a trailing dot).
           Answer: rows {id, source ("ip:port" of our end), observed, ms}; observed is "server-hello",
           "alert", "data", "reset", "closed", "timeout" or "connect: <error>".
``scan``   {targets: [{ip, proto: tcp|udp|icmp, port?}], timeout?, workers?}
           Answer: rows {ip, proto, port, observed, reachable}. Reachable means the address answered in any
           way (a TCP SYN-ACK or RST, a UDP reply or ICMP port unreachable, an ICMP echo reply); a local
           firewall refusal (EPERM), a timeout or an ICMP error from a router is unreachable.
``load``   {connect_ip, port, hosts: [...], ca_file, clients, seconds, timeout?}
           ``clients`` threads open new TLS connections (verified, SNI from ``hosts`` in turn) for
           ``seconds``, offering the ALPN protocol "layernet-echo" (the lab cloud's echo); each reads the far
           end's one line. Answer: {connections, failed, errors (a sample), connect_ms, handshake_ms (sorted
           samples, at most 20000 each), seconds}.

Traffic goes only to the addresses in the request; the caller checks they belong to the lab.
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time

HTTP_BYTES = b"GET / HTTP/1.1\r\nHost: layernet-hardening\r\n\r\n"
MAX_CLIENTS, MAX_SECONDS = 256, 300.0


# ----------------------------------------------------------------------------------------------- ClientHello
def _base_client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="placeholder.layernet.invalid")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _u16(n: int) -> bytes:
    return struct.pack("!H", n)


def client_hello(sni) -> bytes:
    """A TLS record holding a ClientHello; `sni` bytes go into the server_name extension (None: no extension)."""
    rec = _base_client_hello()
    if rec[0] != 0x16 or rec[5] != 0x01:
        raise ValueError("the TLS library did not produce a ClientHello record")
    body = rec[5:5 + struct.unpack("!H", rec[3:5])[0]]
    ch = body[4:4 + int.from_bytes(body[1:4], "big")]
    off = 2 + 32
    off += 1 + ch[off]                                    # session id
    off += 2 + struct.unpack("!H", ch[off:off + 2])[0]    # cipher suites
    off += 1 + ch[off]                                    # compression methods
    head = ch[:off]
    ext_len = struct.unpack("!H", ch[off:off + 2])[0]
    exts, p, end = [], off + 2, off + 2 + ext_len
    while p < end:
        etype, elen = struct.unpack("!HH", ch[p:p + 4])
        exts.append((etype, ch[p + 4:p + 4 + elen]))
        p += 4 + elen
    out = []
    for etype, data in exts:
        if etype == 21:        # padding: its length was chosen for the original size
            continue
        if etype == 0:
            if sni is None:
                continue
            entry = b"\x00" + _u16(len(sni)) + sni
            data = _u16(len(entry)) + entry
        out.append(struct.pack("!HH", etype, len(data)) + data)
    ext_bytes = b"".join(out)
    new_ch = head + _u16(len(ext_bytes)) + ext_bytes
    hs = b"\x01" + len(new_ch).to_bytes(3, "big") + new_ch
    return rec[:3] + _u16(len(hs)) + hs


# ----------------------------------------------------------------------------------------------- hello
def _classify(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno == errno.EPERM:
        return "blocked locally"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def _read_reply(sock: socket.socket, timeout: float) -> str:
    buf, end = b"", time.monotonic() + timeout
    while len(buf) < 6:
        left = end - time.monotonic()
        if left <= 0:
            return "timeout" if not buf else "data"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except Exception as exc:  # noqa: BLE001
            what = _classify(exc)
            return what if not buf else "data"
        if not chunk:
            return "closed" if not buf else "data"
        buf += chunk
    if buf[0] == 0x16 and buf[5] == 0x02:
        return "server-hello"
    if buf[0] == 0x15:
        return "alert"
    return "data"


def hello_case(case: dict, timeout: float) -> dict:
    started = time.monotonic()
    row = {"id": case.get("id"), "source": "", "observed": ""}
    mode = case.get("mode", "tls")
    sni = case.get("sni")
    try:
        if mode == "non-tls":
            payload = HTTP_BYTES
        else:
            payload = client_hello(None if mode == "no-sni" or sni is None else str(sni).encode("utf-8"))
    except Exception as exc:  # noqa: BLE001
        row.update(observed=f"build: {type(exc).__name__}: {exc}", ms=0.0)
        return row
    try:
        sock = socket.create_connection((case["connect_ip"], int(case["port"])), timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        row.update(observed=f"connect: {_classify(exc)}", ms=round(1000 * (time.monotonic() - started), 2))
        return row
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ip, port = sock.getsockname()[:2]
        row["source"] = f"{ip}:{port}"
        try:
            if mode == "split":
                n = max(2, int(case.get("chunks", 5)))
                cuts = sorted({3} | {len(payload) * i // n for i in range(1, n)})
                parts = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)]) if b > a]
                for i, part in enumerate(parts):
                    sock.sendall(part)
                    if i < len(parts) - 1:
                        time.sleep(0.01)
            else:
                sock.sendall(payload)
            row["observed"] = _read_reply(sock, timeout)
        except Exception as exc:  # noqa: BLE001
            row["observed"] = _classify(exc)
    finally:
        sock.close()
    row["ms"] = round(1000 * (time.monotonic() - started), 2)
    return row


# ----------------------------------------------------------------------------------------------- scan
def _dns_query() -> bytes:
    return struct.pack("!HHHHHH", random.randint(0, 0xFFFF), 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


_icmp_lock = threading.Lock()


def _scan_icmp(ip: str, timeout: float) -> tuple:
    ident, seq = os.getpid() & 0xFFFF, random.randint(0, 0xFFFF)
    payload = b"layernet-isolation"
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        try:
            s.sendto(pkt, (ip, 0))
        except OSError as exc:
            return _classify(exc), False
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return "timeout", False
            s.settimeout(left)
            try:
                data, frm = s.recvfrom(2048)
            except socket.timeout:
                return "timeout", False
            ihl = (data[0] & 0x0F) * 4
            itype, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if itype == 0 and frm[0] == ip and rid == ident and rseq == seq:
                return "echo reply", True
            if itype == 3 and len(data) >= ihl + 8 + 20 + 8:    # unreachable from a router: not our target
                inner = data[ihl + 8:]
                if socket.inet_ntoa(inner[16:20]) == ip:
                    return f"icmp unreachable from {frm[0]}", False


def _scan_one(t: dict, timeout: float) -> dict:
    ip, proto, port = t["ip"], t["proto"], t.get("port")
    row = {"ip": ip, "proto": proto, "port": port}
    try:
        if proto == "tcp":
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                try:
                    s.connect((ip, int(port)))
                    return dict(row, observed="connected", reachable=True)
                except ConnectionRefusedError:
                    return dict(row, observed="refused (RST from the target)", reachable=True)
                except Exception as exc:  # noqa: BLE001
                    return dict(row, observed=_classify(exc), reachable=False)
        if proto == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                try:
                    s.connect((ip, int(port)))
                    s.send(_dns_query() if int(port) == 53 else b"layernet-isolation")
                    s.recv(2048)
                    return dict(row, observed="reply", reachable=True)
                except ConnectionRefusedError:
                    return dict(row, observed="icmp port unreachable (from the target)", reachable=True)
                except Exception as exc:  # noqa: BLE001
                    return dict(row, observed=_classify(exc), reachable=False)
        if proto == "icmp":
            observed, reachable = _scan_icmp(ip, timeout)
            return dict(row, observed=observed, reachable=reachable)
        return dict(row, observed=f"unknown protocol {proto!r}", reachable=None)
    except Exception as exc:  # noqa: BLE001
        return dict(row, observed=f"scan error: {type(exc).__name__}: {exc}", reachable=None)


# ----------------------------------------------------------------------------------------------- load
def run_load(req: dict) -> dict:
    clients = max(1, min(int(req.get("clients", 64)), MAX_CLIENTS))
    seconds = max(0.1, min(float(req.get("seconds", 30)), MAX_SECONDS))
    timeout = float(req.get("timeout", 5.0))
    ip, port, hosts = req["connect_ip"], int(req["port"]), list(req["hosts"])
    ctx = ssl.create_default_context(cafile=req["ca_file"])
    ctx.set_alpn_protocols(["layernet-echo"])      # the lab cloud's echo, also for names its apps serve
    lock = threading.Lock()
    stats = {"connections": 0, "failed": 0, "errors": [], "connect_ms": [], "handshake_ms": []}
    start = time.monotonic()
    end = start + seconds

    def worker(k: int) -> None:
        i = k
        while time.monotonic() < end:
            host = hosts[i % len(hosts)]
            i += clients
            t0 = time.perf_counter()
            err, c_ms, h_ms = None, None, None
            try:
                raw = socket.create_connection((ip, port), timeout=timeout)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t1 = time.perf_counter()
                c_ms = 1000 * (t1 - t0)
                try:
                    raw.settimeout(timeout)
                    with ctx.wrap_socket(raw, server_hostname=host) as tls:
                        h_ms = 1000 * (time.perf_counter() - t1)
                        line = b""
                        while not line.endswith(b"\n"):
                            chunk = tls.recv(4096)
                            if not chunk:
                                break
                            line += chunk
                        if json.loads(line).get("host") != host:
                            err = f"far end answered for another host: {line[:80]!r}"
                finally:
                    raw.close()
            except Exception as exc:  # noqa: BLE001
                err = f"{host}: {type(exc).__name__}: {exc}"
            with lock:
                stats["connections"] += 1
                if err:
                    stats["failed"] += 1
                    if len(stats["errors"]) < 20:
                        stats["errors"].append(err)
                else:
                    stats["connect_ms"].append(round(c_ms, 3))
                    stats["handshake_ms"].append(round(h_ms, 3))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 4 * timeout + 5)
    stats["seconds"] = round(time.monotonic() - start, 3)
    stats["clients"] = clients
    for key in ("connect_ms", "handshake_ms"):
        vals = sorted(stats[key])
        if len(vals) > 20000:
            step = len(vals) / 20000.0
            vals = [vals[int(i * step)] for i in range(20000)]
        stats[key] = vals
    return stats


# ----------------------------------------------------------------------------------------------- main
def _pool_map(fn, items: list, workers: int) -> list:
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


def handle(req: dict):
    op = req.get("op")
    timeout = float(req.get("timeout", 3.0))
    workers = int(req.get("workers", 64))
    if op == "hello":
        return _pool_map(lambda c: hello_case(c, timeout), list(req["cases"]), workers)
    if op == "scan":
        return _pool_map(lambda t: _scan_one(t, timeout), list(req["targets"]), workers)
    if op == "load":
        return run_load(req)
    raise ValueError(f"unknown op {op!r}: expected hello, scan or load")


def main() -> int:
    try:
        req = json.load(sys.stdin)
    except ValueError as exc:
        print(f"wire: expected one JSON object on stdin: {exc}", file=sys.stderr)
        return 2
    json.dump(handle(req), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
