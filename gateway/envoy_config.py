"""Renders the Envoy gateway's static config from the descriptor set and the environment:
REST (transcoded) and native gRPC on one port, JSON errors, CORS, JWT, health and OpenAPI.

Usage: python -m gateway.envoy_config --out PATH
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from google.api import annotations_pb2
from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.descriptors import load_descriptor_set, mlmesh_services
from mlmesh_common.errors import ERROR_DOMAIN
from mlmesh_common.idempotency import IDEMPOTENCY_HEADER
from mlmesh_common.server import HTTP_CODE_HEADER
from mlmesh_common.tenancy import TENANT_HEADER

BUILD_DIR = Path(__file__).resolve().parent / "build"
# The web UI's production build (`make ui`: ui/dist), served by the gateway when it exists.
UI_DIST = Path(__file__).resolve().parent.parent / "ui" / "dist"

# The one table to extend when a domain gets a service: its default gRPC port on loopback.
DEFAULT_PORTS = {
    "tracking": 50051,
    "experiments": 50052,
    "training": 50053,
}

ADMIN_CLUSTER = "envoy_admin"
JWT_PROVIDER = "mlmesh"
JWT_PAYLOAD_KEY = "payload"
HEALTHZ_PATH = "/healthz"
OPENAPI_PATH = "/api/v1/openapi.json"

_LUA = "envoy.filters.http.lua"
_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
_CORS = "envoy.filters.http.cors"
_JWT = "envoy.filters.http.jwt_authn"
_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
# Distinct tenants the rate limiter keeps a bucket for at once (least recently used evicted).
_MAX_TENANT_BUCKETS = 10_000
_HEALTHZ_FILTER = "mlmesh.healthz"
_STATUS_FILTER = "mlmesh.http_status"
_STRIP_TENANT_FILTER = "mlmesh.strip_client_tenant"
_JWT_TENANT_FILTER = "mlmesh.jwt_tenant"
# Dynamic metadata a Lua filter sets before a local reply, naming its ErrorInfo reason.
_REPLY_METADATA = "mlmesh.reply"
# Dynamic metadata where the status filter records the upstream's grpc-status for the log.
_GRPC_METADATA = "mlmesh.grpc"
# Marks the gateway's own (local) replies for the status filter; never sent to clients.
_LOCAL_REPLY_HEADER = "x-mlmesh-local-reply"

_TYPE = "type.googleapis.com/envoy."


class GatewaySettings(BaseSettings):
    """Gateway settings from `MLMESH_GATEWAY_*` and the mesh-wide `MLMESH_AUTH`, `MLMESH_JWKS_FILE`,
    `MLMESH_JWT_*` and `MLMESH_CORS_ORIGINS`; read once, then passed to `render`."""

    model_config = SettingsConfigDict(
        env_prefix="MLMESH_GATEWAY_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int = 9901
    max_body_bytes: int = 256 * 1024 * 1024
    upstream_timeout_s: float = 60.0
    # Per-tenant rate limit (Envoy's local rate limit, keyed on x-tenant-id): requests a second
    # each tenant may send, beyond which it gets 429 with Retry-After; 0 turns it off (default).
    # Calls without the header (the default tenant) share one bucket of the same size.
    rate_limit_rps: int = Field(0, ge=0)
    # Requests a tenant may send at once above its rate (the bucket's size); 0: the rate.
    rate_limit_burst: int = Field(0, ge=0)
    # Retries of calls that are safe to repeat (reads, and writes carrying an idempotency key)
    # on UNAVAILABLE or a reset; any call is retried when the connection was never made.
    upstream_retries: int = Field(2, ge=0)
    descriptor: Path = BUILD_DIR / "descriptors.pb"
    openapi: Path = BUILD_DIR / "openapi.json"
    # Where `python -m gateway` writes the rendered config, and the Envoy it then runs.
    config_path: Path = Path(tempfile.gettempdir()) / "envoy.yaml"
    envoy_bin: str = "envoy"
    # The built single-page app; no UI routes when the directory has no index.html.
    ui_dir: Path = UI_DIST
    # domain -> host:port; wins over MLMESH_<DOMAIN>_UPSTREAM (tests and the mesh runner set it).
    upstreams: dict[str, str] = Field(default_factory=dict)
    auth: Literal["none", "jwt"] = Field("none", validation_alias="MLMESH_AUTH")
    jwks_file: Path | None = Field(None, validation_alias="MLMESH_JWKS_FILE")
    jwt_issuer: str | None = Field(None, validation_alias="MLMESH_JWT_ISSUER")
    # The claim that names the caller's tenant; a token without it (non-empty string) is a 403.
    jwt_tenant_claim: str = Field(
        "tenant_id", validation_alias="MLMESH_JWT_TENANT_CLAIM", pattern=r"^[A-Za-z0-9_.:/-]+$"
    )
    # Comma-separated; empty accepts any audience.
    jwt_audiences: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MLMESH_JWT_AUDIENCES"
    )
    # Comma-separated exact origins allowed to call the API from a browser; empty turns CORS off.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000", "http://127.0.0.1:3000"],
        validation_alias="MLMESH_CORS_ORIGINS",
    )

    _environ: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("jwt_audiences", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("jwks_file", "descriptor", "openapi", "ui_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @model_validator(mode="after")
    def _jwks_required_for_jwt(self) -> GatewaySettings:
        if self.auth == "jwt" and self.jwks_file is None:
            raise ValueError("MLMESH_AUTH=jwt needs MLMESH_JWKS_FILE (a JWKS JSON file)")
        return self

    def model_post_init(self, context: Any) -> None:
        # Per-domain upstream variables are open-ended (one pair per domain), so the relevant
        # part of the environment is captured here, once, with the declared fields.
        self._environ = {k: v for k, v in os.environ.items() if k.startswith("MLMESH_")}

    def upstream(self, domain: str) -> str:
        """`host:port` of a domain's service: `upstreams`, else `MLMESH_<DOMAIN>_UPSTREAM`, else
        127.0.0.1 at `MLMESH_<DOMAIN>_PORT` or the domain's default port."""
        if domain in self.upstreams:
            return self.upstreams[domain]
        prefix = f"MLMESH_{domain.upper()}_"
        if self._environ.get(f"{prefix}UPSTREAM"):
            return self._environ[f"{prefix}UPSTREAM"]
        port = self._environ.get(f"{prefix}PORT") or DEFAULT_PORTS.get(domain)
        if port is None:
            raise ValueError(
                f"no upstream for domain {domain!r}: set {prefix}UPSTREAM=host:port "
                "or add its default port to gateway.envoy_config.DEFAULT_PORTS"
            )
        return f"127.0.0.1:{port}"


