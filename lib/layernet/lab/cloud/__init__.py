"""The cloud stand-in: one TLS front on the cloud address that answers each connection by name (the lab's
"internet DNS", CoreDNS in the cloud namespace, sends every name to that address: render/dns.py).

Run in the cloud namespace (the lab starts it; see server.py for every option):

    python -m layernet.lab.cloud --addr 198.51.100.10 --ports 443,8084,9093 --cert server.crt --key server.key \
        --state <lab state>/cloud

The protocol, decided once:

1. The front accepts on every cloud port and PEEKS the client's TLS ClientHello (MSG_PEEK: nothing is
   consumed) to read the server name (SNI) and the offered ALPN protocols. Bytes that are not a ClientHello
   close the connection.
2. A client offering the ALPN protocol ``layernet-echo`` gets the ECHO, whatever the name: the front itself
   completes the handshake (a certificate for every allowed name, from the lab CA), writes one JSON line
   ``{"host": <SNI>, "port": <port>, "peer": "<client ip>:<port>"}`` and closes. `peer` is the address the
   connection came from, i.e. the last proxy: that is how every probe (probe.py, the hardening clients)
   proves which level left the plant, also for names an app serves.
3. Otherwise, a (name, port) with a ROUTE is spliced as raw TCP to the route's backend, so TLS stays end to
   end and the backend shows its own certificate. Routes are
   - the built-in HTTPS apps (apps.py), all on port 443: Entra (login.microsoftonline.com,
     {region}.login.microsoft.com, login.windows.net, sts.windows.net), ARM (management.azure.com, the
     `arm` package), Microsoft Graph (graph.microsoft.com: service principal lookup for az), the Arc data
     plane ({region}.dp.kubernetesconfiguration.azure.com), identity
     (gbl.his.arc.azure.com, *.his.arc.azure.com), notification (guestnotificationservice.azure.com and
     its subdomains), the relay websocket (*.servicebus.windows.net), MCR (mcr.microsoft.com) and its blob
     host (*.data.mcr.microsoft.com);
   - the entries of ``<state>/routes.json`` (re-read when it changes), which win over the built-in ones:
     ``[{"names": ["<exact or *.zone>", ...], "port": 9093, "backend": "127.0.0.1:19093"}]``, e.g. the Kafka
     broker standing in for Event Hubs on ``<namespace>.servicebus.windows.net:9093``.
   Names match as the proxies match them (`layernet.allowlist.host_matches`); an exact name beats a wildcard.
4. Any other name (or no SNI) gets the echo, so every allowed name still answers as it always did.

How an app learns the true peer: before forwarding a byte of a spliced connection, the front records
``(its own local address towards the backend) -> (client ip, port, SNI, cloud port)`` in the in-process
peer table (peers.py). The apps run in the same process (uvicorn on 127.0.0.1, one asyncio thread) behind
`PeerMiddleware`, which looks their client address up and sets ``request.state.peer`` ("ip:port" of the proxy
the connection came through) and ``request.state.peer_ip``. Each app writes a request log
(``<state>/requests/<app>.jsonl``: time, host, method, path, peer, status) and the front a connection log
(``<state>/front.jsonl``: port, peer, SNI, handler), so evidence can show which call crossed which hop.

Extending the ARM stand-in: per-type hooks (`arm.hooks`) decide when a long-running operation ends and what
the resource carries; modules named by ``--hooks a.b,c.d`` are imported before the apps start so they can
register theirs. Every accepted write and finished operation is also a row of ``<state>/arm-events.jsonl``
(time, event, id, type, status, peer), for lab services that react to resources.

Modules: hello (ClientHello parsing), front (listeners, dispatch, echo, splice), routes, peers, reqlog,
apps (the app list and the uvicorn runner), entra, graph, arc (data plane, identity, notification, relay, MCR,
connected-cluster heartbeats), arm/ (the ARM stand-in), server (the process entry point).
"""
