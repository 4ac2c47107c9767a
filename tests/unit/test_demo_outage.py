"""Finding 9: `dunning demo` gave up on the first UNAVAILABLE when the stack restarted under it.

The demo runs against a Temporal that answers UNAVAILABLE for a while (the dev server
restarting) and an API that answers 503 meanwhile: it waits, tells the operator, and finishes.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import httpx
import pytest
from rich.console import Console
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from starter.cli import operator as ops
from starter.cli.demo import DemoConfig, DemoRun


class RestartingTemporal:
    """`describe` answers UNAVAILABLE `down` times, then shows the case recovered."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    def get_workflow_handle(self, workflow_id: str) -> RestartingTemporal:
        return self

    async def describe(self) -> SimpleNamespace:
        self.calls += 1
        if self.calls <= self.down:
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        return SimpleNamespace(
            status=WorkflowExecutionStatus.COMPLETED,
            typed_search_attributes=TypedSearchAttributes([SearchAttributePair(contract.DUNNING_STAGE, "recovered")]),
        )


def api(restarting_for: int) -> httpx.MockTransport:
    posts = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"ok": True})
        posts["n"] += 1
        if posts["n"] <= restarting_for:
            return httpx.Response(503, json={"detail": "Temporal unavailable, retry later"})
        return httpx.Response(200, json={"received": True})

    return httpx.MockTransport(handle)


def config(**kw: object) -> DemoConfig:
    return DemoConfig(api_url="http://api.test", secret="whsec_test", customers=1, duration=60, live=False, **kw)


@pytest.mark.asyncio
async def test_the_demo_waits_for_a_restarting_stack_and_finishes() -> None:
    out = io.StringIO()
    temporal = RestartingTemporal(down=3)
    async with httpx.AsyncClient(transport=api(restarting_for=3)) as http:
        code = await DemoRun(config(), temporal, Console(file=out, width=120), http).run()  # type: ignore[arg-type]
    assert code == 0, out.getvalue()
    assert temporal.calls > 3
    assert "all of 1 cases closed" in out.getvalue()
    assert "Temporal was unavailable 1 time(s)" in out.getvalue()


@pytest.mark.asyncio
async def test_the_demo_gives_up_in_one_line_after_its_tolerance() -> None:
    out = io.StringIO()
    async with httpx.AsyncClient(transport=api(restarting_for=0)) as http:
        temporal = RestartingTemporal(down=10_000)
        run = DemoRun(config(outage_tolerance=1.5), temporal, Console(file=out), http)  # type: ignore[arg-type]
        with pytest.raises(ops.Rejected, match="unavailable for [0-9]+s .*giving up"):
            await run.run()
