"""The card budget's store, checked the same way on SQLite and PostgreSQL: real concurrency (many
threads, each with its own connection, reserving on one card at the same moment), the
idempotency key reused by an activity retry, a never-retry decline blocking the card for every
case, and nothing counted for a charge that never reached the card."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from dunning.models import ChargeResult
from runtime.card_budget import DatabaseCardBudget, Reservation
from runtime.database import Database

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _reservation(key: str, case: str, limit: int | None = 10, fingerprint: str = "fp_shared") -> Reservation:
    return Reservation(fingerprint=fingerprint, idempotency_key=key, case_ref=case, customer_id=f"cus_{case}", limit=limit)


def check_concurrent_reservations_never_exceed_the_limit(database: Database, limit: int = 5, threads: int = 16) -> None:
    """`threads` charges from two cases (two customers) on one card, released at the same instant:
    exactly `limit` get the attempt, the others are refused, the database holds `limit` rows."""
    store = DatabaseCardBudget(database)
    barrier = threading.Barrier(threads)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def charge(index: int) -> None:
        case = "dunning-sub_a" if index % 2 else "dunning-sub_b"
        reservation = _reservation(f"{case}@x/in_{index}/1", case, limit)
        barrier.wait()
        decision = asyncio.run(store.reserve(reservation, T0 + timedelta(seconds=index % 3)))
        with lock:
            outcomes.append(decision.allowed)

    workers = [threading.Thread(target=charge, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert outcomes.count(True) == limit, outcomes
    assert store.count("fp_shared") == limit
    # 30 days after the first attempts the window frees them again.
    later = asyncio.run(store.reserve(_reservation("late/1", "dunning-sub_c", limit), T0 + timedelta(days=30, seconds=5)))
    assert later.allowed and later.budget.used == 1


def check_retry_reuses_and_blocks_spread(database: Database) -> None:
    store = DatabaseCardBudget(database)

    async def scenario() -> None:
        first = _reservation("dunning-sub_a@x/in_1/1", "dunning-sub_a", limit=2)
        assert (await store.reserve(first, T0)).allowed
        # An activity retry (same key) reuses its reservation, even when the card is full.
        second = _reservation("dunning-sub_b@x/in_2/1", "dunning-sub_b", limit=2)
        assert (await store.reserve(second, T0 + timedelta(minutes=1))).allowed
        again = await store.reserve(first, T0 + timedelta(minutes=2))
        assert again.allowed and again.budget.used == 2 and again.budget.used_by == ["dunning-sub_a", "dunning-sub_b"]
        refused = await store.reserve(_reservation("dunning-sub_c@x/in_3/1", "dunning-sub_c", limit=2), T0)
        assert not refused.allowed and refused.budget.left == 0
        # An invoice found paid before the card was charged gives the attempt back.
        await store.settle(second, ChargeResult(invoice_id="in_2", status="already_paid"), T0)
        assert (await store.reserve(_reservation("dunning-sub_c@x/in_3/1", "dunning-sub_c", limit=2), T0)).allowed
        # A stolen card (Visa category 1) stops every case on that card, whatever its budget.
        other = _reservation("dunning-sub_d@x/in_4/1", "dunning-sub_d", fingerprint="fp_stolen")
        assert (await store.reserve(other, T0)).allowed
        stolen = ChargeResult(invoice_id="in_4", status="declined", code="card_declined", decline_code="stolen_card")
        budget = await store.settle(other, stolen, T0)
        assert budget.blocked_code == "stolen_card" and budget.blocked_by == "dunning-sub_d"
        blocked = await store.reserve(_reservation("dunning-sub_e@x/in_5/1", "dunning-sub_e", fingerprint="fp_stolen"), T0)
        assert not blocked.allowed and blocked.budget.blocked_code == "stolen_card"
        # A soft decline blocks nothing.
        soft = _reservation("dunning-sub_f@x/in_6/1", "dunning-sub_f", fingerprint="fp_soft")
        await store.reserve(soft, T0)
        insufficient = ChargeResult(invoice_id="in_6", status="declined", decline_code="insufficient_funds")
        assert (await store.settle(soft, insufficient, T0)).blocked_code is None

    asyncio.run(scenario())
