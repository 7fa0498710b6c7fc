"""A very small DNS client (standard library only) for tests against a real DNS server.

Also a command, for servers inside a network namespace (run it there with `ip netns exec NS python dnsclient.py`):

    batch SERVER PORT      questions on stdin as a JSON list of [name, type, tcp]; one JSON reply per question
                           on stdout: {"rcode", "answers": [[owner, type, ttl, data]], "seconds", "aa"}
    upstream ADDR PORT LOG a UDP DNS server answering every A question with 203.0.113.7 (other types: NODATA)
                           and appending each question name to LOG
"""
from __future__ import annotations

import json
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "TXT": 16, "AAAA": 28, "HTTPS": 65}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass
class Answer:
    name: str
    rtype: int
    ttl: int
    data: str


@dataclass
class Reply:
    rcode: str
    answers: list[Answer] = field(default_factory=list)
    seconds: float = 0.0
    aa: bool = False

    def addresses(self) -> list[str]:
        return [a.data for a in self.answers if a.rtype == 1]


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, jumped, end = [], False, off
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            ptr = struct.unpack("!H", msg[off:off + 2])[0] & 0x3FFF
            if not jumped:
                end = off + 2
            jumped, off = True, ptr
            continue
        if n == 0:
            if not jumped:
                end = off + 1
            break
        labels.append(msg[off + 1:off + 1 + n].decode())
        off += 1 + n
    return ".".join(labels) + ".", end


def query(server: str, port: int, name: str, qtype: str = "A", timeout: float = 2.0, tcp: bool = False) -> Reply:
    qid = random.randrange(65536)
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", TYPES[qtype], 1)
    t0 = time.monotonic()
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            size = struct.unpack("!H", _recv_exact(s, 2))[0]
            msg = _recv_exact(s, size)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(packet, (server, port))
            while True:
                msg, _ = s.recvfrom(4096)
                if struct.unpack("!H", msg[:2])[0] == qid:
                    break
    seconds = time.monotonic() - t0
    _, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        owner, off = _read_name(msg, off)
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        data = socket.inet_ntoa(rdata) if rtype == 1 else rdata.hex()
        answers.append(Answer(owner, rtype, ttl, data))
    return Reply(RCODES.get(flags & 0xF, str(flags & 0xF)), answers, seconds, bool(flags & 0x0400))


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def serve_upstream(addr: str, port: int, log_path: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # CoreDNS binds port 53 on every address with SO_REUSEPORT; sharing the port needs the option on both.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((addr, port))
    with open(log_path, "a") as log:
        while True:
            msg, peer = sock.recvfrom(4096)
            name, off = _read_name(msg, 12)
            qtype = struct.unpack("!H", msg[off:off + 2])[0]
            log.write(name.rstrip(".").lower() + "\n")
            log.flush()
            question = msg[12:off + 4]
            if qtype == 1:
                ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton("203.0.113.7")
                head = msg[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
            else:
                ans = b""
                head = msg[:2] + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0)
            sock.sendto(head + question + ans, peer)


def main(argv: list[str]) -> int:
    if argv[:1] == ["batch"]:
        server, port = argv[1], int(argv[2])
        out = []
        for name, qtype, tcp in json.load(sys.stdin):
            try:
                r = query(server, port, name, qtype, timeout=2.0, tcp=bool(tcp))
                out.append({"rcode": r.rcode, "seconds": r.seconds, "aa": r.aa,
                            "answers": [[a.name, a.rtype, a.ttl, a.data] for a in r.answers]})
            except OSError as exc:          # a timeout is a result the test reports, not a crash
                out.append({"rcode": f"error: {exc!r}", "seconds": None, "aa": False, "answers": []})
        json.dump(out, sys.stdout)
        return 0
    if argv[:1] == ["upstream"]:
        serve_upstream(argv[1], int(argv[2]), argv[3])
        return 0
    print("usage: dnsclient.py batch SERVER PORT | upstream ADDR PORT LOG", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