def _typed(type_suffix: str, **fields: Any) -> dict[str, Any]:
    return {"@type": _TYPE + type_suffix, **fields}


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _split_host_port(upstream: str) -> tuple[str, int]:
    host, separator, port = upstream.rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise ValueError(f"upstream {upstream!r} is not host:port")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# Response side of REST calls, after the transcoder (encoders run in reverse filter order).
# Services pick a status the transcoder cannot express through metadata `x-http-code`: initial
# metadata on success (201, 202, 204), trailing metadata on errors (422), which for a
# trailers-only error arrives in these headers. Native gRPC responses pass untouched.
_STATUS_LUA = """
-- Request side: a header name HTTP allows but gRPC metadata does not (`a&b`; gRPC takes only
-- 0-9 a-z _ . -) would make the upstream's gRPC core refuse the whole call (a 500). Such
-- headers cannot reach a service, so they are dropped here.
function envoy_on_request(handle)
  local headers = handle:headers()
  local illegal = {}
  for key, _ in headers:__pairs() do
    if string.sub(key, 1, 1) ~= ":" and string.find(key, "[^0-9a-z_.%-]") then
      table.insert(illegal, key)
    end
  end
  for _, key in ipairs(illegal) do
    headers:remove(key)
  end
end

local function set_status(handle, headers)
  local code = headers:get(HTTP_CODE_HEADER)
  if code == nil then
    return
  end
  headers:remove(HTTP_CODE_HEADER)
  local wanted = tonumber(code)
  local success = headers:get(":status") == "200"
  -- A success code set before the call failed must not hide the error, and an error code
  -- never turns a success into a failure.
  if wanted == nil or (success and wanted >= 300) or (not success and wanted < 400) then
    return
  end
  headers:replace(":status", code)
  if wanted == 204 then
    -- Headers first: body() buffers, and a stale content-length or the transcoder's "{}"
    -- would corrupt the next response on a keep-alive connection.
    headers:remove("content-type")
    headers:remove("content-length")
    local body = handle:body()
    if body ~= nil then
      body:setBytes("")
    end
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.sub(content_type, 1, 16) == "application/grpc" then
    -- A native call's status: these headers for a trailers-only reply, else the trailers.
    local status = headers:get("grpc-status")
    if status == nil then
      local trailers = handle:trailers()
      status = trailers and trailers:get("grpc-status")
    end
    if status ~= nil then
      handle:streamInfo():dynamicMetadata():set(GRPC_METADATA, "status", status)
    end
    return
  end
  local local_reply = headers:get(LOCAL_REPLY_HEADER) ~= nil
  headers:remove(LOCAL_REPLY_HEADER)
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
  headers:remove("grpc-accept-encoding")
  local failed = tonumber(headers:get(":status")) >= 400
  set_status(handle, headers)
  -- The upstream's own status of a transcoded call, for the access log: 0 for a success (its
  -- trailers end in the transcoder), an error's from the google.rpc.Status the transcoder made
  -- of it. The gateway's own replies (marked by local_reply_config) have none.
  if local_reply then
    return
  end
  local status = "0"
  if failed then
    local body = handle:body()
    status = body and string.match(body:getBytes(0, math.min(body:length(), 32)), '^{"code":(%d+)')
  end
  if status ~= nil then
    -- Fetched anew: wrappers taken before body() yielded are no longer valid.
    handle:streamInfo():dynamicMetadata():set(GRPC_METADATA, "status", status)
  end
end
"""

