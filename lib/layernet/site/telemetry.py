"""Site section `telemetry`: assets, dataflows per level, Event Hubs and the MQTT hops between levels."""
from __future__ import annotations

from layernet.site.base import Strict


class Telemetry(Strict):
    eventhubs_from_levels: list[str] = []
