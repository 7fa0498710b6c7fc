"""Site section `monitor`: where the site's proxy logs live in Azure Monitor, for an audit that runs as KQL.

Container Insights collects the Envoy pods' stdout (the JSON access log) into the ``ContainerLogV2`` table of a
Log Analytics workspace. `workspace_id` is that workspace's id (the GUID of its Properties blade, also called
the customer id). Left at null, the audit reads the logs from the proxies or from saved files only; set, the
same findings can be rendered as KQL (`layernet.audit.kql`) and run against the workspace
(`layernet.audit.monitor`).
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from layernet.site.base import Strict

WORKSPACE_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class Monitor(Strict):
    workspace_id: Optional[str] = Field(default=None, pattern=WORKSPACE_ID)   # null: no Log Analytics audit
