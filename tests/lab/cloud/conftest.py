"""The `lcloud` fixture: a whole cloud (front + HTTPS apps) in this process on loopback, and the real host names
resolving to it.

Names resolve through a patched `socket.getaddrinfo`: every name a route serves (and any name under
`.example.test`) goes to 127.0.0.1 and port 443/9093 to the front's free port, so SDK clients use the real
URLs (https://management.azure.com/...) with the real SNI, and trust the lab CA through connection_verify.
"""
from __future__ import annotations

import socket

import pytest

from cloud_helpers import LoopbackCloud


@pytest.fixture(scope="module")
def lcloud(tmp_path_factory):
    c = LoopbackCloud(tmp_path_factory.mktemp("cloud"))
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if isinstance(host, str) and c.serves(host):
            cloud_port = int(port or 443)
            port = next((p for p, cp in c.ports.items() if cp == cloud_port), port)
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = resolve
    try:
        yield c
    finally:
        socket.getaddrinfo = real
        c.close()
