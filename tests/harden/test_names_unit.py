"""The name corpus and the ClientHello builder (no lab needed)."""
from __future__ import annotations

import ssl
import struct

from layernet.allowlist import effective_allowlist, host_matches
from layernet.harden.lab import shifted_plan
from layernet.harden.names import corpus
from layernet.harden.wire import client_hello
from layernet.site import load_site

from harden_helpers import LAB_SITE


def _al():
    return effective_allowlist(load_site(LAB_SITE))


def test_corpus_is_large_deterministic_and_covers_every_trick():
    a, b = corpus(_al()), corpus(_al())
    assert a == b and len(a) >= 300
    fams = {c["family"] for c in a}
    for want in ("wildcard apex", "prefix look-alike", "suffix look-alike", "extra label", "upper case",
                 "trailing dot", "punycode", "253 characters", "63-character label", "IP address", "empty SNI",
                 "no SNI", "non-TLS bytes", "split ClientHello"):
        assert want in fams, want
    assert any(len(c["name"] or "") == 253 for c in a)
    assert {c["mode"] for c in a} == {"tls", "split", "no-sni", "non-tls"}


def _sni_of(record: bytes):
    ch = record[9:]
    off = 2 + 32
    off += 1 + ch[off]
    off += 2 + struct.unpack("!H", ch[off:off + 2])[0]
    off += 1 + ch[off]
    end = off + 2 + struct.unpack("!H", ch[off:off + 2])[0]
    p = off + 2
    while p < end:
        t, n = struct.unpack("!HH", ch[p:p + 4])
        if t == 0:
            return ch[p + 4 + 5:p + 4 + n]
        p += 4 + n
    return None


def test_client_hello_carries_exactly_the_given_name():
    for sni in (b"management.azure.com", b"10.0.0.1", b"a..b.example.", b"x" * 64 + b".example.com", b""):
        rec = client_hello(sni)
        assert rec[0] == 0x16 and rec[5] == 0x01
        assert struct.unpack("!H", rec[3:5])[0] == len(rec) - 5
        assert _sni_of(rec) == sni
    assert _sni_of(client_hello(None)) is None


def test_client_hello_is_accepted_by_a_tls_server():
    """The rewritten ClientHello is still one a server answers with a ServerHello."""
    from pathlib import Path
    import tempfile

    from layernet.lab import pki

    with tempfile.TemporaryDirectory() as d:
        cert, key = pki.issue_server_cert(Path(d) / "ca", Path(d) / "srv", ["a.example"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        srv = ctx.wrap_bio(inc, out, server_side=True)
        inc.write(client_hello(b"odd..name.example."))
        try:
            srv.do_handshake()
        except ssl.SSLWantReadError:
            pass
        reply = out.read()
        assert reply[0] == 0x16 and reply[5] == 0x02


def test_host_matching_rules_measured_on_envoy():
    """What the lab differential found about Envoy 1.40 (kept here so it does not regress without a lab)."""
    assert host_matches("*.blob.core.windows.net", ".blob.core.windows.net")
    assert not host_matches("dl.k8s.io", "dl.\u212a8s.io")               # KELVIN SIGN is not an ASCII k
    assert host_matches("*.blob.core.windows.net", "é.blob.core.windows.net")
    long = ("l" * 63 + ".") * 3 + "q" * 60 + ".blob.core.windows.net"
    assert len(long) == 274 and not host_matches("*.blob.core.windows.net", long)
    assert host_matches("*.blob.core.windows.net", long[19:])            # 255 bytes: still seen by Envoy
    assert not host_matches("*.blob.core.windows.net", "a\x00b.blob.core.windows.net")


def test_shifted_plan_moves_every_network():
    site = load_site(LAB_SITE, shifted_plan(load_site(LAB_SITE), "10.99.0.0/16"))
    assert str(site.admin.network) == "10.99.0.0/24" and str(site.level("level3").node_ip) == "10.99.103.10"
