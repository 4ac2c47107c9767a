"""The card's 30-day attempt budget, per card across every case that charges it (DESIGN.md §3).

The card networks count retries per card, not per subscription: two cases charging one card (two
subscriptions, two customers even) share one budget. Before `charge_invoice` calls Stripe it
reserves the attempt here, in one transaction under a per-card lock (PostgreSQL's
`pg_advisory_xact_lock` on the fingerprint; SQLite's single write lock, taken by the
transaction's first statement, the insert): two cases charging one card at the same second can't
both take the last attempt. The reservation is keyed by the charge's idempotency key, so an
activity retry reuses it instead of spending another. A never-retry decline (Visa category 1)
blocks the card for every case.

`DatabaseCardBudget` is the store on the service's database (migration 0004); `MemoryCardBudget`
the same rules in one process (tests and the sandbox without a database).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Column, Connection, DateTime, MetaData, String, Table, delete, func, select, text, update

from dunning.declines import never_retry_card
from dunning.models import CardBudget, ChargeResult
from runtime.database import Database

WINDOW = timedelta(days=30)
#: The outcomes that were a card attempt (an outage's reservation stays, reused by the retry).
_SETTLED_NOT_ATTEMPTS = ("already_paid", "voided")

_metadata = MetaData()
card_attempts = Table(
    "card_attempts",
    _metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("fingerprint", String(255), nullable=False),
    Column("case_ref", String(255), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(32)),
    Column("decline_code", String(120)),
)
card_blocks = Table(
    "card_blocks",
    _metadata,
    Column("fingerprint", String(255), primary_key=True),
    Column("decline_code", String(120), nullable=False),
    Column("case_ref", String(255), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Reservation:
    """One charge about to be made: which card, which key, which case, under which limit."""

    fingerprint: str
    idempotency_key: str
    case_ref: str
    customer_id: str
    limit: int | None  # None: counted, never refused (cases from before the shared budget)
    payment_method_id: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    budget: CardBudget


class CardBudgetStore(Protocol):
    async def reserve(self, reservation: Reservation, now: datetime) -> Decision: ...

    async def settle(self, reservation: Reservation, result: ChargeResult, now: datetime) -> CardBudget: ...

    async def release(self, reservation: Reservation) -> None: ...


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _view(
    reservation: Reservation, attempts: list[tuple[datetime, str]], block: tuple[str, str] | None, default_limit: int
) -> CardBudget:
    """The card's budget from its attempts in the window (time, case) and its block."""
    times = sorted(_utc(at) for at, _ in attempts)
    cases: list[str] = []
    for _, case in sorted(attempts, key=lambda a: _utc(a[0])):
        if case not in cases:
            cases.append(case)
    return CardBudget(
        fingerprint=reservation.fingerprint,
        payment_method_id=reservation.payment_method_id,
        limit=reservation.limit or default_limit,
        used=len(times),
        used_by=cases,
        frees_at=times[0] + WINDOW if times else None,
        blocked_code=block[0] if block else None,
        blocked_by=block[1] if block else None,
    )


def lock_key(fingerprint: str) -> int:
    """A signed 64-bit advisory-lock key for one card."""
    return int.from_bytes(hashlib.blake2b(f"card:{fingerprint}".encode(), digest_size=8).digest(), "big", signed=True)


