"""The yardstick: a workflow that does nothing but the same timers and activities as a case.

`bench/run.py` reads the timers (with their durations) and the activities, in order, from the
history of a real DunningWorkflow case and hands them to this workflow as its plan, so the two
differ only in what our code does around those commands: state, planning, payloads, search
attributes, the UI's details.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def bench_noop() -> None:
    return None


@workflow.defn(name="BenchMinimalWorkflow")
class MinimalWorkflow:
    @workflow.run
    async def run(self, plan: list[float | None]) -> int:
        """`plan`: a timer of that many seconds, or None for one activity."""
        for step in plan:
            if step is None:
                await workflow.execute_activity(bench_noop, start_to_close_timeout=timedelta(seconds=60))
            else:
                await workflow.sleep(timedelta(seconds=step))
        return len(plan)