# GET /healthz: one JSON answer for every backend, from the active gRPC health checks that
# Envoy runs itself (admin /clusters lists each host's health flags).
_HEALTHZ_LUA = """
function envoy_on_request(handle)
  local backends = handle:metadata():get("backends") or {}
  local headers, body = handle:httpCall(
    ADMIN_CLUSTER,
    {[":method"] = "GET", [":path"] = "/clusters", [":authority"] = ADMIN_CLUSTER},
    "",
    1000
  )
  local healthy = {}
  if headers[":status"] == "200" then
    for line in string.gmatch(body, "[^\\n]+") do
      local cluster, flags = string.match(line, "^(.-)::.-::health_flags::(.*)$")
      if cluster ~= nil and flags == "healthy" then
        healthy[cluster] = true
      end
    end
  end
  local entries = {}
  local all_serving = true
  for _, backend in ipairs(backends) do
    local state = "SERVING"
    if not healthy[backend] then
      state = "NOT_SERVING"
      all_serving = false
    end
    table.insert(entries, string.format('"%s":"%s"', backend, state))
  end
  local status, code = "SERVING", "200"
  if not all_serving then
    status, code = "NOT_SERVING", "503"
  end
  handle:respond(
    {[":status"] = code, ["content-type"] = "application/json", ["cache-control"] = "no-store"},
    string.format('{"status":"%s","backends":{%s}}', status, table.concat(entries, ","))
  )
end
"""


# After jwt_authn (MLMESH_AUTH=jwt): the tenant header from the verified token's tenant claim,
# which must be a non-empty string; a token without one is a 403 TENANT_REQUIRED. Routes that
# need no token (health, the OpenAPI document) carry no payload and pass untouched.
_JWT_TENANT_LUA = """
function envoy_on_request(handle)
  local verified = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  if verified == nil or verified[PAYLOAD_KEY] == nil then
    return
  end
  local tenant = verified[PAYLOAD_KEY][TENANT_CLAIM]
  if type(tenant) ~= "string" or tenant == "" then
    handle:streamInfo():dynamicMetadata():set(REPLY_METADATA, "reason", "TENANT_REQUIRED")
    handle:respond(
      {[":status"] = "403"},
      "the token has no " .. TENANT_CLAIM .. " claim naming a tenant (a non-empty string)"
    )
    return
  end
  handle:headers():replace(TENANT_HEADER, tenant)
end
"""


