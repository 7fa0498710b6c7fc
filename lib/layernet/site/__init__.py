"""The site file: one plant described in YAML, validated into a `Site` model.

`model` holds the Site and its core sections plus the checks; `load` reads a file safely (UTF-8, one document,
no duplicate keys, bounded nesting and alias expansion); `names` holds the name rules (hosts, level names, Azure
names); `secrets` recognises secret-looking keys and values; `problems` the error type. `arc`, `aio`,
`telemetry` and `images` hold the sections of the later stages. Import from here.
"""
from layernet.site.model import (  # noqa: F401
    CLOUDS, PROXIED_PORTS_DEFAULT, Admin, AllowSelection, Azure, ExtraHost, LabSettings, Level, Problem, Site,
    SiteError, check_host, known_locations, load_site, split_path, validate_site,
)
from layernet.site.load import LIBYAML, parse_value  # noqa: F401
from layernet.site.secrets import contains_secret, is_secret_key, looks_secret  # noqa: F401
from layernet.site.aio import Aio  # noqa: F401
from layernet.site.arc import Arc  # noqa: F401
from layernet.site.images import Images  # noqa: F401
from layernet.site.telemetry import Telemetry  # noqa: F401
