"""The site file: one plant described in YAML, validated into a `Site` model.

`model` holds the Site and its core sections; `validate` loads a site (`load_site`, `validate_site`) and runs the
cross-field checks of `checks` (one module per concern); `overrides` applies -p overrides; `load` reads a file
safely (UTF-8, one document, no duplicate keys, bounded nesting and alias expansion); `names` holds the name rules
(hosts, level names, Azure names); `secrets` recognises secret-looking keys and values; `problems` the error type.
`arc`, `aio`, `telemetry` and `images` hold the sections of the later stages. Import from here.
"""
from layernet.site.model import (  # noqa: F401
    CLOUDS, PROXIED_PORTS_DEFAULT, Admin, AllowSelection, Azure, ExtraHost, LabSettings, Level, Site,
)
from layernet.site.validate import load_site, validate_site  # noqa: F401
from layernet.site.overrides import split_path  # noqa: F401
from layernet.site.checks.azure import known_locations  # noqa: F401
from layernet.site.names import check_host  # noqa: F401
from layernet.site.problems import Problem, SiteError  # noqa: F401
from layernet.site.load import LIBYAML, parse_value  # noqa: F401
from layernet.site.secrets import contains_secret, is_secret_key, looks_secret  # noqa: F401
from layernet.site.aio import Aio  # noqa: F401
from layernet.site.arc import Arc  # noqa: F401
from layernet.site.images import Images  # noqa: F401
from layernet.site.telemetry import Telemetry  # noqa: F401
