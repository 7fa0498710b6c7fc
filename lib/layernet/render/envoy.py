"""Envoy bootstrap per proxy level: TLS pass-through by SNI, source-restricted, every connection logged.

Per listener port (``site.proxied_ports()``):

- ``tls_inspector`` reads the SNI; TLS is never terminated.
- filter chain ``allowed``: SNI in the allow list for that port AND source in the level's own network, its
  child's network or its pod network -> ``tcp_proxy`` upstream. At the egress level the upstream is the SNI
  dynamic forward proxy (the name resolved with the level's ``dns_upstream`` through c-ares, never
  /etc/resolv.conf); at inner levels a static cluster at the parent level's node IP on the same port.
- filter chain ``refused-source``: the same names from any other source -> a cluster without endpoints, so
  the connection is closed and the log names the chain that refused it.
- no default filter chain: an unknown or missing SNI and non-TLS bytes are reset (response flag ``NR``).
- one JSON line per downstream connection (listener-level access log), allowed and refused alike.
- admin on 127.0.0.1 only.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

from layernet import paths
from layernet.flows import proxy_ports
from layernet.render.util import dump_yaml

# Run every Envoy with these arguments: no hot-restart shared memory (two Envoys on one host would clash
# in /dev/shm), and access-log lines flushed within 200 ms instead of the default 10 s.
ENVOY_ARGS = ["--disable-hot-restart", "--file-flush-interval-msec", "200"]
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
ADMIN_ADDRESS = "127.0.0.1"
ADMIN_PORT = 9901
KUBE_ACCESS_LOG = "/dev/stdout"

CHAIN_ALLOWED = "allowed"
CHAIN_REFUSED_SOURCE = "refused-source"
BLACKHOLE_CLUSTER = "refused"
DFP_CLUSTER = "dynamic_forward_proxy"
DNS_CACHE = "egress_dns_cache"
CONNECT_TIMEOUT = "5s"

# key -> Envoy command operator. Measured with Envoy 1.40: for a connection that matched no filter chain
# (flag NR) RESPONSE_CODE_DETAILS carries "filter_chain_not_found" while CONNECTION_TERMINATION_DETAILS
# stays empty; DOWNSTREAM_TRANSPORT_FAILURE_REASON names the TLS error when the bytes were not TLS.
# Lines of connections refused before a network filter ran carry connection_id 0.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "level": "",  # filled with the level name
    "listener_port": "%DOWNSTREAM_LOCAL_PORT%",
    "source": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "sni": "%REQUESTED_SERVER_NAME%",
    "filter_chain": "%FILTER_CHAIN_NAME%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local": "%UPSTREAM_LOCAL_ADDRESS%",  # the proxy's own address towards the next hop: exact path joins
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "response_flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "transport_failure": "%DOWNSTREAM_TRANSPORT_FAILURE_REASON%",
    "connection_id": "%CONNECTION_ID%",
}


def source_ranges(site, level) -> list[ipaddress.IPv4Network]:
    """Networks allowed to use the level's proxy: its own network, its child's network, its pod network."""
    served = site.served_networks(level)
    out: list[ipaddress.IPv4Network] = []
    for n in served["own network"] + served["child network"] + served["pods"]:
        if n not in out:
            out.append(n)
    return out


def access_log_path(site, level, target: str, state_dir: Optional[Path]) -> str:
    if target == "kube":
        return KUBE_ACCESS_LOG
    base = Path(state_dir) if state_dir is not None else default_state_dir(site)
    return str(base / level.name / "envoy-access.log")


def default_state_dir(site) -> Path:
    return paths.lab_state(site.lab.prefix)


def _cidr(net: ipaddress.IPv4Network) -> dict:
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


def _socket(address: str, port: int) -> dict:
    return {"socket_address": {"address": address, "port_value": port}}


def _dns_cache_config(level) -> dict:
    return {
        "name": DNS_CACHE,
        "dns_lookup_family": "V4_ONLY",
        "typed_dns_resolver_config": {
            "name": "envoy.network.dns_resolver.cares",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
                "resolvers": [_socket(str(ip), 53) for ip in level.dns_upstream],
                "use_resolvers_as_fallback": False,
                "dns_resolver_options": {"use_tcp_for_dns_lookups": False, "no_default_search_domain": True},
            },
        },
    }


def _tcp_proxy(stat_prefix: str, cluster: str) -> dict:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": cluster,
        },
    }


def _parent_cluster(port: int) -> str:
    return f"parent_{port}"


def _access_log(level_name: str, path: str) -> list[dict]:
    fmt = {k: (level_name if k == "level" else v) for k, v in ACCESS_LOG_FORMAT.items()}
    return [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": fmt},
        },
    }]


def _listener(site, level, port: int, names: list[str], egress: bool, log_path: str, bind: str) -> dict:
    if egress:
        allowed_filters = [
            {
                "name": "envoy.filters.network.sni_dynamic_forward_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig",
                    "port_value": port,
                    "dns_cache_config": _dns_cache_config(level),
                },
            },
            _tcp_proxy(f"egress_{port}", DFP_CLUSTER),
        ]
    else:
        allowed_filters = [_tcp_proxy(f"parent_{port}", _parent_cluster(port))]
    return {
        "name": f"sni_{port}",
        "address": _socket(bind, port),
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
        }],
        "listener_filters_timeout": "5s",
        "filter_chains": [
            {
                "name": CHAIN_ALLOWED,
                "filter_chain_match": {
                    "server_names": list(names),
                    "transport_protocol": "tls",
                    "source_prefix_ranges": [_cidr(n) for n in source_ranges(site, level)],
                },
                "filters": allowed_filters,
            },
            {
                "name": CHAIN_REFUSED_SOURCE,
                "filter_chain_match": {"server_names": list(names), "transport_protocol": "tls"},
                "filters": [_tcp_proxy(f"refused_source_{port}", BLACKHOLE_CLUSTER)],
            },
        ],
        "access_log": _access_log(level.name, log_path),
    }


def envoy_config(site, allowlist, level, *, target: str = "lab", state_dir: Optional[Path] = None,
                 bind: str = "0.0.0.0", admin_port: int = ADMIN_PORT) -> dict:
    """The bootstrap of `level`'s Envoy as a plain dict (see the module text for the design)."""
    if not level.proxy:
        raise ValueError(f"level {level.name} runs no proxy (proxy: false)")
    egress = level.name == site.egress_level
    parent = site.parent(level)
    if not egress and parent is None:
        raise ValueError(f"level {level.name} is not the egress level and has no parent to forward to")
    if egress and not level.dns_upstream:
        raise ValueError(f"egress level {level.name} needs dns_upstream: Envoy must not use /etc/resolv.conf")
    log_path = access_log_path(site, level, target, state_dir)
    listeners, clusters = [], []
    for port in proxy_ports(site, allowlist):
        names = allowlist.hosts_for_port(port)
        listeners.append(_listener(site, level, port, names, egress, log_path, bind))
        if not egress:
            clusters.append({
                "name": _parent_cluster(port),
                "type": "STATIC",
                "connect_timeout": CONNECT_TIMEOUT,
                "load_assignment": {
                    "cluster_name": _parent_cluster(port),
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(str(parent.node_ip), port)}}]}],
                },
            })
    if egress:
        clusters.append({
            "name": DFP_CLUSTER,
            "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": "CLUSTER_PROVIDED",
            "cluster_type": {
                "name": "envoy.clusters.dynamic_forward_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                    "dns_cache_config": _dns_cache_config(level),
                },
            },
        })
    clusters.append({
        "name": BLACKHOLE_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": BLACKHOLE_CLUSTER, "endpoints": []},
    })
    return {
        "node": {"id": f"{site.name}-{level.name}", "cluster": f"layernet-{level.name}"},
        "admin": {"address": _socket(ADMIN_ADDRESS, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 10000,
                },
            }],
        },
    }


def render_envoy(site, allowlist, level, *, target: str = "lab", state_dir: Optional[Path] = None,
                 bind: str = "0.0.0.0", admin_port: int = ADMIN_PORT) -> str:
    head = (f"# Envoy bootstrap for {site.name}/{level.name}, rendered by layernet (do not edit).\n"
            f"# Run with: envoy -c envoy.yaml {' '.join(ENVOY_ARGS)}\n")
    return head + dump_yaml(envoy_config(site, allowlist, level, target=target, state_dir=state_dir,
                                         bind=bind, admin_port=admin_port))
