"""The DNS-forwarding check reads CoreDNS's `log` plugin lines and the forward targets of a level's config."""
from __future__ import annotations

from layernet.harden.checks import _coredns_log, _forwards_outside

LOG = """\
maxprocs: Leaving GOMAXPROCS=2: CPU quota undefined
[INFO] 192.168.102.10:41234 - 4242 "A IN Evil.Example. udp 30 false 512" REFUSED qr,rd 30 0.000512791s
[INFO] 127.0.0.1:57041 - 35661 "AAAA IN management.azure.com. tcp 38 false 65535" NOERROR qr,aa,rd 38 0.00001733s
[INFO] 10.81.104.10:42213 - 42521 "A IN example.com. udp 29 false 512" NOERROR qr,aa,rd 56 2.30669e-05s
[ERROR] plugin/errors: 2 example.net. A: read udp: i/o timeout
"""


def test_coredns_log_lines_by_name():
    got = _coredns_log(LOG)
    assert got == {"evil.example": [("192.168.102.10:41234", "REFUSED", "0.000512791")],
                   "management.azure.com": [("127.0.0.1:57041", "NOERROR", "0.00001733")],
                   "example.com": [("10.81.104.10:42213", "NOERROR", "2.30669e-05")]}


def _files(d):
    return [d / "Corefile", *sorted((d / "custom").glob("*"))]


def test_forward_targets_outside_the_level(tmp_path):
    (tmp_path / "custom").mkdir()
    (tmp_path / "Corefile").write_text(".:53 {\n    forward . 127.0.0.1:1053\n    cache 30\n}\n")
    (tmp_path / "custom" / "a.server").write_text("z:1053 {\n    template ANY ANY {\n        rcode NXDOMAIN\n    }\n}\n")
    assert _forwards_outside(_files(tmp_path)) == []
    (tmp_path / "custom" / "b.server").write_text(".:1053 {\n    forward . 10.0.0.53 10.0.0.54 {\n        max_fails 2\n    }\n}\n")
    assert _forwards_outside(_files(tmp_path)) == ["10.0.0.53", "10.0.0.54"]
