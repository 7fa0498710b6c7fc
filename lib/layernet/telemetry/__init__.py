"""Stage 04's proof: routes from the site, taps per hop, loss and latency, charts, and loopback runs.

`verify` (routes, taps, Kafka consumer, analysis) runs the same against the lab and a real site; `charts` turns
an analysis into the report's Sankey and latency chart; `loopback` runs the whole lab flow on 127.0.0.0/8 with
real mosquitto brokers (tests and benchmarks/telemetry_flow.py).
"""
