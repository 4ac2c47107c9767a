"""An experiment's arm is pinned into the case: published as `DunningPolicy`/`ExperimentArm`,
kept across continue-as-new and into the next case a late failure opens, written to the ledger."""

from __future__ import annotations

import json

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client

from dunning import contract
from dunning.experiments import Experiment, assign_arm, choose
from dunning.models import CaseState, Stage
from tests.helpers.case_harness import CaseRunner, failure, make_policy


async def search_attributes(client: Client, workflow_id: str) -> dict[str, object]:
    """As tests/workflow/test_what_operators_see.py reads them, leaving out the ones unset to an
    empty payload (an attribute unset after the continue-as-new)."""
    described = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id))
    )
    fields = described.workflow_execution_info.search_attributes.indexed_fields
    return {name: json.loads(p.data) for name, p in fields.items() if p.data not in (b"null", b"")}

GENTLE = make_policy(name="gentle")


async def test_the_arm_is_published_and_kept_across_continue_as_new(time_env):
    experiment = Experiment(name="gentle-q1", applies_to="default", control="default", arms={"default": 1, "gentle": 1})
    subscription = next(f"sub_{n}" for n in range(100) if assign_arm(experiment, f"sub_{n}") == "gentle")
    choice = choose({"default": make_policy(), "gentle": GENTLE}, [experiment], None, subscription)
    assert (choice.policy.name, choice.experiment, choice.arm) == ("gentle", "gentle-q1", "gentle")
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 4)
        case = await runner.open(
            policy=choice.policy,
            subscription_id=subscription,
            experiment=choice.experiment,
            arm=choice.arm,
            history_event_limit=40,
            record_as="experiment_arm_across_continue_as_new",
        )
        await case.idle()
        attributes = await search_attributes(time_env.client, case.handle.id)
        assert attributes[contract.DUNNING_POLICY.name] == "gentle"
        assert attributes[contract.EXPERIMENT_ARM.name] == "gentle-q1:gentle"
        status = await case.result()
        assert status.stage is Stage.RECOVERED and status.policy == "gentle"
        first_run = time_env.client.get_workflow_handle(case.handle.id, run_id=case.handle.result_run_id)
        assert (await first_run.fetch_history()).events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
        # The last run (after continue-as-new) still carries and publishes the arm.
        attributes = await search_attributes(time_env.client, case.handle.id)
        assert attributes[contract.EXPERIMENT_ARM.name] == "gentle-q1:gentle"
        assert attributes[contract.DUNNING_POLICY.name] == "gentle"
        last_input = (await case.handle.fetch_history()).events[0].workflow_execution_started_event_attributes.input
        assert b'"arm":"gentle"' in last_input.payloads[0].data.replace(b" ", b"")


async def test_a_case_outside_experiments_publishes_its_policy_and_no_arm(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open()
        await case.idle()
        attributes = await search_attributes(time_env.client, case.handle.id)
        assert attributes[contract.DUNNING_POLICY.name] == "default"
        assert contract.EXPERIMENT_ARM.name not in attributes


def test_the_pinned_arm_goes_to_the_ledger_and_survives_the_round_trip():
    from datetime import UTC, datetime

    from dunning.case import Case

    case = Case.open("dunning-sub_1", "sub_1", "cus_1", GENTLE, datetime(2025, 1, 6, tzinfo=UTC), experiment="gentle-q1", arm="gentle")
    case.payment_failed(failure(), datetime(2025, 1, 6, tzinfo=UTC))
    record = case.ledger_record()
    assert record is not None and record.facts.arm == "gentle-q1:gentle" and record.facts.policy == "gentle"
    carried = CaseState.model_validate_json(case.state.model_dump_json())
    assert (carried.experiment, carried.arm) == ("gentle-q1", "gentle")
    # Outside experiments the payload is the same as before experiments existed.
    plain = Case.open("dunning-sub_2", "sub_2", "cus_1", GENTLE, datetime(2025, 1, 6, tzinfo=UTC))
    assert "experiment" not in plain.state.model_dump() and "arm" not in plain.state.model_dump()