class DatabaseCardBudget:
    """`CardBudgetStore` on the service's database (migrated by the caller); `DatabaseUnavailable`
    while it can't be reached (the activity retries, Stripe is not called)."""

    def __init__(self, database: Database, default_limit: int = 10) -> None:
        self.database = database
        self.default_limit = default_limit

    async def reserve(self, reservation: Reservation, now: datetime) -> Decision:
        return await asyncio.to_thread(self.database.run, lambda db: self._reserve(db, reservation, now))

    async def settle(self, reservation: Reservation, result: ChargeResult, now: datetime) -> CardBudget:
        return await asyncio.to_thread(self.database.run, lambda db: self._settle(db, reservation, result, now))

    async def release(self, reservation: Reservation) -> None:
        await asyncio.to_thread(self.database.run, lambda db: self._release(db, reservation))

    # --- one transaction each ----------------------------------------------------------

    def _lock(self, db: Connection, fingerprint: str) -> None:
        if self.database.dialect == "postgresql":
            db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(fingerprint)})
        # SQLite: the insert that follows is the transaction's first statement and takes the
        # database's one write lock (waiting up to WAIT_SECONDS): every reservation is serialized.

    def _state(self, db: Connection, reservation: Reservation, now: datetime) -> CardBudget:
        rows = db.execute(
            select(card_attempts.c.at, card_attempts.c.case_ref).where(
                card_attempts.c.fingerprint == reservation.fingerprint, card_attempts.c.at > now - WINDOW
            )
        ).all()
        block = db.execute(
            select(card_blocks.c.decline_code, card_blocks.c.case_ref).where(
                card_blocks.c.fingerprint == reservation.fingerprint
            )
        ).first()
        return _view(
            reservation, [(at, case) for at, case in rows], (block[0], block[1]) if block else None, self.default_limit
        )

    def _reserve(self, db: Connection, reservation: Reservation, now: datetime) -> Decision:
        self._lock(db, reservation.fingerprint)
        insert = self.database.insert(card_attempts).values(
            idempotency_key=reservation.idempotency_key,
            fingerprint=reservation.fingerprint,
            case_ref=reservation.case_ref,
            customer_id=reservation.customer_id,
            at=now,
        )
        inserted = db.execute(insert.on_conflict_do_nothing(index_elements=[card_attempts.c.idempotency_key])).rowcount
        budget = self._state(db, reservation, now)
        if not inserted:
            return Decision(True, budget)  # an activity retry: the attempt is already reserved
        over = reservation.limit is not None and budget.used > reservation.limit
        if reservation.limit is not None and (budget.blocked_code or over):
            db.execute(delete(card_attempts).where(card_attempts.c.idempotency_key == reservation.idempotency_key))
            return Decision(False, self._state(db, reservation, now))
        return Decision(True, budget)

    def _settle(self, db: Connection, reservation: Reservation, result: ChargeResult, now: datetime) -> CardBudget:
        key = card_attempts.c.idempotency_key == reservation.idempotency_key
        if result.status in _SETTLED_NOT_ATTEMPTS:
            db.execute(delete(card_attempts).where(key))
        else:
            db.execute(update(card_attempts).where(key).values(outcome=result.status, decline_code=result.decline_code))
        if result.status == "declined" and never_retry_card(result.decline_code, result.code, result.advice_code):
            block = self.database.insert(card_blocks).values(
                fingerprint=reservation.fingerprint,
                decline_code=result.advice_code if result.advice_code == "do_not_try_again" else (result.decline_code or result.code or "declined"),
                case_ref=reservation.case_ref,
                customer_id=reservation.customer_id,
                at=now,
            )
            db.execute(block.on_conflict_do_nothing(index_elements=[card_blocks.c.fingerprint]))
        return self._state(db, reservation, now)

    def _release(self, db: Connection, reservation: Reservation) -> None:
        db.execute(delete(card_attempts).where(card_attempts.c.idempotency_key == reservation.idempotency_key))

    def count(self, fingerprint: str) -> int:
        """Every attempt ever reserved on the card (tests)."""
        query = select(func.count()).select_from(card_attempts).where(card_attempts.c.fingerprint == fingerprint)
        return int(self.database.run(lambda db: db.execute(query).scalar_one()))


@dataclass
class _Attempt:
    fingerprint: str
    case_ref: str
    at: datetime
    outcome: str | None = None


@dataclass
class MemoryCardBudget:
    """The same rules in one process: one lock for all cards is plenty here."""

    default_limit: int = 10
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    blocks: dict[str, tuple[str, str]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _state(self, reservation: Reservation, now: datetime) -> CardBudget:
        rows = [
            (a.at, a.case_ref)
            for a in self.attempts.values()
            if a.fingerprint == reservation.fingerprint and a.at > now - WINDOW
        ]
        return _view(reservation, rows, self.blocks.get(reservation.fingerprint), self.default_limit)

    async def reserve(self, reservation: Reservation, now: datetime) -> Decision:
        async with self._lock:
            if reservation.idempotency_key in self.attempts:
                return Decision(True, self._state(reservation, now))
            budget = self._state(reservation, now)
            limit = reservation.limit
            if limit is not None and (budget.blocked_code or budget.used >= limit):
                return Decision(False, budget)
            self.attempts[reservation.idempotency_key] = _Attempt(reservation.fingerprint, reservation.case_ref, now)
            return Decision(True, self._state(reservation, now))

    async def settle(self, reservation: Reservation, result: ChargeResult, now: datetime) -> CardBudget:
        async with self._lock:
            if result.status in _SETTLED_NOT_ATTEMPTS:
                self.attempts.pop(reservation.idempotency_key, None)
            elif reservation.idempotency_key in self.attempts:
                self.attempts[reservation.idempotency_key].outcome = result.status
            if result.status == "declined" and never_retry_card(result.decline_code, result.code, result.advice_code):
                code = "do_not_try_again" if result.advice_code == "do_not_try_again" else (result.decline_code or result.code or "declined")
                self.blocks.setdefault(reservation.fingerprint, (code, reservation.case_ref))
            return self._state(reservation, now)

    async def release(self, reservation: Reservation) -> None:
        async with self._lock:
            self.attempts.pop(reservation.idempotency_key, None)
