"""The lab's OPC PLC: an asyncua server with the nodes of Microsoft's OPC PLC simulator that the sample uses.

Namespace `http://microsoft.com/Opc/OpcPlc/` is index 3 (as in OPC PLC, whose index 2 is its reference-test
namespace). String node ids in it, as the sample's asset addresses them:
- `SpikeData` (Double): a sine wave that now and then jumps to a spike, then returns to the wave;
- `FastUInt1..N` (UInt32): count up by one every fast period (OPC PLC default 1000 ms);
- `SlowUInt1..M` (UInt32): count up by one every slow period (default 10000 ms).
SpikeData moves on every fast tick, so a subscriber sees one consistent change per tick for all fast nodes; every
write carries the tick's source timestamp.

Run: python -m layernet.lab.opcplc --host 127.0.0.1 --port 50000 [--fast-ms 1000 --slow-ms 10000]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
from datetime import datetime, timezone
from typing import Optional

from asyncua import Server, ua

NAMESPACE = "http://microsoft.com/Opc/OpcPlc/"
_FILLER_NAMESPACE = "http://microsoft.com/Opc/OpcPlc/ReferenceTest"
NS_INDEX = 3
SPIKE_PERIOD = 50            # ticks per sine period
SPIKE_EVERY = 23             # a spike on every 23rd tick
SPIKE_SIZE = 400.0


def spike_value(step: int) -> float:
    """SpikeData at tick `step`: 100 * sin(2*pi*step/50), with a spike of +-400 on every 23rd tick."""
    base = 100.0 * math.sin(2 * math.pi * (step % SPIKE_PERIOD) / SPIKE_PERIOD)
    if step and step % SPIKE_EVERY == 0:
        return round(base + (SPIKE_SIZE if (step // SPIKE_EVERY) % 2 else -SPIKE_SIZE), 6)
    return round(base, 6)


class OpcPlc:
    """The simulator; `await start()`, then ticks run until `await stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 50000, fast_ms: int = 1000, slow_ms: int = 10000,
                 fast_nodes: int = 10, slow_nodes: int = 5):
        self.endpoint = f"opc.tcp://{host}:{port}"
        self.fast_ms, self.slow_ms = fast_ms, slow_ms
        self.fast_nodes, self.slow_nodes = fast_nodes, slow_nodes
        self.server: Optional[Server] = None
        self.fast_step = 0
        self.slow_step = 0
        self._tasks: list[asyncio.Task] = []
        self._nodes: dict[str, ua.NodeId] = {}

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("layernet OPC PLC")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        await server.register_namespace(_FILLER_NAMESPACE)
        idx = await server.register_namespace(NAMESPACE)
        if idx != NS_INDEX:
            raise RuntimeError(f"OPC PLC namespace registered at index {idx}, expected {NS_INDEX}")
        folder = await server.nodes.objects.add_folder(ua.NodeId("OpcPlc", idx), ua.QualifiedName("OpcPlc", idx))
        tel = await folder.add_folder(ua.NodeId("Telemetry", idx), ua.QualifiedName("Telemetry", idx))
        specs = [("SpikeData", 0.0, ua.VariantType.Double)]
        specs += [(f"FastUInt{i}", 0, ua.VariantType.UInt32) for i in range(1, self.fast_nodes + 1)]
        specs += [(f"SlowUInt{i}", 0, ua.VariantType.UInt32) for i in range(1, self.slow_nodes + 1)]
        for name, init, vtype in specs:
            node = await tel.add_variable(ua.NodeId(name, idx), ua.QualifiedName(name, idx), ua.Variant(init, vtype))
            self._nodes[name] = node.nodeid
        self.server = server
        await server.start()
        self._tasks = [asyncio.create_task(self._run(self.fast_ms, self._fast_tick)),
                       asyncio.create_task(self._run(self.slow_ms, self._slow_tick))]

    async def _run(self, period_ms: int, tick) -> None:
        loop = asyncio.get_running_loop()
        period = period_ms / 1000.0
        nxt = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, nxt - loop.time()))
            await tick()
            nxt += period
            if nxt < loop.time() - 10 * period:      # far behind (machine suspended): do not burst
                nxt = loop.time() + period

    async def _write(self, name: str, value, vtype, now: datetime) -> None:
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now)
        await self.server.write_attribute_value(self._nodes[name], dv)

    async def _fast_tick(self) -> None:
        self.fast_step += 1
        now = datetime.now(timezone.utc)
        await self._write("SpikeData", spike_value(self.fast_step), ua.VariantType.Double, now)
        for i in range(1, self.fast_nodes + 1):
            await self._write(f"FastUInt{i}", self.fast_step % 2**32, ua.VariantType.UInt32, now)

    async def _slow_tick(self) -> None:
        self.slow_step += 1
        now = datetime.now(timezone.utc)
        for i in range(1, self.slow_nodes + 1):
            await self._write(f"SlowUInt{i}", self.slow_step % 2**32, ua.VariantType.UInt32, now)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.stop()
            self.server = None


async def _main(args) -> None:
    plc = OpcPlc(args.host, args.port, args.fast_ms, args.slow_ms, args.fast_nodes, args.slow_nodes)
    await plc.start()
    print(f"opcplc: serving {plc.endpoint} (namespace {NAMESPACE} at index {NS_INDEX})", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await plc.stop()


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="layernet.lab.opcplc", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=50000)
    ap.add_argument("--fast-ms", type=int, default=1000)
    ap.add_argument("--slow-ms", type=int, default=10000)
    ap.add_argument("--fast-nodes", type=int, default=10)
    ap.add_argument("--slow-nodes", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
