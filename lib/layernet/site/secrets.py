"""What looks like a secret: a key named like one (whole words: `client_secret`, `SharedAccessKey`, not `kansas`
or `secret_sync`)
or a value shaped like one (a connection string, a JWT, a SAS signature, a private key).

Secrets never travel in a site file, a -p/-s parameter, a manifest or an error message: credentials come from
the environment and the Azure credential chain.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Iterator

# single words, and words that are secrets when written together (split or joined: account_key, AccountKey)
_WORDS = {"secret", "secrets", "password", "passwords", "passwd", "pwd", "passphrase", "token", "tokens",
          "credential", "credentials", "sas", "apikey", "privatekey", "accountkey", "sharedaccesskey",
          "connectionstring", "connstr", "clientsecret", "accesskey"}
_PAIRS = {("api", "key"), ("private", "key"), ("account", "key"), ("access", "key"), ("connection", "string"),
          ("conn", "str"), ("client", "secret"), ("shared", "access")}
# the `*_key` family: a key (or keys) qualified by one of these words holds key material (storage_key, SasKey,
# primaryKey); other keys are not secrets (routing_key, partition_key)
KEY_QUALIFIERS = {"account", "shared", "storage", "sas", "access", "api", "private", "primary", "secondary", "master",
                  "signing", "encryption", "subscription", "auth", "admin", "secret", "service", "function", "host",
                  "client", "app", "device", "event", "hub", "symmetric", "hmac"}

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# What a secret value looks like, one detector per shape: (literals, pattern). Both work on the LOWER-CASED text;
# a pattern runs only when one of its literals occurs (a C-speed substring test), and every pattern is linear in
# the length of the text: a branch that starts with a run of characters may only start where that run starts (a
# look-behind) and runs are consumed possessively (`*+`, `++`), so a megabyte of `a.`, `a-` or `a:` is one pass
# (benchmarks/secret_shapes.py measures it).
DETECTORS: tuple[tuple[tuple[str, ...], str], ...] = (
    # connection strings and key=value pairs naming a secret (client_secret=, sas_token=, storage_key=)
    (("=",), r"(?:password|passwd|pwd|secret|token|sharedaccesskeyname|sharedaccesssignature|defaultendpointsprotocol"
             r"|(?:account|shared|sharedaccess|storage|sas|primary|secondary|master|api|access|private|signing"
             r"|encryption)_?keys?)\s*+=|endpoint\s*+=\s*+sb://"),
    (("eyj",), r"(?<![a-z0-9_-])eyj[a-z0-9_-]{4,}+\.[a-z0-9_-]{4,}+\.[a-z0-9_-]*+"),        # a JWT
    (("sig=",), r"[?&]sig=[a-z0-9%+/=]{8}"),                                                # a SAS URL's signature
    (("-----begin ",), r"-----begin (?:[a-z]{1,20} ){0,3}private key-----"),               # a PEM private key
    (("://",), r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^/\s:@]++:[^/\s@]++@"),           # a password in a URL
    # user:password@host without a scheme (image references, registry hosts), at the start of a value or a word
    ((":",), r"(?<![^\s,;'\"=(\[{<])[^\s/:@,;'\"=()\[\]{}<>]++:[^\s/@]++@[a-z0-9-]++\.[a-z0-9]"),
)
_COMPILED = tuple((lits, re.compile(pat)) for lits, pat in DETECTORS)
SECRET_VALUE = re.compile("|".join(f"(?:{pat})" for _, pat in DETECTORS), re.IGNORECASE)
_REDACT = re.compile(r"(?:" + SECRET_VALUE.pattern + r")[^\s'\"]*+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every secret-looking part replaced by (hidden)."""
    return _REDACT.sub("(hidden)", text) if looks_secret(text) else text


def key_words(key: str) -> list[str]:
    """`SharedAccessKey` -> [shared, access, key]; `client_secret` -> [client, secret]."""
    return [w.lower() for w in _CAMEL.findall(str(key))]


def is_secret_key(key: Any) -> bool:
    return _is_secret_key(str(key))


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    """A key whose last word names a secret (`sas_token`, `AccountKey`), not one that merely mentions one
    (`secret_sync`) or contains its letters (`kansas`)."""
    words = key_words(key)
    if not words:
        return False
    joined = "".join(words)
    if words[-1] in ("key", "keys") and len(words) > 1 and words[-2] in KEY_QUALIFIERS:
        return True
    if any(joined.endswith((q + "key", q + "keys")) for q in KEY_QUALIFIERS):   # storagekey, saskeys
        return True
    return (words[-1] in _WORDS or tuple(words[-2:]) in _PAIRS
            or any(joined.endswith(w) and len(w) > 6 for w in _WORDS))


def looks_secret(text: Any) -> bool:
    if not isinstance(text, str) or len(text) < 8:
        return False
    low = text.lower()
    return any(any(lit in low for lit in lits) and pat.search(low) is not None for lits, pat in _COMPILED)


def contains_secret(value: Any, budget: int = 200) -> bool:
    """A secret-looking string anywhere in the first `budget` items of a value (for what an error would show)."""
    todo, seen = [value], 0
    while todo and seen < budget:
        v = todo.pop()
        seen += 1
        if isinstance(v, str):
            if looks_secret(v):
                return True
        elif isinstance(v, dict):
            todo.extend(v.values())
            todo.extend(k for k in v if isinstance(k, str))
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
    return False


def find_secrets(raw: Any, budget: int = 200_000) -> Iterator[tuple[str, str]]:
    """(field path, 'key' or 'value') for every secret-looking key or value of a loaded site document."""
    todo: list[tuple[str, Any]] = [("", raw)]
    ids: set[int] = set()
    while todo and budget > 0:
        path, v = todo.pop()
        budget -= 1
        if isinstance(v, (dict, list)):
            if id(v) in ids:  # a shared (aliased) value is checked once
                continue
            ids.add(id(v))
        if isinstance(v, dict):
            for k, item in v.items():
                if looks_secret(k):         # e.g. a registry host written as user:password@host
                    yield (path or "(top level)") + " (a key)", "value"
                    continue
                sub = f"{path}.{k}" if path else str(k)
                if is_secret_key(k):
                    yield sub, "key"
                todo.append((sub, item))
        elif isinstance(v, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(v))
        elif looks_secret(v):
            yield path or "(top level)", "value"
