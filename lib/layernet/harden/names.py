"""The server-name corpus of the differential test: hand-written tricks plus deterministic generated names.

`corpus(allowlist)` returns cases ``{"name", "mode", "family", "ports"?}``: ``mode`` is "tls" (the name in
the ClientHello's server_name), "split" (the same ClientHello in several TCP segments), "no-sni" or
"non-tls"; ``name`` is None for the last two. The generated part comes from a fixed seed, so every run
sends the same names (a failure can be replayed).
"""
from __future__ import annotations

import random
from typing import Optional

from layernet.allowlist import AllowList, is_wildcard

SEED = 20240531
GENERATED = 160
LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def _case(name: Optional[str], family: str, mode: str = "tls", **extra) -> dict:
    return {"name": name, "mode": mode, "family": family, **extra}


def _label(rng: random.Random, lo: int = 1, hi: int = 12) -> str:
    n = rng.randint(lo, hi)
    if n == 1:
        return rng.choice(LABEL_CHARS[:36])
    inner = "".join(rng.choice(LABEL_CHARS) for _ in range(n - 2))
    return rng.choice(LABEL_CHARS[:36]) + inner + rng.choice(LABEL_CHARS[:36])


def _long_name(suffix: str, total: int) -> str:
    """A name of exactly `total` characters ending in `suffix` ("." + zone), made of 63-character labels."""
    need = total - len(suffix)
    labels = []
    while need > 0:
        if need <= 63:
            labels.append("q" * need)
            need = 0
        elif need == 64:                 # 62 + dot + 1
            labels.append("l" * 62)
            need -= 63
        else:
            labels.append("l" * 63)
            need -= 64
    name = ".".join(labels) + suffix
    return name


def hand_written(allowlist: AllowList) -> list[dict]:
    hosts = sorted({e.host for e in allowlist.entries})
    exact = [h for h in hosts if not is_wildcard(h)]
    zones = [h[2:] for h in hosts if is_wildcard(h)]
    out: list[dict] = []
    for h in exact:
        out += [
            _case(h, "exact"),
            _case(h.upper(), "upper case"),
            _case(h[0].upper() + h[1:], "upper case"),
            _case(h + ".", "trailing dot"),
            _case(h + "..", "trailing dot"),
            _case("evil" + h, "prefix look-alike"),
            _case("x-" + h, "prefix look-alike"),
            _case(h + ".evil.example", "suffix look-alike"),
            _case(h + "-evil.example", "suffix look-alike"),
            _case("a." + h, "extra label"),
            _case("www." + h, "extra label"),
            _case(h.split(".", 1)[1], "parent domain"),
            _case(h[:-1], "truncated"),
            _case("." + h, "empty label"),
            _case(h.replace(".", "..", 1), "empty label"),
        ]
    for z in zones:
        out += [
            _case(z, "wildcard apex"),
            _case(z + ".", "wildcard apex"),
            _case("a." + z, "wildcard, one label"),
            _case("a.b." + z, "wildcard, extra labels"),
            _case("A." + z.upper(), "upper case"),
            _case("a." + z + ".", "trailing dot"),
            _case("x" + z, "prefix look-alike"),
            _case("a.x" + z, "prefix look-alike"),
            _case("a." + z + ".evil.example", "suffix look-alike"),
            _case("." + z, "empty label"),
            _case(".." + z, "empty label"),
            _case("a.." + z, "empty label"),
            _case("*." + z, "literal asterisk"),
            _case("x" * 63 + "." + z, "63-character label"),
            _case("x" * 64 + "." + z, "64-character label"),
            _case("xn--bcher-kva." + z, "punycode"),
            _case("xn--80ak6aa92e." + z, "punycode"),
            _case("a_b." + z, "odd characters"),
        ]
    # lengths around the limits: DNS (253), and the TLS library's limit on a server name (255 bytes)
    if zones:
        z = "." + zones[0]
        for total in (253, 254, 255, 256, 300, 1000):
            out.append(_case(_long_name(z, total), f"{total} characters"))
    if exact:
        h = exact[0]
        out.append(_case(_long_name("." + h, 253), "253 characters"))
    # punycode and Unicode look-alikes of exact names
    out += [
        _case("xn--mnagement-2ya.azure.com", "punycode"),
        _case("management.xn--azure-jua.com", "punycode"),
        _case("xn--management-xx1a.azure.com", "punycode"),
        _case("xn--80ak6aa92e.com", "punycode"),
        _case("managément.azure.com", "unicode"),
        _case("mаnagement.azure.com", "unicode"),           # Cyrillic a
        _case("ｍanagement.azure.com", "unicode"),          # full-width m
        _case("dl.\u212a8s.io", "unicode"),                  # KELVIN SIGN: lower() gives an ASCII k
        _case("eastus.dp.\u212aubernetesconfiguration.azure.com", "unicode"),
        _case("management.azure.com\u3002", "unicode"),      # ideographic full stop
    ]
    # odd bytes and forms
    out += [
        _case("management.azure.com\x00.evil.example", "odd characters"),
        _case("management azure.com", "odd characters"),
        _case("management.azure.com:443", "odd characters"),
        _case("management.azure.com/", "odd characters"),
        _case("*", "literal asterisk"),
        _case("*.azure.com", "literal asterisk"),
        _case("*.com", "literal asterisk"),
        _case(".", "odd characters"),
        _case("localhost", "odd characters"),
    ]
    # IP addresses as server names, the empty name, no name, not TLS at all
    out += [_case(ip, "IP address") for ip in ("198.51.100.10", "127.0.0.1", "192.168.103.10", "10.0.0.1",
                                               "::1", "[::1]", "0.0.0.0", "3232261898")]
    out += [_case("", "empty SNI"), _case(None, "no SNI", "no-sni"), _case(None, "non-TLS bytes", "non-tls")]
    # a ClientHello split across several TCP segments (allowed and refused names)
    split = [exact[0] if exact else None, ("a." + zones[0]) if zones else None, "evil.example",
             (zones[0] if zones else None), (exact[0] + ".evil.example") if exact else None]
    for chunks in (2, 5, 12):
        out += [_case(n, "split ClientHello", "split", chunks=chunks) for n in split if n]
    return out


