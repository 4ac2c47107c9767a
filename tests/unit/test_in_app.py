"""`GET /v1/customers/{customer_id}/dunning`: token checks and the view of the case (fake Temporal client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from dunning.models import AccessState, AttemptRecord, CaseStatus, ChargeResult, DeclineCategory, InvoiceState, Stage
from runtime.links import CaseLinks, LinkSigner
from runtime.settings import Settings
from starter.api import deps
from starter.api.routes import in_app
from tests.helpers.database import sqlite_database

TOKEN = "s3cret-token"
NOW = datetime.now(UTC)


def status(
    case_id: str = "dunning-sub_1",
    *,
    stage: Stage = Stage.RETRYING,
    access: AccessState = AccessState.GRACE,
    banner_template: str | None = "payment_failed",
    opened: datetime = NOW,
) -> CaseStatus:
    invoice = InvoiceState(
        invoice_id="in_1",
        amount_due=4900,
        currency="usd",
        failed_at=opened,
        hosted_invoice_url="https://invoice.stripe.com/i/acct_1/test_1",
    )
    return CaseStatus(
        case_id=case_id,
        subscription_id="sub_1",
        customer_id="cus_1",
        policy="default",
        stage=stage,
        outcome=None,
        access=access,
        opened_at=opened,
        amount_due=4900,
        currency="usd",
        outstanding_invoices=[invoice],
        invoices=[invoice],
        decline_category=DeclineCategory.SOFT,
        attempts=[],
        notifications=[],
        timeline=[],
        paused=False,
        pause_reason=None,
        grace_ends_at=opened + timedelta(days=14, hours=1),
        next_action="retry the charge (1/6)",
        next_action_at=opened + timedelta(days=1),
        banner_template=banner_template,
    )


@dataclass
class FakeExecution:
    id: str
    run_id: str = "run-1"


@dataclass
class FakeHandle:
    status: CaseStatus

    async def query(self, name: str, result_type: type | None = None) -> CaseStatus:
        assert name == "status" and result_type is CaseStatus
        return self.status


@dataclass
class FakeClient:
    cases: dict[str, CaseStatus] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    down: bool = False

    async def list_workflows(self, query: str, limit: int | None = None):
        self.queries.append(query)
        if self.down:
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        for workflow_id in self.cases:
            yield FakeExecution(workflow_id)

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> FakeHandle:
        return FakeHandle(self.cases[workflow_id])


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def app(client: FakeClient) -> FastAPI:
    app = FastAPI()
    app.include_router(in_app.router)
    app.dependency_overrides[deps.get_temporal_client] = lambda: client
    app.dependency_overrides[deps.get_api_token] = lambda: TOKEN
    return app


async def get(
    app: FastAPI, path: str = "/v1/customers/cus_1/dunning", token: str | None = TOKEN, **headers: str
) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        return await http.get(path, headers=headers)


@pytest.mark.parametrize("token", [None, "wrong", "", TOKEN + "x"])
async def test_requires_the_bearer_token(app: FastAPI, client: FakeClient, token: str | None) -> None:
    response = await get(app, token=token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.queries == []


async def test_basic_auth_scheme_is_refused(app: FastAPI) -> None:
    assert (await get(app, token=None, Authorization=f"Basic {TOKEN}")).status_code == 401


async def test_unconfigured_token_refuses_everyone(app: FastAPI) -> None:
    app.dependency_overrides[deps.get_api_token] = lambda: None
    assert (await get(app)).status_code == 503


async def test_no_open_case(app: FastAPI, client: FakeClient) -> None:
    response = await get(app)
    assert response.status_code == 200
    assert response.json() == {
        "open_case": False,
        "case_id": None,
        "stage": None,
        "message": None,
        "update_url": None,
        "access_state": "active",
        "amount_due": None,
        "currency": None,
        "grace_ends_at": None,
    }
    assert client.queries == [contract.open_cases_of_customer("cus_1")]


async def test_open_case_with_the_case_banner(app: FastAPI, client: FakeClient) -> None:
    client.cases["dunning-sub_1"] = status(banner_template="payment_failed")
    body = (await get(app)).json()
    assert body["open_case"] is True
    assert body["case_id"] == "dunning-sub_1"
    assert body["stage"] == "retrying"
    assert body["access_state"] == "grace"
    day = (NOW + timedelta(days=1)).strftime("%B %-d, %Y")
    assert body["message"] == (
        f"Your latest payment of $49.00 didn't go through. We'll retry on {day}, or you can see your options now."
    )
    assert body["update_url"] == "https://invoice.stripe.com/i/acct_1/test_1"
    assert (body["amount_due"], body["currency"]) == (4900, "usd")


async def test_banner_rendered_from_the_stage_in_the_asked_language(app: FastAPI, client: FakeClient) -> None:
    client.cases["dunning-sub_1"] = status(stage=Stage.FINAL_NOTICE, banner_template="final_notice")
    english = (await get(app)).json()["message"]
    assert english.startswith("Your access pauses on") and "14 days left" in english
    german = (await get(app, **{"Accept-Language": "de-DE,de;q=0.9"})).json()["message"]
    assert german.startswith("Ihr Zugang wird am") and "49,00" in german


async def test_suspended_case_wins_over_a_newer_grace_case(app: FastAPI, client: FakeClient) -> None:
    client.cases["dunning-sub_new"] = status("dunning-sub_new", opened=NOW)
    client.cases["dunning-sub_old"] = status(
        "dunning-sub_old",
        stage=Stage.SUSPENDED,
        access=AccessState.SUSPENDED,
        opened=NOW - timedelta(days=20),
        banner_template="suspended",
    )
    body = (await get(app)).json()
    assert (body["case_id"], body["access_state"]) == ("dunning-sub_old", "suspended")
    assert body["message"].startswith("Your access is paused")


async def test_the_suspension_banner_names_the_end_and_follows_the_decline(app: FastAPI, client: FakeClient) -> None:
    suspended = status(stage=Stage.SUSPENDED, access=AccessState.SUSPENDED, banner_template="suspended")
    expired = ChargeResult(
        invoice_id="in_1", status="declined", category=DeclineCategory.HARD, decline_code="expired_card"
    )
    client.cases["dunning-sub_1"] = suspended.model_copy(
        update={
            "decline_category": DeclineCategory.HARD,
            "attempts": [AttemptRecord(at=NOW, invoice_id="in_1", attempt=0, trigger="stripe", result=expired)],
            "cancel_at": datetime(2027, 1, 4, 14, tzinfo=UTC),
            "customer_timezone": "Europe/Berlin",
        }
    )
    message = (await get(app)).json()["message"]
    assert "add your new card to restore access" in message
    assert message.endswith("If the payment isn't made by January 4, 2027, the subscription ends then.")


async def test_case_without_banner_shows_none(app: FastAPI, client: FakeClient) -> None:
    client.cases["dunning-sub_1"] = status(stage=Stage.PAUSED, banner_template=None)
    body = (await get(app)).json()
    assert body["open_case"] is True and body["message"] is None and body["stage"] == "paused"


async def test_temporal_down_is_503(app: FastAPI, client: FakeClient) -> None:
    client.down = True
    response = await get(app)
    assert response.status_code == 503 and "Temporal" in response.json()["detail"]


async def test_customer_id_cannot_inject_into_the_query(app: FastAPI, client: FakeClient) -> None:
    response = await get(app, path='/v1/customers/x" OR CustomerId != "/dunning')
    assert response.status_code == 422
    assert client.queries == []


async def test_unknown_banner_template_gives_no_message_not_an_error(app: FastAPI, client: FakeClient) -> None:
    client.cases["dunning-sub_1"] = status(banner_template="template_from_a_custom_policy")
    response = await get(app)
    assert response.status_code == 200 and response.json()["message"] is None


async def test_update_link_can_come_from_an_async_payments_backend(app: FastAPI, client: FakeClient) -> None:
    client.cases["dunning-sub_1"] = status()

    async def portal_link(customer_id: str, case: CaseStatus) -> str:
        return f"https://billing.example.com/portal/{customer_id}?invoice={case.outstanding_invoices[0].invoice_id}"

    app.dependency_overrides[deps.get_update_link] = lambda: portal_link
    assert (await get(app)).json()["update_url"] == "https://billing.example.com/portal/cus_1?invoice=in_1"


async def test_uses_the_apps_own_temporal_gateway_and_settings(client: FakeClient) -> None:
    """Inside starter.api.main the app holds settings and a Temporal gateway: no overrides needed."""

    class Gateway:
        async def client(self) -> FakeClient:
            return client

    app = FastAPI()
    app.include_router(in_app.router)
    app.state.temporal = Gateway()
    app.state.settings = Settings(dunning_api_token=TOKEN)
    client.cases["dunning-sub_1"] = status()
    assert (await get(app)).json()["case_id"] == "dunning-sub_1"
    assert (await get(app, token="nope")).status_code == 401


@pytest.mark.parametrize(
    "hostile",
    ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,<script>alert(1)</script>", "http://invoice.example"],
)
async def test_the_update_link_is_never_anything_but_https(app: FastAPI, client: FakeClient, hostile: str) -> None:
    """A case opened before links were checked at the door may hold a hostile `hosted_invoice_url`:
    the SaaS app puts `update_url` behind its banner's button, so only https ever leaves here."""
    case = status()
    case.outstanding_invoices[0].hosted_invoice_url = hostile
    client.cases["dunning-sub_1"] = case
    body = (await get(app)).json()
    assert body["open_case"] is True and body["update_url"] is None
    assert hostile not in (body["message"] or "")

    app.dependency_overrides[deps.get_update_link] = lambda: (lambda customer_id, case: hostile)
    assert (await get(app)).json()["update_url"] is None


async def test_the_banner_links_to_the_case_page_like_every_message(app: FastAPI, client: FakeClient, tmp_path) -> None:
    links = CaseLinks(LinkSigner([b"banner-link-key-0123456789"]), "http://127.0.0.1:8000", sqlite_database(tmp_path))
    app.state.links = links
    app.dependency_overrides[deps.get_settings] = lambda: Settings(dunning_public_url="http://127.0.0.1:8000")
    client.cases["dunning-sub_1"] = status(banner_template="payment_failed")
    body = (await get(app)).json()
    _, token = links.signer.token_for(client.cases["dunning-sub_1"].case_id)
    assert body["update_url"] == f"http://127.0.0.1:8000/c/{token}"
    record = await links.find(token)
    assert record is not None and record.workflow_id == "dunning-sub_1" and record.customer_id == "cus_1"
