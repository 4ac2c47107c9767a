"""Checks a process makes before it takes work: can this worker read the cases waiting for it?

A worker started without `DUNNING_ENCRYPTION_KEYS` (or without a key that is still in use) would
poll, fail every workflow task of the cases encrypted earlier, and keep failing them while the
cases stand still. Sampling the newest open cases at start turns that into one line naming the
key id, before the worker takes any task.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client
from temporalio.service import RPCError

from dunning import contract
from runtime.codec import ENV_VAR, DecryptionError
from runtime.settings import ConfigError

log = structlog.get_logger("dunning.preflight")

#: How many of the newest open cases a starting worker reads.
SAMPLE_SIZE = 20
RPC_TIMEOUT = timedelta(seconds=5)


def open_cases_on_queue(task_queue: str) -> str:
    """The open cases a worker of `task_queue` would run."""
    return f"{contract.cases_query(open_only=True)} AND TaskQueue = {contract.quote(task_queue)}"


async def _start_input(client: Client, workflow_id: str, run_id: str | None) -> list[Payload]:
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id or ""),
            maximum_page_size=1,
        ),
        timeout=RPC_TIMEOUT,
    )
    if not response.history.events:
        return []
    return list(response.history.events[0].workflow_execution_started_event_attributes.input.payloads)


async def check_open_cases_decodable(client: Client, task_queue: str, sample: int = SAMPLE_SIZE) -> int:
    """Decode the start input of the newest `sample` open cases on `task_queue` with the client's
    codec; raise `ConfigError` naming the key id when one can't be read. Returns how many were read.

    Visibility or history errors are logged and skipped: this check must not keep a worker from
    starting when Temporal itself is the problem (the worker reports that on its own)."""
    codec = client.data_converter.payload_codec
    if codec is None or sample <= 0:
        return 0
    try:
        cases = [(wf.id, wf.run_id) async for wf in client.list_workflows(
            open_cases_on_queue(task_queue), limit=sample, rpc_timeout=RPC_TIMEOUT
        )]
    except RPCError as err:
        log.warning("could not list open cases to check their encryption", error=err.message)
        return 0
    if not cases:
        return 0

    async def check(workflow_id: str, run_id: str | None) -> tuple[str, DecryptionError] | None:
        try:
            payloads = await _start_input(client, workflow_id, run_id)
            await codec.decode(payloads)
        except DecryptionError as err:
            return workflow_id, err
        except RPCError as err:
            log.warning(
                "could not read a case's start to check its encryption", workflow_id=workflow_id, error=err.message
            )
        return None

    failures = [f for f in await asyncio.gather(*(check(w, r) for w, r in cases)) if f]
    if failures:
        key_ids = sorted({err.key_id or "?" for _, err in failures})
        workflow_id, first = failures[0]
        keys = ", ".join(repr(k) for k in key_ids)
        raise ConfigError(
            f"{len(failures)} of the {len(cases)} newest open cases on task queue {task_queue!r} "
            f"(e.g. {workflow_id}) are encrypted with key {keys}, which this worker cannot read: {first}. "
            f"Start the worker with the same {ENV_VAR} as the API"
        )
    log.info("open cases readable", checked=len(cases), task_queue=task_queue)
    return len(cases)
