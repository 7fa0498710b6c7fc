"""Arc levels are one fact (Site.arc_levels): the Arc connect targets and the AIO levels follow it, so a level
that reaches no Azure is left out by both alike."""
from __future__ import annotations

from layernet.azure import aio as az_aio
from layernet.azure import arc as az_arc
from layernet.site import load_site

CUT_OFF = ["telemetry.dataflows=[]", "levels.level2.reaches_azure=false", "images.mode.level2=import"]


def test_every_consumer_follows_one_list_of_arc_levels():
    full = load_site("params/lab.yaml")
    cut = load_site("params/lab.yaml", CUT_OFF)
    for site, want in ((full, ["level4", "level3", "level2"]), (cut, ["level4", "level3"])):
        assert [lv.name for lv in site.arc_levels()] == want
        assert [t.level for t in az_arc.targets(site)] == want
        assert [r.level for r in az_aio.levels(site)] == want

