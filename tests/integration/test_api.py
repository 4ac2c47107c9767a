"""The whole ASGI app `starter.api:app`: every endpoint of the contract is served by create_app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from runtime.settings import Settings
from starter.api.main import create_app

TOKEN = "api-token-for-tests"


async def test_every_endpoint_of_the_contract_is_served(dev_env, tmp_path):
    settings = Settings(dunning_api_token=TOKEN, dunning_state_dir=tmp_path, dunning_task_queue="api-routes")
    app = create_app(settings, client_factory=lambda: dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        banner = await http.get("/v1/customers/cus_nobody/dunning", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (banner.status_code, banner.json()["open_case"]) == (200, False)
        assert (await http.get("/v1/customers/cus_nobody/dunning")).status_code == 401
        # Twilio not configured here: refused, not acknowledged.
        assert (await http.post("/webhooks/twilio/sms", content=b"Body=STOP")).status_code == 503
        # No STRIPE_WEBHOOK_SECRET here either.
        assert (await http.post("/webhooks/stripe", content=b"{}")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200


@pytest.fixture
async def api_without_temporal(tmp_path, unused_tcp_port) -> AsyncIterator[httpx.AsyncClient]:
    async def connect() -> Client:
        return await Client.connect(f"127.0.0.1:{unused_tcp_port}", data_converter=pydantic_data_converter)

    settings = Settings(dunning_api_token=TOKEN, dunning_state_dir=tmp_path)
    app = create_app(settings, client_factory=connect)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


async def test_in_app_endpoint_answers_503_while_temporal_is_away(api_without_temporal):
    response = await api_without_temporal.get(
        "/v1/customers/cus_1/dunning", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"


async def test_body_limit_covers_every_endpoint(api_without_temporal):
    response = await api_without_temporal.post("/webhooks/twilio/sms", content=b"x" * (256 * 1024 + 1))
    assert response.status_code == 413
