"""The operators' view of the ledger over HTTP: the report's contract JSON, /metrics, the dashboard."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from runtime.database import DatabaseUnavailable
from runtime.ledger import DatabaseLedger
from runtime.settings import Settings
from starter.api import deps
from starter.api.main import create_app
from tests.helpers import ledger_checks

TOKEN = "operator-token-123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _no_temporal() -> object:
    raise RuntimeError("Failed client connect: no Temporal in unit tests")


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    settings = Settings(
        dunning_api_token=TOKEN,
        dunning_database_url=f"sqlite:///{tmp_path / 'dunning.sqlite3'}",
        dunning_state_dir=tmp_path,
        dunning_feedback_retention_days=30,
    )
    application = create_app(settings, client_factory=_no_temporal)
    from runtime import migrations

    migrations.upgrade(application.state.database)
    ledger = DatabaseLedger(application.state.database)
    asyncio.run(ledger.record(ledger_checks.recovered("c1", "cus_1")))
    open_case = ledger_checks.facts("c2", "cus_2", amount=2500, currency="usd")
    asyncio.run(ledger.record(ledger_checks.CaseRecord(facts=open_case, events=[ledger_checks.event("opened", "opened")])))
    return application


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dunning.test")


async def test_the_recovery_report_is_the_contracts_json(app: FastAPI) -> None:
    async with client(app) as http:
        assert (await http.get("/v1/reports/recovery")).status_code == 401
        body = (await http.get("/v1/reports/recovery", params={"by": "trigger"}, headers=AUTH)).json()
        assert body == {
            "cases": 2,
            "closed": 1,
            "recovered": 1,
            "recovery_rate": 0.5,
            "recovered_amount": {"eur": 4900},
            "median_hours_to_recover": 72.0,
            "groups": [
                {"key": "card_update", "cases": 1, "closed": 1, "recovered": 1, "recovery_rate": 1.0, "recovered_amount": {"eur": 4900}},
                {"key": "none", "cases": 1, "closed": 0, "recovered": 0, "recovery_rate": 0.0, "recovered_amount": {}},
            ],
        }  # fmt: skip
        later = (await http.get("/v1/reports/recovery", params={"since": "2026-12-01"}, headers=AUTH)).json()
        assert later["cases"] == 0 and later["groups"] == []
        assert (await http.get("/v1/reports/recovery", params={"by": "colour"}, headers=AUTH)).status_code == 422


async def test_the_report_answers_503_while_the_database_is_down(app: FastAPI) -> None:
    class Down(DatabaseLedger):
        async def report_rows(self, since=None, until=None, **kwargs):  # type: ignore[no-untyped-def]
            raise DatabaseUnavailable("database unavailable: connection refused")

    app.dependency_overrides[deps.get_ledger] = lambda: Down(app.state.database)
    async with client(app) as http:
        answer = await http.get("/v1/reports/recovery", headers=AUTH)
        assert answer.status_code == 503 and answer.headers["Retry-After"]


async def test_metrics_read_the_ledger_and_time_the_webhooks(app: FastAPI) -> None:
    async with client(app) as http:
        await http.post("/webhooks/stripe", content=b"{}")  # refused (no secret): still timed
        text = (await http.get("/metrics")).text
    assert "dunning_cases_opened_total 2.0" in text
    assert 'dunning_cases_closed_total{outcome="recovered"} 1.0' in text
    assert 'dunning_recovered_amount_total{currency="eur"} 4900.0' in text
    assert 'dunning_charge_attempts_total{result="succeeded"} 1.0' in text
    assert "# TYPE dunning_messages_total counter" in text
    assert 'dunning_webhook_request_duration_seconds_count{path="/webhooks/stripe"' in text


async def test_the_dashboard_signs_in_with_the_token_then_draws_the_figures(app: FastAPI) -> None:
    async with client(app) as http:
        first = await http.get("/dashboard")
        assert first.status_code == 303 and first.headers["location"] == "/dashboard/login"
        assert (await http.post("/dashboard/login", data={"token": "wrong"})).status_code == 401
        signed = await http.post("/dashboard/login", data={"token": TOKEN})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "Path=/dashboard" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = await http.get("/dashboard")
    assert page.status_code == 200
    html = page.text
    assert html.count("<svg") >= 5 and "<script" not in html and "http://" not in html.split("</style>")[0]
    assert "Recovery rate by weekly cohort" in html and "49.00 EUR" in html
    assert "Temporal is not reachable" in html  # the ledger's figures are shown all the same


async def test_the_experiment_report_is_the_contracts_json(tmp_path: Path) -> None:
    import shutil

    from dunning.policy import SHIPPED_POLICY_DIR

    policies = tmp_path / "policies"
    policies.mkdir()
    for name in ("default", "minimal"):
        shutil.copy(SHIPPED_POLICY_DIR / f"{name}.toml", policies)
    (policies / "experiments.toml").write_text(
        '[[experiment]]\nname = "holdout-q1"\napplies_to = "default"\ncontrol = "default"\narms = { default = 9, minimal = 1 }\n'
    )
    settings = Settings(
        dunning_api_token=TOKEN,
        dunning_database_url=f"sqlite:///{tmp_path / 'dunning.sqlite3'}",
        dunning_state_dir=tmp_path,
        dunning_policy_dir=policies,
    )
    application = create_app(settings, client_factory=_no_temporal)
    from runtime import migrations

    migrations.upgrade(application.state.database)
    ledger = DatabaseLedger(application.state.database)
    recovered = ledger_checks.recovered("c1", "cus_1")
    await ledger.record(recovered.model_copy(update={"facts": recovered.facts.model_copy(update={"arm": "holdout-q1:default"})}))
    held_out = ledger_checks.facts("c2", "cus_2").model_copy(update={"arm": "holdout-q1:minimal", "policy": "minimal"})
    await ledger.record(ledger_checks.CaseRecord(facts=held_out, events=[ledger_checks.event("opened", "opened")]))
    async with client(application) as http:
        assert (await http.get("/v1/reports/experiments/holdout-q1")).status_code == 401
        assert (await http.get("/v1/reports/experiments/nope", headers=AUTH)).status_code == 404
        body = (await http.get("/v1/reports/experiments/holdout-q1", headers=AUTH)).json()
        await http.post("/dashboard/login", data={"token": TOKEN})
        page = (await http.get("/dashboard", params={"since": "2030-01-01"})).text
    # A section per experiment, over all its cases whatever the period shown.
    assert "Experiment holdout-q1" in page and "too early" in page and "+0.0" not in page
    assert page.count('<td class="n">control</td>') == 1 and "-100.0 pt" in page
    assert list(body) == ["name", "arms", "sample_ratio_p", "verdict"]
    assert body["name"] == "holdout-q1" and body["verdict"] == "too_early"
    control, minimal = body["arms"]
    assert (control["arm"], control["policy"], control["cases"], control["recovered"], control["recovery_rate"]) == ("default", "default", 1, 1, 1.0)
    assert control["lift_vs_control"] is None and control["lift_ci95"] is None
    assert (minimal["arm"], minimal["cases"], minimal["closed"], minimal["recovery_rate"]) == ("minimal", 1, 0, 0.0)
    assert minimal["lift_vs_control"] == -1.0 and minimal["lift_ci95"][0] < -0.1 < 0 < minimal["ci95"][1]
    assert 0 < body["sample_ratio_p"] < 1


async def test_simulated_cases_are_left_out_of_the_report_metrics_and_dashboard_unless_asked(app: FastAPI) -> None:
    ledger = DatabaseLedger(app.state.database)
    simulated = ledger_checks.facts("sim", "cus_sim_1", subscription_id="sim_1_000000", case_id="dunning-sim_1_000000@1", workflow_id="dunning-sim_1_000000")
    await ledger.record(ledger_checks.CaseRecord(facts=simulated, events=[ledger_checks.event("opened", "opened")]))
    async with client(app) as http:
        plain = (await http.get("/v1/reports/recovery", headers=AUTH)).json()
        asked = (await http.get("/v1/reports/recovery", params={"include_simulated": "true"}, headers=AUTH)).json()
        assert plain["cases"] == 2 and "simulated_cases" not in plain
        assert asked["cases"] == 3 and asked["simulated_cases"] == 1
        assert "dunning_cases_opened_total 2.0" in (await http.get("/metrics")).text
        assert "dunning_cases_opened_total 3.0" in (await http.get("/metrics", params={"include_simulated": "true"})).text
        await http.post("/dashboard/login", data={"token": TOKEN})
        page = (await http.get("/dashboard")).text
        shown = (await http.get("/dashboard", params={"include_simulated": "true"})).text
    assert "SIMULATED" not in page
    assert "SIMULATED:</strong> 1 of these 3 cases" in shown and "checked" in shown
