"""`GET /v1/reports/recovery` and `GET /v1/reports/experiments/{name}`, an operators' router: how
much came back, and which policy wins (docs/analytics.md).

Bearer `DUNNING_API_TOKEN`. Query: `since`, `until` (ISO dates, both included, on the case's
opening), `include_simulated` (`true`: count the cases of `dunning simulate` too), `by` (`policy`, `arm`, `decline_category`, `trigger`, `channel`, `step`). The JSON is the
contract's (DESIGN.md §2): counts, the rate by count, amounts per currency in minor units.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException

from dunning.experiment_report import experiment_report, includes_simulated
from dunning.reports import Grouping, recovery_report
from starter.api.deps import ExperimentsDep, LedgerDep, OperatorAuth, database_or_503

router = APIRouter(tags=["operators"])


@router.get("/v1/reports/recovery", summary="Recovery over the cases opened in a period")
async def recovery(
    _: OperatorAuth,
    ledger: LedgerDep,
    since: date | None = None,
    until: date | None = None,
    by: Grouping | None = None,
    include_simulated: bool = False,
) -> dict[str, Any]:
    """Simulated cases (`dunning simulate`) are left out unless `include_simulated=true`; then
    the answer says how many of its cases are simulated."""
    if since and until and until < since:
        raise HTTPException(422, "`until` is before `since`")
    with database_or_503():
        rows = await ledger.report_rows(since, until, include_simulated=include_simulated)
    report = recovery_report(rows, by)
    if include_simulated:
        return {**report.contract_json(), "simulated_cases": report.simulated_cases}
    return report.contract_json()


@router.get("/v1/reports/experiments/{name}", summary="Which policy wins: one experiment's arms")
async def experiment(
    _: OperatorAuth,
    ledger: LedgerDep,
    experiments: ExperimentsDep,
    name: str,
    include_simulated: bool = False,
) -> dict[str, Any]:
    """The contract's JSON (DESIGN.md §2): per arm, counts, the rate with its Wilson interval and
    the lift over the control with Newcombe's interval; the sample-ratio p-value; the verdict
    (docs/analytics.md, "Experiments"). 404 for an experiment not in `experiments.toml`."""
    found = next((e for e in experiments if e.name == name), None)
    if found is None:
        raise HTTPException(404, f"no experiment {name!r} in experiments.toml")
    with database_or_503():
        rows = await ledger.report_rows(include_simulated=include_simulated)
    report = experiment_report(found, rows, simulated=includes_simulated(found, rows))
    if include_simulated:
        return {**report.contract_json(), "simulated": report.simulated}
    return report.contract_json()
