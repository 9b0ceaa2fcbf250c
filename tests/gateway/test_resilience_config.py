"""The rendered gateway config's resilience parts: the per-tenant rate limit is off unless set,
retries on UNAVAILABLE only for calls that are safe to repeat, replicas in one cluster with
outlier detection."""

from __future__ import annotations

from gateway.envoy_config import GatewaySettings, build_config

LIMITER = "envoy.filters.http.local_ratelimit"


def _manager(config):
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(config):
    return {r["name"]: r for r in _manager(config)["route_config"]["virtual_hosts"][0]["routes"]}


def test_rate_limit_is_off_by_default_and_keyed_on_the_tenant_when_set():
    off = build_config(GatewaySettings())
    assert LIMITER not in [f["name"] for f in _manager(off)["http_filters"]]
    on = build_config(GatewaySettings(rate_limit_rps=50, rate_limit_burst=80))
    filters = _manager(on)["http_filters"]
    (limiter,) = [f["typed_config"] for f in filters if f["name"] == LIMITER]
    action = limiter["rate_limits"][0]["actions"][0]["request_headers"]
    assert action["header_name"] == "x-tenant-id"
    assert limiter["descriptors"][0]["token_bucket"] == {
        "max_tokens": 80,
        "tokens_per_fill": 50,
        "fill_interval": "1s",
    }
    assert limiter["always_consume_default_token_bucket"] is False
    # Never on the health check.
    assert LIMITER in _routes(on)["healthz"]["typed_per_filter_config"]


def test_only_reads_and_keyed_writes_are_retried_on_unavailable():
    routes = _routes(build_config(GatewaySettings()))
    read = routes["experiments-read-GetRun"]
    assert read["match"] == {"path": "/mlmesh.experiments.v1.ExperimentService/GetRun"}
    assert "unavailable" in read["route"]["retry_policy"]["retry_on"]
    keyed = routes["experiments-keyed-writes"]
    assert keyed["match"]["headers"][0]["name"] == "x-idempotency-key"
    assert "unavailable" in keyed["route"]["retry_policy"]["retry_on"]
    # Other writes only when the call never reached the service.
    other = routes["experiments"]["route"]["retry_policy"]["retry_on"]
    assert other == "connect-failure,refused-stream"
    assert "experiments-read-CreateRun" not in routes


def test_replicas_share_one_cluster_with_outlier_detection():
    settings = GatewaySettings(upstreams={"training": "127.0.0.1:7001, 127.0.0.1:7002"})
    clusters = {c["name"]: c for c in build_config(settings)["static_resources"]["clusters"]}
    training = clusters["training"]
    endpoints = training["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [7001, 7002]
    assert training["outlier_detection"]["consecutive_local_origin_failure"] == 2
