"""Determinism: recorded case histories must replay on the current workflow code.

When this fails, a change altered the command sequence of running cases: guard the new
behaviour with `workflow.patched("...")` (see README, "Changing the workflow"), then record
fresh histories with `DUNNING_RECORD_HISTORIES=1 scripts/test tests/workflow` (README, "Changing the workflow")
and keep the old files beside them, so both code paths stay covered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.card_expiry_workflow import CardExpiryWorkflow
from workflows.dunning_workflow import DunningWorkflow

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_histories_are_committed():
    assert len(HISTORIES) >= 5


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(f"dunning-{path.stem}", path.read_text())
    replayer = Replayer(workflows=[DunningWorkflow, CardExpiryWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
