"""MLMESH_AUTH=jwt on the real Envoy: bearer tokens checked against a local JWKS file, the tenant
taken from the token's `tenant_id` claim, never from a client-sent `x-tenant-id`."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers.gateway import gateway_for

ISSUER = "https://auth.mlmesh.test"
WIDGETS = "/api/v1/widgets"


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key():
    return _key()


@pytest.fixture(scope="module")
def jwt_gateway(compiled, widget_server, signing_key, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gw-jwt")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    gw = gateway_for(
        compiled,
        workdir,
        widget_server.address,
        auth="jwt",
        jwks_file=jwks,
        jwt_issuer=ISSUER,
        cors_origins=["https://app.example.com"],
    )
    yield gw
    gw.stop()


def token(key, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def call(gw, bearer=None, **headers):
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return requests.post(gw.base_url + WIDGETS, json={"name": "w"}, headers=headers, timeout=10)


def assert_unauthenticated(response):
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == 16
    assert body["details"][0]["reason"] == "UNAUTHENTICATED"


def test_no_token_is_401(jwt_gateway):
    assert_unauthenticated(call(jwt_gateway))


def test_forged_tenant_header_without_token_is_401(jwt_gateway):
    assert_unauthenticated(call(jwt_gateway, **{"x-tenant-id": "acme"}))


def test_token_from_another_key_is_401(jwt_gateway):
    assert_unauthenticated(call(jwt_gateway, token(_key(), tenant_id="acme")))


def test_expired_token_is_401(jwt_gateway, signing_key):
    stale = token(signing_key, tenant_id="acme", exp=int(time.time()) - 600)
    assert_unauthenticated(call(jwt_gateway, stale))


def test_wrong_issuer_is_401(jwt_gateway, signing_key):
    assert_unauthenticated(call(jwt_gateway, token(signing_key, tenant_id="acme", iss="evil")))


def test_tenant_comes_from_the_claim_and_forged_header_is_ignored(jwt_gateway, signing_key):
    response = call(jwt_gateway, token(signing_key, tenant_id="acme"), **{"x-tenant-id": "evil"})
    assert response.status_code == 201, response.text
    assert response.json()["tenant"] == "acme"


@pytest.mark.parametrize(
    "claims",
    [{}, {"tenant_id": ""}, {"tenant_id": 12}, {"tenant_id": ["acme"]}, {"tenant_id": {"a": 1}}],
    ids=["missing", "empty", "number", "array", "object"],
)
def test_token_without_a_tenant_is_403_and_never_the_default_tenant(
    jwt_gateway, signing_key, claims
):
    response = call(jwt_gateway, token(signing_key, **claims), **{"x-tenant-id": "acme"})
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == 7 and body["details"][0]["reason"] == "TENANT_REQUIRED"
    assert "tenant_id" in body["message"]


def test_the_tenant_claim_is_configurable(
    compiled, widget_server, signing_key, jwt_gateway, tmp_path_factory
):
    workdir = tmp_path_factory.mktemp("gw-jwt-org")
    gw = gateway_for(
        compiled,
        workdir,
        widget_server.address,
        auth="jwt",
        jwks_file=jwt_gateway.settings.jwks_file,
        jwt_issuer=ISSUER,
        jwt_tenant_claim="org",
    )
    try:
        named = call(gw, token(signing_key, org="acme", tenant_id="other"))
        assert named.status_code == 201 and named.json()["tenant"] == "acme", named.text
        unnamed = call(gw, token(signing_key, tenant_id="acme"))
        assert unnamed.status_code == 403 and "org" in unnamed.json()["message"]
    finally:
        gw.stop()


def test_health_openapi_and_preflight_need_no_token(jwt_gateway):
    assert requests.get(jwt_gateway.base_url + "/healthz", timeout=10).status_code == 200
    document = requests.get(jwt_gateway.base_url + "/api/v1/openapi.json", timeout=10)
    assert document.status_code == 200
    preflight = requests.options(
        jwt_gateway.base_url + WIDGETS,
        headers={"origin": "https://app.example.com", "access-control-request-method": "POST"},
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
