import json

import numpy as np
import pandas as pd

from layernet.audit import scan
from layernet.audit.db import COLUMNS
from layernet.audit.parse import parse_logs
from layernet.hops import VERDICTS, verdict_of
from audit_helpers import rec, refused_name, refused_source


def test_each_verdict_and_missing_values(allowlist):
    lines = [
        rec(time="2025-03-01T08:00:00.001Z"),
        refused_name(time="2025-03-01T08:00:00.002Z"),
        refused_source(time="2025-03-01T08:00:00.003Z"),
        rec(time="2025-03-01T08:00:00.004Z", level="level4", source="192.168.104.20:1", upstream_host=None,
            cluster="dynamic_forward_proxy", flags="UF", bytes_out=0),
        refused_name(time="2025-03-01T08:00:00.005Z", sni=None, tf="TLS_error:|268435612:SSL routines:HTTP_REQUEST"),
    ]
    p = parse_logs({"level3": "\n".join(lines) + "\n"}, allowlist)
    df = p.connections
    assert list(df.columns) == COLUMNS
    assert list(df["verdict"]) == ["allowed", "refused-name", "refused-source", "upstream-failure", "refused-name"]
    assert list(df["level"]) == ["level3", "level3", "level3", "level4", "level3"]
    # Envoy's null -> "" (never NaN), "-" kept for no flag
    assert list(df["sni"]) == ["management.azure.com", "evil.example", "management.azure.com", "management.azure.com", ""]
    assert list(df["filter_chain"]) == ["allowed", "", "refused-source", "allowed", ""]
    assert list(df["upstream_host"]) == ["192.168.104.10:443", "", "", "", ""]
    assert list(df["response_flags"]) == ["-", "NR", "UH", "UF", "NR"]
    assert df["transport_failure"].iloc[4].startswith("TLS_error")
    assert list(df["entry"]) == ["management.azure.com", "", "management.azure.com", "management.azure.com", ""]
    assert list(df["source_ip"]) == ["192.168.102.10", "192.168.102.10", "10.9.0.5", "192.168.104.20", "192.168.102.10"]
    assert list(df["source_port"]) == [40000, 40000, 5000, 1, 40000]
    assert list(df["line"]) == [1, 2, 3, 4, 5]
    assert p.report() == {"lines": 5, "records": 5, "malformed": 0, "blank": 0}


def test_types(allowlist):
    df = parse_logs({"level3": [rec(), refused_name()]}, allowlist).connections
    assert str(df["time"].dtype) == "datetime64[ms, UTC]"
    assert df["time"].iloc[0] == pd.Timestamp("2025-03-01T08:00:00Z")
    for c in ("level", "verdict", "response_flags", "sni", "source_ip", "entry", "filter_chain"):
        assert isinstance(df[c].dtype, pd.CategoricalDtype), c
    assert list(df["verdict"].cat.categories) == VERDICTS
    assert df["listener_port"].dtype == np.int32 and df["source_port"].dtype == np.int32
    for c in ("bytes_in", "bytes_out", "duration_ms", "connection_id", "line"):
        assert df[c].dtype == np.int64, c


