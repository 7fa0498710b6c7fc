"""Azure resource ids, built one way everywhere (ARM's `/subscriptions/<sub>/resourceGroups/<rg>/providers/...`)."""
from __future__ import annotations

# the subscription a plan shows before one is known (a site that names none, planned before az login)
ZERO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def subscription(site) -> str:
    """The site's subscription, or the all-zero one while none is known."""
    return site.azure.subscription_id or ZERO_SUBSCRIPTION


def group_id(sub: str, rg: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}"


def rid(sub: str, rg: str, provider: str, *parts: str) -> str:
    """An ARM resource id: rid(s, rg, 'Microsoft.Kubernetes', 'connectedClusters', name)."""
    return f"{group_id(sub, rg)}/providers/{provider}/{'/'.join(parts)}"