def generated(allowlist: AllowList, n: int = GENERATED, seed: int = SEED) -> list[dict]:
    """Names derived from the allow list by random edits (fixed seed): random labels under wildcards, single
    character edits, label insertions and deletions, case flips, joined or swapped zones."""
    rng = random.Random(seed)
    hosts = sorted({e.host for e in allowlist.entries})
    out: list[dict] = []
    for _ in range(n):
        h = rng.choice(hosts)
        base = ("a." + h[2:]) if is_wildcard(h) else h
        if is_wildcard(h):
            base = ".".join(_label(rng) for _ in range(rng.randint(1, 3))) + h[1:]
        op = rng.randrange(8)
        if op == 0:
            name = base                                          # as is (a random sub-name under a wildcard)
        elif op == 1:                                            # change one character
            i = rng.randrange(len(base))
            name = base[:i] + rng.choice(LABEL_CHARS + ".") + base[i + 1:]
        elif op == 2:                                            # delete one character
            i = rng.randrange(len(base))
            name = base[:i] + base[i + 1:]
        elif op == 3:                                            # insert one character
            i = rng.randrange(len(base) + 1)
            name = base[:i] + rng.choice(LABEL_CHARS + ".") + base[i:]
        elif op == 4:                                            # add a label at either end
            name = _label(rng) + "." + base if rng.random() < 0.5 else base + "." + _label(rng)
        elif op == 5:                                            # drop the first label
            name = base.split(".", 1)[1] if "." in base else base
        elif op == 6:                                            # flip the case of some characters
            name = "".join(c.upper() if rng.random() < 0.3 else c for c in base)
        else:                                                    # glue two allow-list names
            other = rng.choice(hosts).lstrip("*.")
            name = base + "." + other if rng.random() < 0.5 else other + "." + base
        out.append(_case(name, f"generated ({['as is', 'change', 'delete', 'insert', 'label', 'parent', 'case', 'glue'][op]})"))
    return out


def corpus(allowlist: AllowList, n_generated: int = GENERATED, seed: int = SEED) -> list[dict]:
    """Hand-written tricks first, then generated names; duplicates (same name and mode) removed."""
    seen, out = set(), []
    for c in hand_written(allowlist) + generated(allowlist, n_generated, seed):
        key = (c["name"], c["mode"], c.get("chunks"))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
