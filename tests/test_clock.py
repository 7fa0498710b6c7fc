"""The one time policy (layernet.clock): a naive time is UTC, on every machine and for every target."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from layernet import clock

LAB_SITE = Path(__file__).resolve().parents[1] / "params" / "lab.yaml"

NEW_YORK = "America/New_York"       # UTC-5 in March: a naive time read as local time is five hours off


@pytest.fixture
def local_new_york(monkeypatch):
    """This machine's local time zone is New York for the test (the policy must not depend on it)."""
    monkeypatch.setenv("TZ", NEW_YORK)
    time.tzset()
    assert time.timezone != 0
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_are_utc(local_new_york):
    want = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
    assert clock.parse("2025-03-01T08:00:00") == want
    assert clock.parse("2025-03-01T08:00:00Z") == want
    assert clock.parse(" 2025-03-01T09:00:00+01:00 ") == want
    assert clock.utc(datetime(2025, 3, 1, 8, 0)) == want
    assert clock.utc(datetime(2025, 3, 1, 3, 0, tzinfo=timezone(timedelta(hours=-5)))) == want
    assert clock.now().tzinfo is not None
    with pytest.raises(ValueError):
        clock.parse("yesterday")


def test_every_writer_and_reader_of_times_takes_a_naive_time_as_utc(local_new_york):
    """The OPC UA connector's timestamps, the lab cloud's extension install clock and the tables' moments read a
    naive time as UTC (the lab cloud read its operations' start as this machine's local time: five hours off)."""
    import pandas as pd

    from layernet import htmltable
    from layernet.lab import connector
    from layernet.lab.cloud import aio as cloud_aio

    naive, aware = datetime(2025, 3, 1, 8, 0, 0, 250000), datetime(2025, 3, 1, 8, 0, 0, 250000, tzinfo=timezone.utc)
    assert connector.timestamp(naive) == connector.timestamp(aware) == "2025-03-01T08:00:00.250000Z"
    assert clock.iso(aware.timestamp()) == clock.iso(naive) == "2025-03-01T08:00:00.250000Z"
    assert cloud_aio._started({"startTime": "2025-03-01T08:00:00.25"}) == aware.timestamp()
    assert cloud_aio._started({"startTime": clock.iso(naive)}) == aware.timestamp()
    assert htmltable.moment(naive) == htmltable.moment(aware) == "2025-03-01 08:00:00.250 UTC"
    assert htmltable.text(pd.Timestamp("2025-03-01T08:00:00.250")) == "2025-03-01 08:00:00.250 UTC"