def _lua_constants(**constants: str) -> str:
    return "".join(f'local {name} = "{value}"\n' for name, value in constants.items())


# Envoy's own error replies, as google.rpc.Status JSON: (HTTP status, gRPC code, reason).
_LOCAL_ERRORS = [
    (400, 3, "BAD_REQUEST"),
    (401, 16, "UNAUTHENTICATED"),
    (403, 7, "PERMISSION_DENIED"),
    (404, 5, "NOT_FOUND"),
    (408, 4, "REQUEST_TIMEOUT"),
    (413, 8, "PAYLOAD_TOO_LARGE"),
    (429, 8, "RATE_LIMITED"),
    (431, 3, "HEADERS_TOO_LARGE"),
    (502, 14, "BAD_GATEWAY"),
    (503, 14, "UNAVAILABLE"),
    (504, 4, "UPSTREAM_TIMEOUT"),
]
# Statuses without their own row, by range: (lowest HTTP status, gRPC code, reason).
_LOCAL_ERROR_RANGES = [(500, 13, "INTERNAL"), (400, 3, "BAD_REQUEST")]


def _status_json(grpc_code: int, reason: str) -> dict[str, Any]:
    return {
        "json_format": {
            "code": grpc_code,
            "message": "%LOCAL_REPLY_BODY%",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": ERROR_DOMAIN,
                    "metadata": {"envoy_details": "%RESPONSE_CODE_DETAILS%"},
                }
            ],
        }
    }


def _status_filter(op: str, status: int) -> dict[str, Any]:
    runtime_key = f"mlmesh.local_reply.{op.lower()}_{status}"
    value = {"default_value": status, "runtime_key": runtime_key}
    return {"status_code_filter": {"comparison": {"op": op, "value": value}}}


# Local replies of the gateway's own Lua filters, by the reason they name: (gRPC code, reason).
_LUA_REPLIES = [(7, "TENANT_REQUIRED")]


def _local_reply_config() -> dict[str, Any]:
    # /healthz answers its own JSON (also as a local reply, from Lua); leave it alone.
    not_healthz = {
        "header_filter": {
            "header": {
                "name": ":path",
                "string_match": {"exact": HEALTHZ_PATH},
                "invert_match": True,
            }
        }
    }
    rows = [(_status_filter("EQ", status), code, reason) for status, code, reason in _LOCAL_ERRORS]
    rows += [
        (_status_filter("GE", status), code, reason) for status, code, reason in _LOCAL_ERROR_RANGES
    ]
    lua_replies = [
        {
            "filter": {
                "metadata_filter": {
                    "matcher": {
                        "filter": _REPLY_METADATA,
                        "path": [{"key": "reason"}],
                        "value": {"string_match": {"exact": reason}},
                    },
                    # Unset, an absent key would match every local reply.
                    "match_if_key_not_found": False,
                }
            },
            "body_format_override": _status_json(code, reason),
        }
        for code, reason in _LUA_REPLIES
    ]
    mappers = lua_replies + [
        {
            "filter": {"and_filter": {"filters": [status_filter, not_healthz]}},
            "body_format_override": _status_json(code, reason),
        }
        for status_filter, code, reason in rows
    ]
    marker = {"header": {"key": _LOCAL_REPLY_HEADER, "value": "1"}}
    return {"mappers": [{**mapper, "headers_to_add": [marker]} for mapper in mappers]}


_ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    # The client's method and path: the transcoder turns both into gRPC's POST /pkg.Svc/Method.
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    # The upstream's real status (Envoy's %GRPC_STATUS_NUMBER% would derive a transcoded call's
    # from its HTTP code: NOT_FOUND logged as UNIMPLEMENTED); null when no upstream answered.
    "grpc_status": f"%DYNAMIC_METADATA({_GRPC_METADATA}:status)%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "flags": "%RESPONSE_FLAGS%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "tenant": "%REQ(X-TENANT-ID)%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def _http_filters(settings: GatewaySettings, service_names: list[str]) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    if settings.auth == "jwt":
        # Before jwt_authn, which then sets the header from the token's claim; a route-level
        # header removal would run after it and drop the claim too.
        filters.append(
            {
                "name": _STRIP_TENANT_FILTER,
                "typed_config": _typed(
                    "extensions.filters.http.header_mutation.v3.HeaderMutation",
                    mutations={"request_mutations": [{"remove": TENANT_HEADER}]},
                ),
            }
        )
    filters.append({"name": _CORS, "typed_config": _typed("extensions.filters.http.cors.v3.Cors")})
    if settings.auth == "jwt":
        filters.append({"name": _JWT, "typed_config": _jwt_authn(settings)})
        constants = _lua_constants(
            PAYLOAD_KEY=JWT_PAYLOAD_KEY,
            TENANT_CLAIM=settings.jwt_tenant_claim,
            TENANT_HEADER=TENANT_HEADER,
            REPLY_METADATA=_REPLY_METADATA,
        )
        filters.append(
            {
                "name": _JWT_TENANT_FILTER,
                "typed_config": _typed(
                    "extensions.filters.http.lua.v3.Lua",
                    default_source_code={"inline_string": constants + _JWT_TENANT_LUA},
                ),
            }
        )
    if settings.rate_limit_rps:
        # After the JWT filters: the bucket is the verified tenant's, not a header a client chose.
        filters.append({"name": _RATE_LIMIT, "typed_config": _rate_limit(settings)})
    filters += [
        {
            "name": _HEALTHZ_FILTER,
            "typed_config": _typed(
                "extensions.filters.http.lua.v3.Lua",
                source_codes={
                    "healthz": {
                        "inline_string": _lua_constants(ADMIN_CLUSTER=ADMIN_CLUSTER) + _HEALTHZ_LUA
                    }
                },
            ),
        },
        # Before the transcoder, so that it sees the transcoder's responses.
        {
            "name": _STATUS_FILTER,
            "typed_config": _typed(
                "extensions.filters.http.lua.v3.Lua",
                default_source_code={
                    "inline_string": _lua_constants(
                        HTTP_CODE_HEADER=HTTP_CODE_HEADER,
                        GRPC_METADATA=_GRPC_METADATA,
                        LOCAL_REPLY_HEADER=_LOCAL_REPLY_HEADER,
                    )
                    + _STATUS_LUA
                },
            ),
        },
        {"name": _TRANSCODER, "typed_config": _transcoder(settings, service_names)},
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed(
                "extensions.filters.http.router.v3.Router", suppress_envoy_headers=True
            ),
        },
    ]
    return filters


def _rate_limit(settings: GatewaySettings) -> dict[str, Any]:
    """A token bucket per tenant (one per distinct x-tenant-id value, created on first use)."""
    burst = settings.rate_limit_burst or settings.rate_limit_rps
    bucket = {
        "max_tokens": burst,
        "tokens_per_fill": settings.rate_limit_rps,
        "fill_interval": "1s",
    }
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return _typed(
        "extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        stat_prefix="tenant_rate_limit",
        # Calls without a tenant header (the default tenant): this bucket.
        token_bucket=bucket,
        filter_enabled={**always, "runtime_key": "mlmesh.rate_limit.enabled"},
        filter_enforced={**always, "runtime_key": "mlmesh.rate_limit.enforced"},
        rate_limits=[
            {
                "actions": [
                    {"request_headers": {"header_name": TENANT_HEADER, "descriptor_key": "tenant"}}
                ]
            }
        ],
        # An entry without a value: a bucket of its own for each tenant seen.
        descriptors=[{"entries": [{"key": "tenant"}], "token_bucket": bucket}],
        max_dynamic_descriptors=_MAX_TENANT_BUCKETS,
        # A tenant's call takes from its own bucket only, not also from the shared one.
        always_consume_default_token_bucket=False,
        response_headers_to_add=[
            {
                "header": {"key": "retry-after", "value": "1"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    )


def _jwt_authn(settings: GatewaySettings) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "local_jwks": {"filename": str(settings.jwks_file)},
        "forward": False,
        # The verified claims, for the tenant filter that follows.
        "payload_in_metadata": JWT_PAYLOAD_KEY,
    }
    if settings.jwt_issuer:
        provider["issuer"] = settings.jwt_issuer
    if settings.jwt_audiences:
        provider["audiences"] = settings.jwt_audiences
    return _typed(
        "extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={JWT_PROVIDER: provider},
        rules=[
            {"match": {"path": HEALTHZ_PATH}},
            {"match": {"path": OPENAPI_PATH}},
            *({"match": route["match"]} for route in _ui_routes(settings)),
            {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}},
        ],
        bypass_cors_preflight=True,
    )


def _transcoder(settings: GatewaySettings, service_names: list[str]) -> dict[str, Any]:
    return _typed(
        "extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=str(settings.descriptor),
        services=service_names,
        print_options={
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": True,
        },
        case_insensitive_enum_parsing=True,
        convert_grpc_status=True,
        # Only the google.api.http rules are REST routes.
        auto_mapping=False,
        # '+' in a query string is a space, as browsers and urllib encode it.
        query_param_unescape_plus=True,
        ignore_unknown_query_parameters=False,
        # Without these an unknown path or query parameter reaches the backend (503), and a
        # path/body field collision silently updates the record the body names.
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
            "reject_binding_body_field_collisions": True,
        },
        max_request_body_size=settings.max_body_bytes,
        max_response_body_size=settings.max_body_bytes,
    )


