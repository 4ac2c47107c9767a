"""The worker: runs DunningWorkflow, CardExpiryWorkflow and their activities on the `dunning` task queue.

Connects with Temporal's own environment conventions (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS variables, or a profile file).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker

from activities.factory import build_activities
from activities.policy_check import load_checked_policies
from dunning.policy import PolicyError
from runtime import migrations
from runtime.codec import EncryptionConfigError
from runtime.database import DatabaseUnavailable
from runtime.logging import configure_logging
from runtime.preflight import check_open_cases_decodable
from runtime.settings import ConfigError, Settings
from runtime.temporal import TemporalUnreachable, connect, metrics_runtime
from workflows.card_expiry_workflow import CardExpiryWorkflow
from workflows.dunning_workflow import DunningWorkflow

log = structlog.get_logger("dunning.worker")

#: What stops a worker at start for the operator to fix: one line, no traceback.
STARTUP_ERRORS = (ConfigError, EncryptionConfigError, TemporalUnreachable, DatabaseUnavailable)


#: How long running activities may finish after a stop is asked (a provider call takes at most 60 s).
GRACEFUL_SHUTDOWN = timedelta(seconds=60)


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]] | None = None,
    *,
    extra_workflows: Sequence[type] = (),
    **options: Any,
) -> Worker:
    """The one worker set-up: the cases (DunningWorkflow), pre-dunning (CardExpiryWorkflow) and
    their activities on the settings' task queue.

    `activities` defaults to those of the configured backends; the benchmark passes its own (and
    a yardstick workflow) so that it measures this same worker.
    """
    return Worker(
        client,
        task_queue=settings.dunning_task_queue,
        workflows=[DunningWorkflow, CardExpiryWorkflow, *extra_workflows],
        activities=list(build_activities(settings) if activities is None else activities),
        max_cached_workflows=settings.dunning_max_cached_cases,
        # On SIGTERM (a deploy, a scale-down) running activities get this long to finish before
        # they are cancelled; a charge in flight then completes instead of being retried later.
        # Kubernetes' terminationGracePeriodSeconds (deploy/kubernetes/worker.yaml) is longer.
        **{"graceful_shutdown_timeout": GRACEFUL_SHUTDOWN, **options},
    )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    # Before connecting: a bad policy file or configuration stops us first, in one line. Cases
    # carry their pinned policy, but the folder is the same one the API opens cases with, and a
    # broken file must be found by whoever starts a process, not by a customer.
    try:
        load_checked_policies(settings.dunning_policy_dir)
    except PolicyError as err:
        raise ConfigError(str(err)) from err
    # The schema this code needs, before any activity reads consent (several workers: one migrates).
    database = await asyncio.to_thread(migrations.prepare, settings)
    activities = build_activities(settings, database)
    # The Temporal SDK's own metrics, for Prometheus (DUNNING_WORKER_METRICS_PORT; 0: none).
    client = await connect(settings, runtime=metrics_runtime(settings.dunning_worker_metrics_port))
    # Before taking a task: cases encrypted with a key we don't hold would fail every one of them.
    await check_open_cases_decodable(client, settings.dunning_task_queue)
    worker = build_worker(client, settings, activities)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        task_queue=settings.dunning_task_queue,
        metrics_port=settings.dunning_worker_metrics_port or "off",
    )
    async with worker:
        await stop.wait()
    log.info("worker stopped")


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as err:  # a variable with a value it can't take: name it, no traceback
        first = err.errors()[0]
        print(f"error: {'.'.join(map(str, first['loc'])).upper()}: {first['msg']}", file=sys.stderr)
        return 1
    configure_logging(settings.dunning_log_level, settings.dunning_log_format)
    try:
        asyncio.run(run_worker(settings))
    except STARTUP_ERRORS as err:  # the operator's to fix, not a bug: one line, no traceback
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
