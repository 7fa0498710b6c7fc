"""Hardening evidence on the lab: adversarial server names, source enforcement, isolation, load and faults.

Modules: `wire` (standard-library clients that run inside a lab namespace: raw ClientHellos, port scans,
load), `names` (the server-name corpus), `checks` (items run against a lab, each returning a DataFrame),
`lab` (lab-only helpers: a rogue source, address plans for side-by-side labs).

This package's `__init__` imports nothing, so `python -m layernet.harden.wire` starts fast in a namespace.
"""