# Any call may be retried when it never reached the service; one that is safe to repeat (a
# read, a write with an idempotency key) also on UNAVAILABLE or a connection reset mid-call.
_RETRY_UNSENT = "connect-failure,refused-stream"
_RETRY_SAFE = f"{_RETRY_UNSENT},unavailable,reset"


def _retry_policy(settings: GatewaySettings, retry_on: str) -> dict[str, Any]:
    return {
        "retry_on": retry_on,
        "num_retries": settings.upstream_retries,
        "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"},
        # Another replica when there is one.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": _typed(
                    "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                ),
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _read_methods(services) -> dict[str, list[str]]:
    """Per domain, the full gRPC paths of the RPCs whose REST rule is a GET: reads."""
    reads: dict[str, list[str]] = {}
    for service in services:
        for method in service.proto.method:
            rule = method.options.Extensions[annotations_pb2.http]
            if rule.get:
                reads.setdefault(service.domain, []).append(f"/{service.full_name}/{method.name}")
    return reads


def _domain_routes(
    settings: GatewaySettings, domain: str, reads: list[str], timeout: str
) -> list[dict[str, Any]]:
    target = {
        "cluster": domain,
        "timeout": timeout,
        # Native gRPC callers' deadlines apply, capped at the gateway's timeout.
        "max_stream_duration": {"grpc_timeout_header_max": timeout},
    }
    safe = {**target, "retry_policy": _retry_policy(settings, _RETRY_SAFE)}
    prefix = f"/mlmesh.{domain}.v1."
    # One exact path per read: cheaper to match than one regular expression for all.
    routes: list[dict[str, Any]] = [
        {"name": f"{domain}-read-{path.rsplit('/', 1)[1]}", "match": {"path": path}, "route": safe}
        for path in sorted(reads)
    ]
    routes += [
        {
            "name": f"{domain}-keyed-writes",
            "match": {
                "prefix": prefix,
                "headers": [{"name": IDEMPOTENCY_HEADER, "present_match": True}],
            },
            "route": safe,
        },
        {
            "name": domain,
            "match": {"prefix": prefix},
            "route": {**target, "retry_policy": _retry_policy(settings, _RETRY_UNSENT)},
        },
    ]
    return routes


