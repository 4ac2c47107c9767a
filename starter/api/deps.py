"""What every router of the HTTP API shares: settings, policies and one Temporal client.

Routers read them from the app (`request.app.state`), through the dependencies below, so
that tests inject a client with `create_app(client_factory=...)` and nothing connects at
import time. Import from here, not from `starter.api.main`, to avoid an import cycle.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import Request
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from runtime.settings import Settings
from dunning.policy import Policy

ClientFactory = Callable[[], Awaitable[Client] | Client]

#: How long one Temporal call may take before the API answers 503 (Stripe waits ~20 s at most).
RPC_TIMEOUT = timedelta(seconds=5)
#: What a 503 tells the caller to wait before retrying.
RETRY_AFTER_SECONDS = 30

#: Temporal answers meaning "not now": the caller should retry later.
TRANSIENT_RPC_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.UNKNOWN,
    }
)


class TemporalUnavailable(Exception):
    """Temporal could not be reached: answer 503 so the sender retries."""


def is_transient(exc: BaseException) -> bool:
    """True for errors meaning "Temporal is not reachable right now"."""
    if isinstance(exc, RPCError):
        return exc.status in TRANSIENT_RPC_STATUSES
    if isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect"):
        return True  # a lazy client that cannot (re)connect
    return isinstance(exc, (TemporalUnavailable, ConnectionError, TimeoutError, asyncio.TimeoutError))


class TemporalGateway:
    """Connects on first use and keeps the client; a failed connect is retried on the next request,
    so the API starts (and answers 503) while Temporal is still coming up."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    result = self._factory()
                    self._client = await result if inspect.isawaitable(result) else result
                except Exception as exc:
                    raise TemporalUnavailable(f"cannot connect to Temporal: {type(exc).__name__}") from exc
        return self._client


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_rpc_timeout(request: Request) -> timedelta:
    return getattr(request.app.state, "rpc_timeout", RPC_TIMEOUT)


def get_policies(request: Request) -> dict[str, Policy]:
    return request.app.state.policies


async def get_temporal_client(request: Request) -> Client:
    """FastAPI dependency; raises `TemporalUnavailable` (→ 503 with Retry-After) when unreachable."""
    gateway: TemporalGateway = request.app.state.temporal
    return await gateway.client()
