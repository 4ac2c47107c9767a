"""`record_case`: the case's facts into the recovery ledger, with the store injected.

Tests swap the store (a `MemoryLedger`, a SQLite or PostgreSQL `DatabaseLedger`), never the
activity. The write is an upsert keyed by the case and each milestone, so a retried or replayed
activity, or two workers running it, write every fact once. A database outage is retryable: the
case never waits for it (the workflow starts the activity without awaiting it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from dunning import contract
from dunning.ledger import CaseRecord
from runtime.database import DatabaseUnavailable
from runtime.ledger import Ledger


class LedgerActivities:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @activity.defn(name=contract.RECORD_CASE.name)
    async def record_case(self, record: CaseRecord) -> None:
        try:
            await self.ledger.record(record)
        except DatabaseUnavailable as exc:
            raise ApplicationError(str(exc), type="DatabaseUnavailable") from exc

    def activities(self) -> list[Callable[..., Any]]:
        return [self.record_case]
