"""Whole cases over weeks of virtual time: the exact charges and messages a customer sees."""

from __future__ import annotations

import pytest

from dunning.models import CardUpdated, InvoicePaid, Stage
from tests.case_harness import CaseRunner, failure


async def test_recovers_on_the_third_retry(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", "insufficient_funds", None])
        case = await runner.open()
        status = await case.result()
        key = f"{status.case_id}/in_1"

        assert status.stage is Stage.RECOVERED
        assert case.charges() == [
            (1.0, "in_1", f"{key}/1", "declined"),
            (3.0, "in_1", f"{key}/2", "declined"),
            (5.0, "in_1", f"{key}/3", "succeeded"),
        ]
        assert await case.sent() == [
            (0.0, "email", "payment_failed"),
            (0.0, "in_app", "payment_failed"),
            (3.0, "email", "reminder"),
            (3.0, "sms", "reminder"),
            (5.0, "email", "recovered"),
        ]
        assert [m.to for m in runner.outbox.messages] == ["ada@example.com"] * 2 + ["+15555550123", "ada@example.com"]
        assert status.access.value == "active" and status.banner_template is None
        assert runner.payments.access_log == []
