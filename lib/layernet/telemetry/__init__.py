"""Stage 04's parts, below the stage module (layernet.stages.telemetry orchestrates them):

`records` gives the desired ARM records; `arm` reads and writes them (the ARM client) and observes the live state
the plan is made from; `waves` runs a plan's changes in waves; `window` observes one window of messages (MQTT taps
on every broker, the Kafka consumer on the event hub); `verify` (routes, taps, Kafka consumer, analysis) runs the
same against the lab and a real site; `charts` turns an analysis into the report's Sankey and latency chart;
`loopback` runs the whole lab flow on 127.0.0.0/8 with real mosquitto brokers (tests and benchmarks/telemetry_flow.py).
"""
