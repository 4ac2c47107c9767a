"""`/dashboard`: the operators' page of how much came back, in English, rendered on the server.

Sign in once with the operator token (`POST /dashboard/login`): a session cookie for `/dashboard`
only (the codec server's mechanism, `deps.start_operator_session`). Charts are SVG drawn here
(`starter/api/charts.py`); the page needs no JavaScript and loads nothing from elsewhere. Figures
come from the recovery ledger (`dunning.reports`, as `GET /v1/reports/recovery`); open cases by
stage from Temporal's visibility, each linked to the case in the Temporal UI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote as urlquote

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from dunning import contract
from dunning.models import OUTCOMES, Stage
from dunning.money import plain_amount
from dunning.experiment_report import experiment_report, includes_simulated
from dunning.reports import GROUPINGS, figures, groups, recovery_report, recovery_time_histogram, weekly_cohorts
from starter.api.charts import bar_chart, column_chart
from starter.api.deps import (
    OPERATOR_SESSION_COOKIE,
    ExperimentsDep,
    LedgerDep,
    SettingsDep,
    TemporalGatewayDep,
    database_or_503,
    get_api_token,
    require_operator,
    same_secret,
    start_operator_session,
    typed_token,
)

log = structlog.get_logger("dunning.dashboard")

router = APIRouter(prefix="/dashboard", tags=["operators"], include_in_schema=False)
templates = Environment(loader=PackageLoader("starter.api", "templates"), autoescape=select_autoescape(["html"]))
templates.filters["money"] = lambda amount, currency: plain_amount(amount, currency) if currency else str(amount)
#: Open cases listed with a link each; the counts by stage cover all of them.
OPEN_CASES_LISTED = 25
OPEN_STAGES = [s for s in Stage if s not in OUTCOMES]


@dataclass
class OpenCase:
    workflow_id: str
    stage: str
    customer_id: str
    amount_due: int | None
    currency: str | None
    link: str


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code)


def _signed_in(request: Request, expected: Annotated[str | None, Depends(get_api_token)]) -> bool:
    """The session cookie (or a bearer token); False sends the browser to the login form."""
    try:
        require_operator(expected, request.headers.get("authorization"), request.cookies.get(OPERATOR_SESSION_COOKIE))
    except HTTPException as exc:
        if exc.status_code == 401:
            return False
        raise
    return True


@router.get("/login")
async def login_form() -> HTMLResponse:
    return _page("login.html", message=None)


@router.post("/login")
async def login(request: Request, expected: Annotated[str | None, Depends(get_api_token)]) -> Response:
    supplied = await typed_token(request)
    if not expected or not supplied or not same_secret(supplied, expected):
        log.warning("dashboard login refused")
        return _page("login.html", status_code=401, message="That is not the operator token.")
    response = RedirectResponse("/dashboard", status_code=303)
    start_operator_session(response, request, expected, path="/dashboard")
    log.info("dashboard login")
    return response


async def _open_cases(gateway: TemporalGatewayDep, ui_url: str) -> tuple[dict[str, int], list[OpenCase], str | None]:
    """Counts of open cases by stage and the newest ones, from Temporal's visibility."""
    try:
        client = await gateway.client()
        counts = await asyncio.gather(
            *(client.count_workflows(contract.cases_query(stage=s.value, open_only=True)) for s in OPEN_STAGES)
        )
        listed: list[OpenCase] = []
        async for execution in client.list_workflows(contract.cases_query(open_only=True), limit=OPEN_CASES_LISTED):
            attributes = execution.typed_search_attributes
            link = (
                f"{ui_url.rstrip('/')}/namespaces/{urlquote(client.namespace)}/workflows/"
                f"{urlquote(execution.id, safe='')}/{execution.run_id}/history"
            )
            listed.append(
                OpenCase(
                    workflow_id=execution.id,
                    stage=attributes.get(contract.DUNNING_STAGE) or "",
                    customer_id=attributes.get(contract.CUSTOMER_ID) or "",
                    amount_due=attributes.get(contract.AMOUNT_DUE),
                    currency=attributes.get(contract.CURRENCY),
                    link=link,
                )
            )
    except Exception as exc:  # the page still shows the ledger's figures
        log.warning("dashboard: Temporal visibility unavailable", error=type(exc).__name__)
        return {}, [], "Temporal is not reachable: open cases by stage are not shown."
    return {s.value: c.count for s, c in zip(OPEN_STAGES, counts, strict=True)}, listed, None


def _amount_label(currency: str) -> Callable[[float], str]:
    return lambda value: plain_amount(int(value), currency)


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


@router.get("")
async def dashboard(
    signed_in: Annotated[bool, Depends(_signed_in)],
    ledger: LedgerDep,
    gateway: TemporalGatewayDep,
    settings: SettingsDep,
    experiments: ExperimentsDep,
    since: date | None = None,
    until: date | None = None,
    include_simulated: bool = False,
) -> Response:
    if not signed_in:
        return RedirectResponse("/dashboard/login", status_code=303)
    with database_or_503():
        # Simulated cases (`dunning simulate`) only when asked: `?include_simulated=true`.
        rows = await ledger.report_rows(since, until, include_simulated=include_simulated)
        # An experiment is read over all its cases, whatever the period shown.
        every_row = await ledger.report_rows(include_simulated=include_simulated) if experiments else []
    experiment_reports = [
        experiment_report(experiment, every_row, simulated=includes_simulated(experiment, every_row)) for experiment in experiments
    ]
    report = recovery_report(rows)
    cohorts = weekly_cohorts(rows)
    currencies = sorted({c for cohort in cohorts for c in cohort.figures.recovered_amount})
    breakdowns = {by: groups(rows, by) for by in GROUPINGS}
    charts = {
        "cohorts": column_chart(
            "Recovery rate by weekly cohort (cases opened that week)",
            [(f"{c.week:%b %d}", c.figures.recovery_rate) for c in cohorts],
            top=1,
            label=_percent,
        ),
        "revenue": {
            currency: column_chart(
                f"Recovered revenue by weekly cohort, {currency.upper()}",
                [(f"{c.week:%b %d}", c.figures.recovered_amount.get(currency, 0)) for c in cohorts],
                label=_amount_label(currency),
            )
            for currency in currencies
        },
        "time": column_chart(
            "Time to recover (cases recovered)", [(label, n) for label, n in recovery_time_histogram(rows)]
        ),
        **{
            by: bar_chart(
                f"Recovery rate by {by.replace('_', ' ')}",
                [(g.key, g.recovery_rate, f"{_percent(g.recovery_rate)} of {g.cases}") for g in breakdowns[by]],
                top=1,
            )
            for by in ("trigger", "step", "decline_category")
        },
    }
    counts, open_cases, temporal_note = await _open_cases(gateway, settings.dunning_temporal_ui_url)
    return _page(
        "dashboard.html",
        report=report,
        total=figures(rows),
        cohorts=cohorts,
        charts=charts,
        breakdowns=breakdowns,
        stage_counts=counts,
        open_cases=open_cases,
        temporal_note=temporal_note,
        since=since,
        until=until,
        percent=_percent,
        experiment_reports=experiment_reports,
        include_simulated=include_simulated,
    )
