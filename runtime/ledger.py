"""The recovery ledger in the service's database: what each case recorded at its milestones.

Two tables (migration 0003): `ledger_cases`, one row per case with its latest facts (a record
overwrites it only when it is newer: `seq`), and `ledger_events`, one row per case and milestone,
written once (`ON CONFLICT DO NOTHING`). So the `record_case` activity can be retried, replayed or
run twice by two workers and every fact lands once. The reports, `GET /metrics` and the
dashboard read it back; `customer_data.py` exports and forgets a customer's rows.

`DatabaseLedger` raises `DatabaseUnavailable` while the database is down (the activity retries,
the API answers 503). `MemoryLedger` is the same store in one process's memory (tests, bench).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    BigInteger,
    Column,
    Connection,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    update,
)

from dunning.ledger import SIMULATED_PREFIX, CaseFacts, CaseRecord, LedgerEvent, is_simulated
from dunning.models import Stage
from dunning.reports import ReportRow
from runtime.database import Database
from runtime.links import customer_links

_metadata = MetaData()
ledger_cases = Table(
    "ledger_cases",
    _metadata,
    Column("case_id", String(255), primary_key=True),
    Column("workflow_id", String(255), nullable=False),
    Column("subscription_id", String(255), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("policy", String(120), nullable=False),
    Column("arm", String(120)),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("first_failed_at", DateTime(timezone=True)),
    Column("currency", String(3)),
    Column("amount", BigInteger, nullable=False),
    Column("recovered_amount", BigInteger, nullable=False),
    Column("decline_category", String(32)),
    Column("decline_code", String(120)),
    Column("stage", String(32), nullable=False),
    Column("outcome", String(32)),
    Column("closed_at", DateTime(timezone=True)),
    Column("trigger", String(32)),
    Column("trigger_attempt", Integer),
    Column("hours_to_recover", Float),
    Column("last_template", String(120)),
    Column("last_channel", String(16)),
    Column("last_step", String(120)),
    Column("charge_attempts", Integer, nullable=False),
    Column("messages_sent", Integer, nullable=False),
    Column("customer_extensions", Integer, nullable=False),
    Column("feedback_reason", String(32)),
    Column("feedback_comment", Text),
    Column("seq", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
ledger_events = Table(
    "ledger_events",
    _metadata,
    Column("case_id", String(255), primary_key=True),
    Column("milestone", String(255), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", String(64)),
    Column("channel", String(16)),
    Column("template", String(120)),
    Column("step", String(120)),
    Column("invoice_id", String(255)),
    Column("attempt", Integer),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    Column("decline_code", String(120)),
    Column("trigger", String(255)),
    Column("detail", Text),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
_FACT_COLUMNS = tuple(CaseFacts.model_fields)
_EVENT_COLUMNS = tuple(LedgerEvent.model_fields)


@dataclass
class LedgerTotals:
    """The business counters of `GET /metrics`, over every case the ledger holds."""

    opened: int = 0
    closed: dict[str, int] = field(default_factory=dict)  # outcome → cases
    recovered_amount: dict[str, int] = field(default_factory=dict)  # currency → minor units
    charge_attempts: dict[str, int] = field(default_factory=dict)  # result → charges
    messages: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, status) → messages


class Ledger(Protocol):
    """What the `record_case` activity and the readers need of a ledger."""

    async def record(self, record: CaseRecord) -> None: ...

    async def report_rows(
        self, since: date | None = None, until: date | None = None, *, include_simulated: bool = False
    ) -> list[ReportRow]: ...

    async def totals(self, *, include_simulated: bool = False) -> LedgerTotals: ...


def opened_between(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """`since` and `until` are days (UTC), both included: [since 00:00, until+1 00:00)."""
    start = datetime.combine(since, datetime.min.time(), UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC) if until else None
    return start, end


class DatabaseLedger:
    """The ledger on the service's database (migrated by the caller)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, record: CaseRecord) -> None:
        await asyncio.to_thread(self.database.run, lambda db: self._record(db, record))

    def _record(self, db: Connection, record: CaseRecord) -> None:
        now = datetime.now(UTC)
        facts = {**record.facts.model_dump(), "updated_at": now}
        insert = self.database.insert(ledger_cases).values(facts)
        db.execute(
            insert.on_conflict_do_update(
                index_elements=[ledger_cases.c.case_id],
                set_={c: insert.excluded[c] for c in (*_FACT_COLUMNS, "updated_at") if c != "case_id"},
                where=ledger_cases.c.seq <= insert.excluded.seq,
            )
        )
        if record.events:
            rows = [
                {**event.model_dump(), "case_id": record.facts.case_id, "customer_id": record.facts.customer_id, "recorded_at": now}
                for event in record.events
            ]
            db.execute(self.database.insert(ledger_events).values(rows).on_conflict_do_nothing())

    async def report_rows(
        self, since: date | None = None, until: date | None = None, *, include_simulated: bool = False
    ) -> list[ReportRow]:
        """The cases opened in the period; simulated ones (`sim_…`, `dunning simulate`) only when asked."""
        return await asyncio.to_thread(self.database.run, lambda db: self._report_rows(db, since, until, include_simulated))

    def _report_rows(self, db: Connection, since: date | None, until: date | None, include_simulated: bool) -> list[ReportRow]:
        clicks = (
            select(customer_links.c.case_id, func.min(customer_links.c.update_clicked_at).label("clicked"))
            .group_by(customer_links.c.case_id)
            .subquery()
        )
        query = select(ledger_cases, clicks.c.clicked).join(clicks, clicks.c.case_id == ledger_cases.c.case_id, isouter=True)
        start, end = opened_between(since, until)
        if not include_simulated:
            query = query.where(_not_simulated())
        if start:
            query = query.where(ledger_cases.c.opened_at >= start)
        if end:
            query = query.where(ledger_cases.c.opened_at < end)
        rows = db.execute(query.order_by(ledger_cases.c.opened_at)).mappings().all()
        return [
            ReportRow(
                facts=CaseFacts.model_validate({c: _utc(row[c]) for c in _FACT_COLUMNS}),
                update_clicked_at=_utc(row["clicked"]),
            )
            for row in rows
        ]

    async def events(self, case_id: str) -> list[LedgerEvent]:
        """A case's milestones, in the order they happened."""
        query = select(ledger_events).where(ledger_events.c.case_id == case_id).order_by(ledger_events.c.at)
        rows = await asyncio.to_thread(self.database.run, lambda db: db.execute(query).mappings().all())
        return [LedgerEvent.model_validate({c: _utc(row[c]) for c in _EVENT_COLUMNS}) for row in rows]

    async def totals(self, *, include_simulated: bool = False) -> LedgerTotals:
        return await asyncio.to_thread(self.database.run, lambda db: totals_of(db, include_simulated=include_simulated))

    async def outcome(self, case_id: str) -> tuple[str, datetime] | None:
        """How and when a closed case ended, as the ledger keeps it after Temporal forgot the case
        (the customer page's last source); None while open or unknown."""
        query = select(ledger_cases.c.outcome, ledger_cases.c.closed_at).where(ledger_cases.c.case_id == case_id)
        row = await asyncio.to_thread(self.database.run, lambda db: db.execute(query).first())
        if row is None or row[0] is None or row[1] is None:
            return None
        return str(row[0]), _utc(row[1])

    async def recovered(self, case_ids: list[str]) -> dict[str, tuple[int, str | None]]:
        """Recovered amount and currency of each of these cases the ledger knows as recovered."""
        if not case_ids:
            return {}
        query = select(ledger_cases.c.workflow_id, ledger_cases.c.recovered_amount, ledger_cases.c.currency).where(
            ledger_cases.c.workflow_id.in_(case_ids), ledger_cases.c.outcome == Stage.RECOVERED.value
        )
        rows = await asyncio.to_thread(self.database.run, lambda db: db.execute(query.order_by(ledger_cases.c.opened_at)).all())
        return {workflow_id: (amount, currency) for workflow_id, amount, currency in rows}

    def prune_feedback_comments(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Blanks the customers' free-text comments of cases closed more than `older_than` ago (the
        reason stays: it is one of six words). Returns how many were blanked."""
        cutoff = (now or datetime.now(UTC)) - older_than

        def prune(db: Connection) -> int:
            result = db.execute(
                update(ledger_cases)
                .where(ledger_cases.c.feedback_comment.is_not(None), ledger_cases.c.closed_at < cutoff)
                .values(feedback_comment=None)
            )
            return int(result.rowcount or 0)

        return self.database.run(prune)


def _not_simulated() -> ColumnElement[bool]:
    """Real cases only: `sim_` is a literal prefix (its `_` escaped, else LIKE reads any character)."""
    escaped = SIMULATED_PREFIX.replace("_", "\\_")
    return ledger_cases.c.subscription_id.not_like(f"{escaped}%", escape="\\")


def totals_of(db: Connection, *, include_simulated: bool = False) -> LedgerTotals:
    c, e = ledger_cases.c, ledger_events.c
    real = [] if include_simulated else [_not_simulated()]
    # Events carry no subscription: they count when their case does.
    real_events = [] if include_simulated else [e.case_id.in_(select(c.case_id).where(*real))]
    return LedgerTotals(
        opened=int(db.scalar(select(func.count()).select_from(ledger_cases).where(*real)) or 0),
        closed={
            o: n for o, n in db.execute(select(c.outcome, func.count()).where(c.outcome.is_not(None), *real).group_by(c.outcome))
        },
        recovered_amount={
            cur: int(total)
            for cur, total in db.execute(
                select(c.currency, func.sum(c.recovered_amount))
                .where(c.outcome == Stage.RECOVERED.value, c.currency.is_not(None), *real)
                .group_by(c.currency)
            )
        },
        charge_attempts={
            s: n for s, n in db.execute(select(e.status, func.count()).where(e.kind == "charge", *real_events).group_by(e.status))
        },
        messages={
            (ch, st): n
            for ch, st, n in db.execute(
                select(e.channel, e.status, func.count()).where(e.kind == "message", *real_events).group_by(e.channel, e.status)
            )
        },
    )


def _utc(value: Any) -> Any:
    """SQLite hands back naive datetimes; everything here is written in UTC."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


