"""The local lab: network namespaces per level, real Envoy and CoreDNS, nftables, a lab CA and a cloud stand-in.

Modules: `netns` (namespaces, links, addresses, routes, router firewall, route checks), `procs` (processes in
namespaces and their PID records), `pki` (lab CA and the cloud certificate), `cloud` (the TLS stand-in and the
"internet DNS" configuration), `commands` (up, down, status, exec).
"""
from __future__ import annotations

from pathlib import Path

from layernet import paths


class LabError(RuntimeError):
    """Something in the lab is wrong; the message says what and what to do."""


def state_dir(site) -> Path:
    """Where a lab keeps its configs, logs, PID records and CA: /var/lib/layernet/<prefix>."""
    return paths.lab_state(site.lab.prefix)
