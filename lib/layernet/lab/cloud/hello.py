"""Read a TLS ClientHello without consuming it: server name (SNI) and the offered ALPN protocols.

`peek_hello(sock)` waits (MSG_PEEK) until the first handshake message is complete, possibly spread over
several TLS records and TCP segments, and parses it; the bytes stay in the socket for whoever handles the
connection next (the echo's own TLS server, or a spliced backend). Standard library only.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Optional

MAX_HELLO = 64 * 1024
EXT_SERVER_NAME, EXT_ALPN = 0, 16


class NotTLS(ValueError):
    """The first bytes are not a TLS handshake record holding a ClientHello."""


@dataclass
class Hello:
    sni: str = ""
    alpn: list[str] = field(default_factory=list)


def _records_need(buf: bytes) -> tuple[Optional[bytes], int]:
    """(handshake bytes of the first message when complete, bytes wanted in total otherwise)."""
    hs, off = b"", 0
    while True:
        if len(buf) < off + 5:
            return None, off + 5
        ctype, _ver, length = buf[off], buf[off + 1:off + 3], struct.unpack("!H", buf[off + 3:off + 5])[0]
        if ctype != 0x16:
            raise NotTLS(f"record type {ctype} is not a handshake")
        if len(buf) < off + 5 + length:
            return None, off + 5 + length
        hs += buf[off + 5:off + 5 + length]
        off += 5 + length
        if len(hs) >= 4:
            if hs[0] != 0x01:
                raise NotTLS("the first handshake message is not a ClientHello")
            need = 4 + int.from_bytes(hs[1:4], "big")
            if need > MAX_HELLO:
                raise NotTLS("ClientHello too large")
            if len(hs) >= need:
                return hs[:need], 0


def parse_client_hello(hs: bytes) -> Hello:
    """Parse a handshake message (type 1, 3-byte length, body) into SNI and ALPN."""
    body = hs[4:]
    out = Hello()
    try:
        off = 2 + 32                                                   # version, random
        off += 1 + body[off]                                           # session id
        off += 2 + struct.unpack("!H", body[off:off + 2])[0]           # cipher suites
        off += 1 + body[off]                                           # compression methods
        if off + 2 > len(body):
            return out                                                 # no extensions at all
        end = off + 2 + struct.unpack("!H", body[off:off + 2])[0]
        p = off + 2
        while p + 4 <= end:
            etype, elen = struct.unpack("!HH", body[p:p + 4])
            data = body[p + 4:p + 4 + elen]
            p += 4 + elen
            if etype == EXT_SERVER_NAME and len(data) >= 5:
                q, lend = 2, 2 + struct.unpack("!H", data[:2])[0]
                while q + 3 <= lend:
                    ntype, nlen = data[q], struct.unpack("!H", data[q + 1:q + 3])[0]
                    if ntype == 0:
                        out.sni = data[q + 3:q + 3 + nlen].decode("utf-8", "surrogateescape")
                        break
                    q += 3 + nlen
            elif etype == EXT_ALPN and len(data) >= 2:
                q, lend = 2, 2 + struct.unpack("!H", data[:2])[0]
                while q < lend and q < len(data):
                    n = data[q]
                    out.alpn.append(data[q + 1:q + 1 + n].decode("ascii", "replace"))
                    q += 1 + n
    except (IndexError, struct.error) as exc:
        raise NotTLS(f"malformed ClientHello: {exc}") from None
    return out


def peek_hello(sock: socket.socket, timeout: float = 10.0) -> Hello:
    """Wait for the whole ClientHello on `sock` without reading it. Raises NotTLS, or OSError/timeout."""
    # a blocking socket with a receive timeout: MSG_WAITALL then waits for segments still to come (a Python
    # socket timeout would make the socket non-blocking, and a peek would return what is there at once)
    sock.settimeout(None)
    sec = max(0.001, float(timeout))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(sec), int((sec % 1) * 1e6)))
    try:
        return _peek(sock)
    except BlockingIOError:
        raise socket.timeout("no complete ClientHello in time") from None
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))


def _peek(sock: socket.socket) -> Hello:
    want = 5
    while True:
        buf = sock.recv(want, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(buf) < want:
            raise NotTLS("the client closed before its ClientHello was complete")
        hs, want = _records_need(buf)
        if hs is not None:
            return parse_client_hello(hs)
        if want > MAX_HELLO + 5 * 8:
            raise NotTLS("ClientHello too large")
