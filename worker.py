"""The worker: runs DunningWorkflow and its activities on the `dunning` task queue.

Connects with Temporal's own environment conventions (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS variables, or a profile file).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
from temporalio.worker import Worker

from activities.factory import build_activities
from runtime.logging import configure_logging
from runtime.settings import Settings
from runtime.temporal import connect
from workflows.dunning_workflow import DunningWorkflow

log = structlog.get_logger("dunning.worker")


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    client = await connect(settings)
    worker = Worker(
        client,
        task_queue=settings.dunning_task_queue,
        workflows=[DunningWorkflow],
        activities=build_activities(settings),
        max_cached_workflows=settings.dunning_max_cached_cases,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started", task_queue=settings.dunning_task_queue)
    async with worker:
        await stop.wait()
    log.info("worker stopped")


def main() -> int:
    settings = Settings()
    configure_logging(settings.dunning_log_level, settings.dunning_log_format)
    asyncio.run(run_worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
