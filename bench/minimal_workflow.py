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
        """`plan`: a timer firing that many seconds after the start, or None for one activity.

        Timers aim at the same moments as the case's, which plans against absolute times: slow
        activities under load don't push the whole case later, and a moment already past is
        acted on at once, without a timer (the case does the same). A past-due timer would not
        be free: the dev server fires timers on a ~1 s tick, so each would add up to a second."""
        started = workflow.now()
        for step in plan:
            if step is None:
                await workflow.execute_activity(bench_noop, start_to_close_timeout=timedelta(seconds=60))
            else:
                due = started + timedelta(seconds=step) - workflow.now()
                if due > timedelta(0):
                    await workflow.sleep(due)
        return len(plan)
