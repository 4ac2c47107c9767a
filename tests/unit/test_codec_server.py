"""The codec server the Temporal UI and CLI call: protocol, operator token, CORS, hostile bodies."""

from __future__ import annotations

import base64
import json
import os

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from runtime.codec import ENCODING, EncryptionCodec, parse_keys
from starter.api import deps
from starter.api.routes import codec_server
from tests.helpers.case_harness import failure

TOKEN = "op-token-" + "x" * 24
KEY = base64.b64encode(os.urandom(32)).decode()
UI = "http://localhost:8233"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("DUNNING_API_TOKEN", TOKEN)
    monkeypatch.setenv("DUNNING_ENCRYPTION_KEYS", f"k1:{KEY}")
    monkeypatch.delenv("DUNNING_CODEC_CORS_ORIGINS", raising=False)


def app() -> FastAPI:
    application = FastAPI()
    application.include_router(codec_server.router)
    return application


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://dunning.test")


AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
SECRET = failure(invoice_id="in_UIsecret")


def as_json(payloads) -> dict:
    return json.loads(json_format.MessageToJson(Payloads(payloads=payloads)))


def from_json(body: dict) -> list:
    return list(json_format.ParseDict(body, Payloads()).payloads)


async def encrypted_payloads():
    codec = EncryptionCodec(parse_keys(f"k1:{KEY}"))
    return await codec.encode(pydantic_data_converter.payload_converter.to_payloads([SECRET, "hello"]))


async def test_decode_returns_the_readable_payloads(env):
    async with client() as c:
        r = await c.post("/codec/decode", json=as_json(await encrypted_payloads()), headers=AUTH)
    assert r.status_code == 200
    decoded = from_json(r.json())
    assert [p.metadata["encoding"] for p in decoded] == [b"json/plain", b"json/plain"]
    assert json.loads(decoded[0].data)["invoice_id"] == "in_UIsecret"


async def test_encode_then_decode_round_trips_what_an_operator_types(env):
    typed = pydantic_data_converter.payload_converter.to_payloads([{"days": 7, "reason": "asked for time"}])
    async with client() as c:
        enc = await c.post("/codec/encode", json=as_json(typed), headers=AUTH)
        assert enc.status_code == 200
        assert all(p.metadata["encoding"] == ENCODING for p in from_json(enc.json()))
        dec = await c.post("/codec/decode", json=enc.json(), headers=AUTH)
    assert from_json(dec.json()) == typed


async def test_unencrypted_and_empty_payloads_pass_through(env):
    plain = pydantic_data_converter.payload_converter.to_payloads(["x", None])
    async with client() as c:
        assert from_json((await c.post("/codec/decode", json=as_json(plain), headers=AUTH)).json()) == plain
        assert (await c.post("/codec/decode", json={"payloads": []}, headers=AUTH)).json() == {}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Cookie": f"{deps.OPERATOR_SESSION_COOKIE}={TOKEN}"},  # the cookie holds a digest, not the token
    ],
)
async def test_without_the_operator_token_nothing_is_decoded(env, headers):
    async with client() as c:
        r = await c.post("/codec/decode", json=as_json(await encrypted_payloads()), headers=headers)
    assert r.status_code == 401
    assert "in_UIsecret" not in r.text


async def test_no_token_configured_refuses_everyone(env, monkeypatch):
    monkeypatch.delenv("DUNNING_API_TOKEN")
    async with client() as c:
        r = await c.post("/codec/decode", json={"payloads": []}, headers={"Authorization": "Bearer "})
    # The API's one token check: a missing DUNNING_API_TOKEN is the server's fault (503), as for in-app.
    assert r.status_code == 503


async def test_tampered_payload_is_refused_not_half_decoded(env):
    payloads = await encrypted_payloads()
    payloads[0].data = payloads[0].data[:-1] + bytes([payloads[0].data[-1] ^ 1])
    async with client() as c:
        r = await c.post("/codec/decode", json=as_json(payloads), headers=AUTH)
    assert r.status_code == 422 and "failed authentication" in r.text


async def test_cors_for_the_ui_origin_only(env):
    async with client() as c:
        pre = await c.options(
            "/codec/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == UI
        assert "x-namespace" in pre.headers["access-control-allow-headers"]
        assert pre.headers["access-control-allow-credentials"] == "true"

        post = await c.post("/codec/decode", json={"payloads": []}, headers={**AUTH, "Origin": UI})
        assert post.headers["access-control-allow-origin"] == UI

        evil = await c.options(
            "/codec/decode", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in evil.headers
        evil_post = await c.post(
            "/codec/decode", json={"payloads": []}, headers={**AUTH, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in evil_post.headers


async def test_the_ui_can_read_why_it_was_refused(env):
    async with client() as c:
        r = await c.post("/codec/decode", json={"payloads": []}, headers={"Origin": UI})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == UI


async def test_cors_origins_are_configurable(env, monkeypatch):
    monkeypatch.setenv("DUNNING_CODEC_CORS_ORIGINS", "https://temporal.corp.example, https://ui.corp.example/")
    async with client() as c:
        r = await c.options("/codec/encode", headers={"Origin": "https://ui.corp.example"})
        assert r.headers["access-control-allow-origin"] == "https://ui.corp.example"
        r = await c.options("/codec/encode", headers={"Origin": UI})
        assert "access-control-allow-origin" not in r.headers


async def test_browser_session_login_lets_the_ui_decode(env):
    async with client() as c:
        wrong = await c.post(
            "/codec/login", content="token=nope", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert wrong.status_code == 401 and deps.OPERATOR_SESSION_COOKIE not in wrong.cookies
        ok = await c.post(
            "/codec/login", content=f"token={TOKEN}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert ok.status_code == 200
        set_cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and TOKEN not in set_cookie
        r = await c.post("/codec/decode", json=as_json(await encrypted_payloads()), headers={"Origin": UI})
    assert r.status_code == 200 and "in_UIsecret" in base64.b64decode(r.json()["payloads"][0]["data"]).decode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b'{"payloads": 3}',
        b'{"payloads": [{"data": 5}]}',
        b'{"payloads": [{"metadata": {"encoding": 1}}]}',
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe",
    ],
)
async def test_malformed_bodies_are_a_clean_400(env, body):
    async with client() as c:
        r = await c.post("/codec/decode", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400


async def test_oversized_body_is_refused_before_it_is_read(env):
    async with client() as c:
        big = b'{"payloads": [{"data": "' + b"A" * (codec_server.MAX_BODY_BYTES + 10) + b'"}]}'
        r = await c.post("/codec/decode", content=big, headers=AUTH)
        assert r.status_code == 413
        r = await c.post("/codec/decode", content=b"{}", headers={**AUTH, "Content-Length": "999999999999"})
        assert r.status_code == 413


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["payloads", "metadata", "data", "x"]), inner, max_size=3)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    auth=st.sampled_from([AUTH, {}, {"Authorization": "Bearer x"}]),
)
async def test_fuzzed_bodies_never_500(env, body, auth):
    async with client() as c:
        r = await c.post("/codec/decode", content=body, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code in (200, 400, 401, 422), r.text
