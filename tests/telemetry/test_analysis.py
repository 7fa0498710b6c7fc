"""The telemetry analysis on synthetic tap records: loss is where a message was last seen, a tap that missed a
message a later hop saw is not loss, enrichment and sequence gaps are checked per hop, latency per segment."""
from __future__ import annotations

import json

from layernet.site import load_site
from layernet.telemetry.verify import Record, analyse, evidence_rows, routes


def _msg(seq: int, extra: dict) -> bytes:
    ts = f"2026-01-01T00:00:{seq:02d}.000000Z"
    body = {"Temperature": {"SourceTimestamp": ts, "Value": 1.5}, "EnergyUse": {"SourceTimestamp": ts, "Value": seq},
            "Weight": {"SourceTimestamp": ts, "Value": seq}}
    return json.dumps({**body, **extra}).encode()


def _records(route, drop: dict[int, set[int]], n: int = 10, unenriched_at: int | None = None):
    base = 1767225600.0          # 2026-01-01T00:00:00Z
    out = {}
    for hop in route.hops:
        extra = dict(hop.expect)
        recs = []
        for seq in range(n):
            if seq in drop.get(hop.index, set()):
                continue
            e = {} if unenriched_at == hop.index and seq == 0 else extra
            recs.append(Record(base + seq + 0.010 * (hop.index + 1), hop.topic, hop.key, _msg(seq, e)))
        out[hop.index] = recs
    return out


END = 1767225600.0 + 100


def route():
    site = load_site("params/lab.yaml")
    return routes(site)[0]


def test_clean_window():
    r = route()
    a = analyse([r], {r.label: _records(r, {})}, until=END)
    assert a.ok and a.summary["messages"] == 10 and a.summary["lost"] == 0
    assert list(a.hops["sequence_gaps"]) == [0, 0, 0, 0]
    assert a.summary["e2e_p50_ms"] == 40.0          # 10 ms per hop, four hops, from the source timestamp
    seg = a.latency[a.latency["segment"] == "level2 broker -> level3 broker"]["ms"]
    assert seg.round(3).eq(10.0).all()
    assert all(row["ok"] for row in evidence_rows(a, p99_limit_ms=100))


def test_stopped_messages_are_named_at_their_hop():
    r = route()
    # messages 3 and 4 stop at the level3 broker (never reach level4 nor the hub)
    a = analyse([r], {r.label: _records(r, {2: {3, 4}, 3: {3, 4}})}, until=END)
    assert not a.ok and a.summary["lost"] == 2
    assert list(a.hops["lost"]) == [0, 0, 2, 2] and list(a.hops["lost_here"]) == [0, 0, 2, 0]
    assert a.problems[0].startswith("oven1/default: 2 of 10 messages did not reach level4 broker from level3 broker")
    assert list(a.hops["sequence_gaps"]) == [0, 0, 2, 2]      # EnergyUse 3 and 4 missing inside 0..9
    rows = evidence_rows(a)
    assert [r_["ok"] for r_ in rows] == [True, True, False, False, False]


def test_a_tap_miss_is_not_loss():
    r = route()
    a = analyse([r], {r.label: _records(r, {1: {5}})}, until=END)
    assert a.ok and a.summary["lost"] == 0
    assert list(a.hops["tap_missed"]) == [0, 1, 0, 0]


def test_missing_enrichment_is_a_problem():
    r = route()
    a = analyse([r], {r.label: _records(r, {}, unenriched_at=3)}, until=END)
    assert a.problems == ["oven1/default: 1 message(s) at event hub layernet-lab-ehns/aio-telemetry without "
                          "product=flakes, line-config=cereal, factory-code=1032"]


def test_nothing_at_the_source_is_said():
    r = route()
    a = analyse([r], {r.label: {}})
    assert a.problems == ["oven1/default: no message seen at level2 broker (topic clusterl2/data/oven1): "
                          "is the connector publishing?"]
