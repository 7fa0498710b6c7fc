"""The site file: one plant described in YAML, validated into a `Site` model.

`model` holds the Site and its core sections plus loading and the checks; `arc`, `aio`, `telemetry` and `images`
hold the sections of the later stages. Import from here.
"""
from layernet.site.model import (  # noqa: F401
    CLOUDS, PROXIED_PORTS_DEFAULT, Admin, AllowSelection, Azure, ExtraHost, LabSettings, Level, Problem, Site,
    SiteError, check_host, known_locations, load_site, validate_site,
)
from layernet.site.aio import Aio  # noqa: F401
from layernet.site.arc import Arc  # noqa: F401
from layernet.site.images import Images  # noqa: F401
from layernet.site.telemetry import Telemetry  # noqa: F401
