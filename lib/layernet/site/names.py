r"""Name rules: DNS host names for the allow list, level names (DNS labels: they become folder, namespace and
service names), Kubernetes object names and the Azure resource names a site sets. Each check returns why a value
is wrong, or None.

Every rule matches the WHOLE value (`fullmatch`): Python's `$` also matches before a final line break, so an
anchored `match` would let ``level2\n`` through. Digits are ASCII `[0-9]` (`\d` matches any Unicode digit).
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Optional

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE | re.ASCII)
_LEVEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.ASCII)
GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GUID = re.compile(GUID, re.ASCII)
_RESOURCE_GROUP = re.compile(r"^[A-Za-z0-9_.()-]{1,90}$", re.ASCII)
_CLUSTER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$", re.ASCII)
_EVENTHUBS = re.compile(r"^[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]$", re.ASCII)
_STORAGE = re.compile(r"^[a-z0-9]{3,24}$", re.ASCII)
_SITE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62})$", re.ASCII)
_EVENT_HUB = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?", re.ASCII)
_CONSUMER_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}", re.ASCII)
_K8S_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*", re.ASCII)
_AIO_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", re.ASCII)
_GATEWAY_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?", re.ASCII)


def _punycode(host: str) -> Optional[str]:
    try:
        return host.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return None


def check_host(host: Any) -> Optional[str]:
    """Return why `host` is not a valid allow-list host name, or None when it is."""
    if not isinstance(host, str) or not host:
        return "a host name such as management.azure.com"
    if not host.isascii():
        puny = _punycode(host)
        hint = f" ({puny!r})" if puny and puny.isascii() else ""
        return f"an ASCII host name: write an internationalised name as punycode (xn--...){hint}"
    if host.startswith("[") or _is_ip(host):
        return "a host name, not an IP address (the proxies route by TLS server name, which is never an address)"
    if "://" in host:
        return f"a bare host name without a scheme: drop {host.split('://')[0][:20] + '://'!r}"
    if "/" in host:
        return f"a bare host name without a path or trailing slash: use {host.split('/')[0][:80]!r}"
    if ":" in host:
        return "a bare host name without a port: list ports in the entry's 'ports' field"
    if host.endswith("."):
        return "a host name without a trailing dot"
    if len(host) > 253:
        return "a host name of at most 253 characters"
    labels = host.split(".")
    if "*" in host:
        if labels[0] != "*" or "*" in ".".join(labels[1:]) or len(labels) < 3:
            return ("a wildcard only as a whole leading label followed by at least two labels, at most one "
                    "leading '*.', e.g. *.blob.core.windows.net")
        labels = labels[1:]
    if len(labels) < 2:
        return "a fully qualified name with at least two labels"
    for label in labels:
        if not _LABEL.fullmatch(label):
            return f"labels of letters, digits and inner hyphens (1-63 characters); {label[:70]!r} is not"
    if labels[-1].isdigit():
        return "a host name whose last label is not all digits (all-numeric names look like addresses)"
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def check_level_name(name: Any) -> Optional[str]:
    if not isinstance(name, str):
        return None  # the type error is reported by the model
    if not _LEVEL.fullmatch(name):
        return ("a DNS label: lowercase letters, digits and inner '-', 1-63 characters (e.g. level3); "
                "the name becomes folder, namespace and service names")
    return None


def check_site_name(name: Any) -> Optional[str]:
    if isinstance(name, str) and not _SITE.fullmatch(name):
        return "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters"
    return None


def check_resource_group(name: Any) -> Optional[str]:
    if isinstance(name, str) and (not _RESOURCE_GROUP.fullmatch(name) or name.endswith(".")):
        return ("an Azure resource group name: 1-90 letters, digits, '_', '-', '.', '(' and ')', "
                "not ending in '.'")
    return None


def check_cluster_name(name: Any) -> Optional[str]:
    if isinstance(name, str) and not _CLUSTER.fullmatch(name):
        return ("an Arc connected-cluster name: 1-63 letters, digits, '-' and '_', starting and ending with a "
                "letter or digit")
    return None


def check_eventhubs_namespace(name: Any) -> Optional[str]:
    if not isinstance(name, str):
        return None
    if not _EVENTHUBS.fullmatch(name):
        return ("an Event Hubs namespace name: 6-50 letters, digits and '-', starting with a letter and "
                "ending with a letter or digit")
    if name.lower().endswith(("-sb", "-mgmt")):
        return "an Event Hubs namespace name that does not end in '-sb' or '-mgmt' (Azure reserves them)"
    return None


def check_storage_account(name: Any) -> Optional[str]:
    if isinstance(name, str) and not _STORAGE.fullmatch(name):
        return "a storage account name: 3-24 lowercase letters and digits (no '-', '_' or capitals)"
    return None


def check_guid(value: Any, what: str) -> Optional[str]:
    if value is not None and not (isinstance(value, str) and _GUID.fullmatch(value)):
        return f"a {what} GUID like 00000000-0000-0000-0000-000000000000 (quoted or plain text)"
    return None


def check_event_hub(name: Any) -> Optional[str]:
    """An event hub (the Kafka topic) inside a namespace."""
    if isinstance(name, str) and not _EVENT_HUB.fullmatch(name):
        return ("an event hub name: 1-256 letters, digits, '.', '_' and '-', starting and ending with a letter or "
                "digit")
    return None


def check_consumer_group(name: Any) -> Optional[str]:
    if isinstance(name, str) and name != "$Default" and not _CONSUMER_GROUP.fullmatch(name):
        return ("an Event Hubs consumer group: $Default, or 1-50 letters, digits, '.', '_' and '-' starting with a "
                "letter or digit")
    return None


def check_k8s_name(name: Any, kind: str = "Kubernetes object") -> Optional[str]:
    """A Kubernetes object name (DNS subdomain, RFC 1123): Secrets, ConfigMaps, cert-manager Issuers."""
    if isinstance(name, str) and (len(name) > 253 or not _K8S_NAME.fullmatch(name)):
        return (f"a {kind} name: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter "
                "or digit (no '/', no '..', no capitals)")
    return None


def check_aio_name(name: Any, kind: str) -> Optional[str]:
    """An AIO resource name (instance, custom location, ADR namespace, schema registry)."""
    if isinstance(name, str) and not _AIO_NAME.fullmatch(name):
        return f"a valid {kind} name: 3-63 lowercase letters, digits and inner hyphens"
    return None


def check_arc_gateway_id(value: Any) -> Optional[str]:
    """/subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.HybridCompute/gateways/<name>, each part by
    Azure's rule for it."""
    if not isinstance(value, str):
        return None
    shape = ("an Arc gateway resource id: /subscriptions/<guid>/resourceGroups/<rg>/providers/"
             "Microsoft.HybridCompute/gateways/<name>")
    parts = value.split("/")
    if (len(parts) != 9 or parts[0] != "" or parts[1].lower() != "subscriptions" or parts[3].lower() != "resourcegroups"
            or parts[5].lower() != "providers" or parts[6].lower() != "microsoft.hybridcompute"
            or parts[7].lower() != "gateways"):
        return shape
    if not _GUID.fullmatch(parts[2]):
        return f"{shape}; the subscription is not a GUID"
    if check_resource_group(parts[4]) or not parts[4]:
        return f"{shape}; the resource group breaks Azure's rule (1-90 letters, digits, '_', '-', '.', '(' and ')')"
    if not _GATEWAY_NAME.fullmatch(parts[8]):
        return f"{shape}; the gateway name is not 1-64 letters, digits, '.', '_' and '-' starting and ending with one"
    return None
