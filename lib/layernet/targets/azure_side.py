"""The Azure side of a site: where its Azure calls run and how they reach ARM and Event Hubs.

A plant makes them here, on the jump box, against Azure. The lab makes them on its jump box namespace against its
stand-ins (lab_azure.py). Deciding where a call runs is this object's job and no one else's.
"""
from __future__ import annotations

import importlib
import os

from layernet.azure.clients import arm_for


class AzureSide:
    elsewhere: bool = False        # True: the calls run in another place (the lab's jump box namespace)
    poll_interval: float = 10.0    # seconds between Azure status polls (ARM's own pace)

    def __init__(self, site):
        self.site = site

    def call(self, func: str, progress=None, **kwargs):
        """Run `func` ("layernet.module:function", called as function(site, **kwargs), JSON in and out) where this
        site's Azure calls are made: on a plant, here."""
        module, _, name = func.partition(":")
        return getattr(importlib.import_module(module), name)(self.site, **kwargs)

    def arm(self):
        """The Arm connection (credential, ARM URL, CA) for calls made inside `call`."""
        return arm_for(self.site)

    def eventhubs_client(self) -> tuple:
        """(connection string or None, CA file or None) for a Kafka client of the site's Event Hubs: the site's
        connection-string variable when set, else None (an Entra token)."""
        return os.environ.get(self.site.telemetry.eventhubs.connection_string_env) or None, None

    def eventhubs_refusals(self, since: float) -> list:
        """Why Event Hubs refused clients since `since` (time.time()); Azure keeps that in its diagnostic logs,
        which are not read here: none."""
        return []

    def stand_ins(self, stage: str) -> list[dict]:
        """The parts of Azure a stage's run talked to that were not Azure ({"part", "hosts", "on this run"})."""
        return []
