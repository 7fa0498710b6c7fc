"""The differential finds a connection's Envoy log lines by source address and port; another connection that reused
the source port (seen with thousands of short connections on a busy machine) must not decide its verdict."""
from __future__ import annotations

from layernet.harden.checks import _verdict, own_lines


def test_a_reused_source_port_with_another_name_is_not_this_connections_line():
    mine = {"sni": "Dl.k8s.io", "filter_chain": "allowed"}
    other = {"sni": "qx3.guestnotificationservice.azure.com", "filter_chain": ""}
    assert _verdict([mine, other])[0] == "refused"                 # what the key alone gave
    assert own_lines([mine, other], "Dl.k8s.io") == [mine]
    assert _verdict(own_lines([mine, other], "dl.K8S.io"))[0] == "forwarded"


def test_a_line_without_a_server_name_stays_and_nothing_is_dropped_when_nothing_matches():
    reset = {"sni": None, "filter_chain": "", "response_flags": "NR"}
    other = {"sni": "login.microsoftonline.com", "filter_chain": "allowed"}
    assert own_lines([reset, other], "dl.k8s.io..") == [reset]
    assert _verdict(own_lines([reset, other], "dl.k8s.io.."))[0] == "reset"
    assert own_lines([other], "a.dl.k8s.io") == [other]


def test_a_case_that_sends_no_server_name_keeps_the_lines_without_one():
    plain = {"sni": None, "filter_chain": "", "response_flags": "NR"}
    other = {"sni": "mcr.microsoft.com", "filter_chain": "allowed"}
    assert own_lines([plain, other], None) == [plain]