def test_malformed_lines_are_counted_with_samples_never_dropped(allowlist):
    lines = [
        rec(time="2025-03-01T08:00:01.000Z"),
        rec(time="2025-03-01T08:00:02.000Z")[:60],                     # truncated
        "\x00garbage \xff bytes",                                       # garbage
        '[2025-03-01T08:00:03.000Z] "- - -" 0 NR 0 0 0 - "192.168.102.10:1" "evil.example"',   # text format
        '{"msg": "envoy started"}',                                     # JSON, not a record
        rec(time="not a time"),                                         # record with a bad time
        rec(time="2025-03-01T08:00:04.000Z", listener_port=None).replace('"listener_port": 443, ', ""),
        json.dumps({"time": "2025-03-01T08:00:05.000Z", "listener_port": "x"}),   # wrong type
        "",                                                             # blank: counted, not malformed
        "[1, 2]",                                                       # JSON array
        rec(time="2025-03-01T08:00:06.000Z"),
    ]
    p = parse_logs({"level3": "\n".join(lines)}, allowlist)
    assert len(p.connections) == 2 and list(p.connections["line"]) == [1, 11]
    m = p.malformed
    assert list(m["line"]) == [2, 3, 4, 5, 6, 7, 8, 10]
    assert p.report() == {"lines": 11, "records": 2, "malformed": 8, "blank": 1}
    assert p.report()["records"] + p.report()["malformed"] + p.report()["blank"] == p.report()["lines"]
    reasons = dict(zip(m["line"], m["reason"]))
    assert reasons[2] == "invalid or truncated JSON"
    assert reasons[3].startswith("not JSON") and reasons[4].startswith("not JSON")
    assert "no time or listener_port" in reasons[5]
    assert reasons[6] == "time is not an ISO 8601 UTC time"
    assert "no listener_port" in reasons[7]
    assert reasons[8] == "listener_port is not a whole number"
    assert reasons[10] == "a JSON list, not an object"
    assert m.loc[m["line"] == 4, "text"].iloc[0].startswith("[2025-03-01T08:00:03.000Z]")
    s = p.malformed_summary()
    assert set(s.columns) == {"level", "reason", "lines", "first_line", "sample"} and s["lines"].sum() == 8


def test_many_lines_keep_line_numbers(monkeypatch, allowlist):
    monkeypatch.setattr(scan, "SCAN_BYTES", 4096)       # the byte scan reads many pieces
    lines = [rec(time=f"2025-03-01T08:00:{i // 1000:02d}.{i % 1000:03d}Z", cid=i) for i in range(3000)]
    lines[1234] = lines[1234][:50]
    lines[2500] = "garbage"
    lines[2999] = lines[2999].replace('"listener_port": 443', '"listener_port": "443"')   # string number: kept
    p = parse_logs({"level3": "\r\n".join(lines)}, allowlist)
    assert list(p.malformed["line"]) == [1235, 2501]
    df = p.connections
    assert len(df) == 2998
    got = dict(zip(df["line"], df["connection_id"]))
    assert all(got[i + 1] == i for i in range(3000) if i not in (1234, 2500))
    assert df["time"].is_monotonic_increasing


def test_level_falls_back_to_the_source_name_and_files_are_read(tmp_path, allowlist):
    f = tmp_path / "level4.log"
    f.write_text(rec(level="") + "\n" + rec(level=None).replace('"level": null, ', "") + "\n")
    df = parse_logs({"level4": f}, allowlist).connections
    assert list(df["level"]) == ["level4", "level4"]


def test_empty_input_gives_a_typed_empty_table(allowlist):
    p = parse_logs({"level3": "", "level4": []}, allowlist)
    assert p.connections.empty and list(p.connections.columns) == COLUMNS
    assert str(p.connections["time"].dtype) == "datetime64[ms, UTC]"
    assert p.report() == {"lines": 0, "records": 0, "malformed": 0, "blank": 0}


def test_verdict_rules():
    assert verdict_of("allowed", "-") == "allowed"
    assert verdict_of("allowed", "UF") == "upstream-failure"
    assert verdict_of("allowed", "UH,UF") == "upstream-failure"
    assert verdict_of("refused-source", "UH") == "refused-source"
    assert verdict_of("", "NR") == "refused-name"
    assert verdict_of("", "-") == "refused-name"


def test_entry_uses_the_port_and_the_one_matching_function(allowlist):
    lines = [rec(sni="ns1.servicebus.windows.net"), rec(sni="management.azure.com", port=9093),
             rec(sni="eastus.obo.arc.azure.com", port=8084), rec(sni="MANAGEMENT.azure.com")]
    df = parse_logs({"level3": lines}, allowlist).connections
    expected = [allowlist.match(n, p) for n, p in
                [("ns1.servicebus.windows.net", 443), ("management.azure.com", 9093),
                 ("eastus.obo.arc.azure.com", 8084), ("MANAGEMENT.azure.com", 443)]]
    assert list(df["entry"]) == [e.host if e else "" for e in expected]
    assert df["entry"].iloc[0] == "*.servicebus.windows.net" and df["entry"].iloc[3] == "management.azure.com"
