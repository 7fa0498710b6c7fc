"""The lab's OPC PLC (asyncua server) and the connector's subscription and message shape, on loopback."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from layernet.lab.connector import DatasetSpec, PointSpec, run
from layernet.lab.opcplc import NAMESPACE, NS_INDEX, OpcPlc, spike_value
from layernet.telemetry.loopback import free_port

HOST = "127.0.0.1"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_spike_data_is_a_sine_with_spikes():
    values = [spike_value(s) for s in range(1, 101)]
    spikes = [s for s in range(1, 101) if s % 23 == 0]
    assert all(abs(spike_value(s)) > 250 for s in spikes)
    assert all(abs(values[s - 1]) <= 100.0 for s in range(1, 101) if s not in spikes)
    assert max(values) > 99 and min(values) < -99
    assert spike_value(25) == pytest.approx(0.0, abs=1e-6)


def test_server_nodes_namespace_and_counting():
    from asyncua import Client, ua

    port = free_port([HOST], 48500)

    async def scenario():
        plc = OpcPlc(HOST, port, fast_ms=50, slow_ms=400)
        await plc.start()
        try:
            async with Client(f"opc.tcp://{HOST}:{port}", timeout=10) as c:
                ns = await c.get_namespace_array()
                assert ns[NS_INDEX] == NAMESPACE == "http://microsoft.com/Opc/OpcPlc/"
                types = {}
                for name in ["SpikeData"] + [f"FastUInt{i}" for i in range(1, 11)] + [f"SlowUInt{i}" for i in range(1, 6)]:
                    types[name] = (await c.get_node(f"ns=3;s={name}").read_data_type_as_variant_type())
                assert types["SpikeData"] == ua.VariantType.Double
                assert {types[f"FastUInt{i}"] for i in range(1, 11)} == {ua.VariantType.UInt32}
                assert {types[f"SlowUInt{i}"] for i in range(1, 6)} == {ua.VariantType.UInt32}
                fast0 = await c.get_node("ns=3;s=FastUInt10").read_value()
                slow0 = await c.get_node("ns=3;s=SlowUInt1").read_value()
                await asyncio.sleep(1.0)
                fast1 = await c.get_node("ns=3;s=FastUInt10").read_value()
                slow1 = await c.get_node("ns=3;s=SlowUInt1").read_value()
                dv = await c.get_node("ns=3;s=FastUInt9").read_data_value()
                assert dv.SourceTimestamp is not None
                return fast1 - fast0, slow1 - slow0, await c.get_node("ns=3;s=FastUInt1").read_value() - fast1
        finally:
            await plc.stop()

    fast, slow, same = asyncio.run(scenario())
    assert 12 <= fast <= 21          # 1 s at 50 ms
    assert 1 <= slow <= 3            # 1 s at 400 ms
    assert same in (0, 1)            # every FastUInt counts the same ticks


def test_connector_publishes_the_aio_message_shape():
    port = free_port([HOST], 48600)
    published: list[tuple[str, bytes]] = []
    spec = DatasetSpec("oven1", "default", f"opc.tcp://{HOST}:{port}", "clusterl2/data/oven1", 100, (
        PointSpec("Temperature", "ns=3;s=SpikeData", 100, 1), PointSpec("EnergyUse", "ns=3;s=FastUInt10", 100, 1),
        PointSpec("Weight", "ns=3;s=FastUInt9", 100, 1)))

    async def scenario():
        plc = OpcPlc(HOST, port, fast_ms=100)
        await plc.start()
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(run([spec], lambda t, p: published.append((t, p)), stop))
            await asyncio.sleep(2.5)
            stop.set()
            return await task
        finally:
            await plc.stop()

    sent = asyncio.run(scenario())
    assert sent["oven1/default"] == len(published) >= 12
    topics = {t for t, _ in published}
    assert topics == {"clusterl2/data/oven1"}
    msgs = [json.loads(p) for _, p in published]
    full = [m for m in msgs if len(m) == 3]
    assert full == msgs                               # every message carries every data point
    for m in full:
        assert list(m) == ["Temperature", "EnergyUse", "Weight"]
        for v in m.values():
            assert set(v) == {"SourceTimestamp", "Value"} and ISO.match(v["SourceTimestamp"])
        assert isinstance(m["EnergyUse"]["Value"], int) and isinstance(m["Temperature"]["Value"], float)
        assert m["EnergyUse"]["SourceTimestamp"] == m["Weight"]["SourceTimestamp"]
    seq = [m["EnergyUse"]["Value"] for m in full]
    assert seq == sorted(seq) and len(set(seq)) == len(seq)
    assert seq[-1] - seq[0] + 1 - len(seq) <= 1      # one message per tick (at most one missed at start-up)