class MemoryLedger:
    """The ledger in one process's memory, with the database's semantics (tests, bench)."""

    def __init__(self) -> None:
        self.cases: dict[str, CaseFacts] = {}
        self.events: dict[tuple[str, str], LedgerEvent] = {}
        self.writes = 0

    async def record(self, record: CaseRecord) -> None:
        self.writes += 1
        facts = record.facts
        known = self.cases.get(facts.case_id)
        if known is None or known.seq <= facts.seq:
            self.cases[facts.case_id] = facts
        for event in record.events:
            self.events.setdefault((facts.case_id, event.milestone), event)

    async def report_rows(
        self, since: date | None = None, until: date | None = None, *, include_simulated: bool = False
    ) -> list[ReportRow]:
        start, end = opened_between(since, until)
        return [
            ReportRow(facts)
            for facts in sorted(self.cases.values(), key=lambda f: f.opened_at)
            if (start is None or facts.opened_at >= start)
            and (end is None or facts.opened_at < end)
            and (include_simulated or not is_simulated(facts.subscription_id))
        ]

    async def totals(self, *, include_simulated: bool = False) -> LedgerTotals:
        cases = [f for f in self.cases.values() if include_simulated or not is_simulated(f.subscription_id)]
        counted = {f.case_id for f in cases}
        events = [e for (case_id, _), e in self.events.items() if case_id in counted]
        recovered: Counter[str] = Counter()
        for f in cases:
            if f.outcome == Stage.RECOVERED.value and f.currency:
                recovered[f.currency] += f.recovered_amount
        return LedgerTotals(
            opened=len(cases),
            closed=dict(Counter(f.outcome for f in cases if f.outcome)),
            recovered_amount=dict(recovered),
            charge_attempts=dict(Counter(e.status or "" for e in events if e.kind == "charge")),
            messages=dict(Counter((e.channel or "", e.status or "") for e in events if e.kind == "message")),
        )
