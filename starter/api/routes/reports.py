"""`GET /v1/reports/recovery`, an operators' router: how much came back (docs/analytics.md).

Bearer `DUNNING_API_TOKEN`. Query: `since`, `until` (ISO dates, both included, on the case's
opening), `by` (`policy`, `arm`, `decline_category`, `trigger`, `channel`, `step`). The JSON is the
contract's (DESIGN.md §2): counts, the rate by count, amounts per currency in minor units.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException

from dunning.reports import Grouping, recovery_report
from starter.api.deps import LedgerDep, OperatorAuth, database_or_503

router = APIRouter(tags=["operators"])


@router.get("/v1/reports/recovery", summary="Recovery over the cases opened in a period")
async def recovery(
    _: OperatorAuth,
    ledger: LedgerDep,
    since: date | None = None,
    until: date | None = None,
    by: Grouping | None = None,
) -> dict[str, Any]:
    if since and until and until < since:
        raise HTTPException(422, "`until` is before `since`")
    with database_or_503():
        rows = await ledger.report_rows(since, until)
    return recovery_report(rows, by).contract_json()
