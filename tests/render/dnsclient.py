"""A very small DNS client (standard library only) for tests against a real DNS server on loopback."""
from __future__ import annotations

import random
import socket
import struct
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
