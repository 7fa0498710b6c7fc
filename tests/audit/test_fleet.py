"""Several sites' logs as one Parquet dataset partitioned by site, level and day."""
from layernet.audit import export, findings
from layernet.audit.parse import parse_logs
from audit_helpers import rec, refused_name, small_log


def test_fleet_dataset_is_partitioned_and_counts_per_site_and_level(allowlist, site, tmp_path):
    a = parse_logs({"mixed": small_log()}, allowlist)
    b = parse_logs({"level3": [rec(time="2025-03-02T08:00:00.000Z"), refused_name(time="2025-03-02T09:00:00.000Z")]},
                   allowlist)
    root = export.fleet_parquet({"plant-a": a, "plant-b": b}, tmp_path)
    parts = sorted(str(p.relative_to(root).parent) for p in root.rglob("*.parquet"))
    assert "site=plant-a/level=level3/day=2025-03-01" in parts
    assert "site=plant-b/level=level3/day=2025-03-02" in parts
    view = export.fleet_read(root)
    got = {(r.site, r.level): (r.connections, r.allowed, r.refused) for r in view.itertuples()}
    per = findings.per_level(a, site).set_index("level")
    for lv in ("level3", "level4"):
        r = per.loc[lv]
        assert got[("plant-a", lv)] == (r.connections, r.allowed, r.refused_name + r.refused_source)
    assert got[("plant-b", "level3")] == (2, 1, 1)