def _route_config(
    settings: GatewaySettings, domains: list[str], reads: dict[str, list[str]]
) -> dict[str, Any]:
    transcoder_off = {_TRANSCODER: _typed("config.route.v3.FilterConfig", disabled=True)}
    if settings.rate_limit_rps:
        # Health checks and the OpenAPI document are never rate limited.
        transcoder_off[_RATE_LIMIT] = _typed("config.route.v3.FilterConfig", disabled=True)
    timeout = _seconds(settings.upstream_timeout_s)
    routes: list[dict[str, Any]] = [
        {
            "name": "healthz",
            "match": {"path": HEALTHZ_PATH},
            # Answered by the healthz Lua filter; the direct response only shows if it broke.
            "direct_response": {"status": 503, "body": {"inline_string": "health check failed"}},
            "metadata": {"filter_metadata": {_HEALTHZ_FILTER: {"backends": domains}}},
            "typed_per_filter_config": {
                **transcoder_off,
                _HEALTHZ_FILTER: _typed(
                    "extensions.filters.http.lua.v3.LuaPerRoute", name="healthz"
                ),
            },
        },
        {
            "name": "openapi",
            "match": {"path": OPENAPI_PATH},
            "direct_response": {
                "status": 200,
                "body": {"filename": str(settings.openapi)},
            },
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "typed_per_filter_config": transcoder_off,
        },
    ]
    # Transcoded REST calls are routed on the gRPC path the transcoder rewrites them to, so one
    # prefix per domain serves REST and native gRPC alike.
    for domain in domains:
        routes += _domain_routes(settings, domain, reads.get(domain, []), timeout)
    # REST paths match here before the transcoder rewrites them: CORS answers preflights only on
    # a route that has a route entry (not on a direct response). The transcoder rejects every
    # path without an RPC (reject_unknown_method), so nothing reaches this cluster untranscoded.
    routes.append(
        {
            "name": "rest",
            "match": {"prefix": "/api/"},
            "route": {"cluster": domains[0], "timeout": timeout},
        }
    )
    routes += [
        {**route, "typed_per_filter_config": transcoder_off} for route in _ui_routes(settings)
    ]
    routes.append(
        {
            "name": "unknown",
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "no such path"}},
        }
    )
    virtual_host: dict[str, Any] = {"name": "mlmesh", "domains": ["*"], "routes": routes}
    if settings.cors_origins:
        virtual_host["typed_per_filter_config"] = {
            _CORS: _typed(
                "extensions.filters.http.cors.v3.CorsPolicy",
                allow_origin_string_match=[{"exact": origin} for origin in settings.cors_origins],
                allow_methods="GET, POST, PATCH, DELETE, OPTIONS",
                allow_headers=(
                    f"authorization, content-type, {TENANT_HEADER}, x-request-id, "
                    f"{IDEMPOTENCY_HEADER}"
                ),
                expose_headers="location, x-request-id, retry-after",
                max_age="600",
            )
        }
    largest = max(
        [settings.openapi.stat().st_size, *(path.stat().st_size for _, path in _ui_files(settings))]
    )
    return {
        "name": "mlmesh",
        # The OpenAPI document and the UI's files are direct responses (default cap 4 KiB).
        "max_direct_response_body_size_bytes": max(largest * 2, 1024 * 1024),
        "virtual_hosts": [virtual_host],
    }


# --- the web UI ---------------------------------------------------------------------------
# The built single-page app is static files: each one is an exact-path direct response read
# from disk when Envoy loads its config, and every client-side route answers index.html so that
# a deep link loads. No file server beside Envoy, same origin as /api/v1 (no CORS).

# First path segments of the UI's routes (ui/src/routes.ts); part 2's views included.
UI_ROUTE_PREFIXES = (
    "/experiments",
    "/runs",
    "/compare",
    "/tracking",
    "/models",
    "/datasets",
    "/tasks",
    "/studies",
)
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
# Vite names everything under assets/ by its content hash: cacheable for good. index.html
# names the current assets, so browsers revalidate it.
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"


