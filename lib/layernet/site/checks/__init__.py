"""The site's checks across fields, one module per concern, each `check(doc: Doc) -> list[Problem]`.

`validate_site` runs the phases in order. The first two read the raw document (target defaults applied) whether or
not the model accepted it; a phase whose check trips over a value of the wrong type (which the model reports itself)
adds nothing. The last reads the validated site and runs only when nothing else was found.
"""
from layernet.site.checks import (addresses, aio, aio_names, allowlist, allowlist_names, arc, azure, images, levels,
                                  proxy_chain, telemetry, telemetry_chain)

RAW = (levels, addresses, proxy_chain, azure, allowlist_names)      # the core fields as written
SECTIONS = (telemetry, arc, aio)                                    # the later stages' sections as written
SITE = (allowlist, images, aio_names, telemetry_chain)              # the validated site
PHASES = (RAW, SECTIONS, SITE)
