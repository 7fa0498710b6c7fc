"""Site section `images`: where every container layernet deploys comes from."""
from __future__ import annotations

from layernet.site.base import Strict


class Images(Strict):
    pass