def _ui_files(settings: GatewaySettings) -> list[tuple[str, Path]]:
    """(URL path, file) of every file of the UI build; empty without a build."""
    root = settings.ui_dir
    if not (root / "index.html").is_file():
        return []
    return [
        ("/" + path.relative_to(root).as_posix(), path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


def _static_route(name: str, match: dict[str, Any], path: Path, cache: str) -> dict[str, Any]:
    headers = {
        "content-type": _CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
        "cache-control": cache,
        "x-content-type-options": "nosniff",
    }
    return {
        "name": name,
        "match": {**match, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": 200, "body": {"filename": str(path)}},
        "response_headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in headers.items()
        ],
    }


def _ui_routes(settings: GatewaySettings) -> list[dict[str, Any]]:
    """Routes of the UI: its files by exact path, then index.html for `/` and every client-side
    route (GET only; anything else falls through to the gateway's JSON 404)."""
    files = _ui_files(settings)
    if not files:
        return []
    index = settings.ui_dir / "index.html"
    routes = [
        _static_route(
            f"ui:{url}",
            {"path": url},
            path,
            _IMMUTABLE if url.startswith("/assets/") else _REVALIDATE,
        )
        for url, path in files
        if url != "/index.html"
    ]
    routes.append(_static_route("ui:/", {"path": "/"}, index, _REVALIDATE))
    routes += [
        _static_route(f"ui:{prefix}", {"path_separated_prefix": prefix}, index, _REVALIDATE)
        for prefix in UI_ROUTE_PREFIXES
    ]
    return routes


def _listener(
    settings: GatewaySettings,
    domains: list[str],
    service_names: list[str],
    reads: dict[str, list[str]],
) -> dict[str, Any]:
    manager = _typed(
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="gateway",
        # HTTP/1.1 for REST clients, HTTP/2 for gRPC and modern browsers, on one port.
        codec_type="AUTO",
        use_remote_address=True,
        generate_request_id=True,
        preserve_external_request_id=True,
        always_set_request_id_in_response=True,
        normalize_path=True,
        merge_slashes=True,
        access_log=[
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": _typed(
                    "extensions.access_loggers.stream.v3.StdoutAccessLog",
                    log_format={"json_format": _ACCESS_LOG_FORMAT},
                ),
            }
        ],
        local_reply_config=_local_reply_config(),
        route_config=_route_config(settings, domains, reads),
        http_filters=_http_filters(settings, service_names),
    )
    return {
        "name": "gateway",
        "address": _socket_address(settings.host, settings.port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def _backend_cluster(domain: str, upstream: str) -> dict[str, Any]:
    """A domain's cluster: `upstream` is `host:port`, or several (replicas) separated by commas."""
    endpoints = [_split_host_port(item.strip()) for item in upstream.split(",") if item.strip()]
    if not endpoints:
        raise ValueError(f"upstream {upstream!r} names no host:port")
    cluster: dict[str, Any] = {
        "name": domain,
        "type": "STATIC" if all(_is_ip(host) for host, _ in endpoints) else "STRICT_DNS",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
            )
        },
        # grpc.health.v1 on every backend; /healthz reports the result. Checks run at the same
        # pace with or without traffic so that a stopped backend shows up within seconds.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        # A replica that refuses connections (killed, restarting) is taken out of rotation
        # before its health checks fail; panic routing still reaches it when none is left.
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 2,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 50,
        },
        "load_assignment": {
            "cluster_name": domain,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket_address(host, port)}}
                        for host, port in endpoints
                    ]
                }
            ],
        },
    }
    if cluster["type"] == "STRICT_DNS":
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


def build_config(settings: GatewaySettings) -> dict[str, Any]:
    """The Envoy bootstrap as a dict (what `render` dumps)."""
    if not settings.openapi.is_file():
        raise FileNotFoundError(f"{settings.openapi} is missing; run `make protos`")
    services = mlmesh_services(load_descriptor_set(settings.descriptor))
    if not services:
        raise ValueError(f"{settings.descriptor} has no mlmesh.<domain>.v1 service")
    domains = sorted({service.domain for service in services})
    upstreams = {domain: settings.upstream(domain) for domain in domains}
    service_names = [service.full_name for service in services]
    admin_cluster = {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket_address("127.0.0.1", settings.admin_port)}}
                    ]
                }
            ],
        },
    }
    return {
        "admin": {"address": _socket_address("127.0.0.1", settings.admin_port)},
        "static_resources": {
            "listeners": [_listener(settings, domains, service_names, _read_methods(services))],
            "clusters": [
                *(_backend_cluster(domain, upstreams[domain]) for domain in domains),
                admin_cluster,
            ],
        },
    }


def render(settings: GatewaySettings) -> str:
    """The Envoy static config as YAML."""
    header = "# Generated by `python -m gateway.envoy_config`; edit the generator, not this file.\n"
    return header + yaml.safe_dump(build_config(settings), sort_keys=False, width=100)


def write_config(settings: GatewaySettings, path: str | Path) -> Path:
    """Renders the config into `path` (parents created) and returns it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(settings))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the YAML")
    args = parser.parse_args(argv)
    print(write_config(GatewaySettings(), args.out))


if __name__ == "__main__":
    main()
