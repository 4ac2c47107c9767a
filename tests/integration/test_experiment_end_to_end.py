"""A whole experiment on the dev server: signed webhooks for 200 subscriptions, each case pinned
to its arm at the door, and the experiment's report counting what the ledger and Temporal's
visibility hold, arm by arm."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from dunning import contract
from dunning.experiments import arm_label, assign_arm, load_experiments
from dunning.policy import SHIPPED_POLICY_DIR, load_policies
from fakes import stripe_api as sf
from runtime import migrations
from runtime.ledger import DatabaseLedger
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers import eventually, new_worker

pytestmark = pytest.mark.timeout(600)

SECRET = "whsec_experiment_0123456789"
TOKEN = "experiment-operator-token"
SUBSCRIPTIONS = 200


async def test_two_hundred_subscriptions_land_in_their_arms_and_the_report_counts_them(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    name = f"e2e-{suffix}"
    policies_dir = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, policies_dir)
    (policies_dir / "experiments.toml").write_text(
        f'[[experiment]]\nname = "{name}"\napplies_to = "default"\ncontrol = "default"\n'
        "arms = { default = 45, high_value = 45, minimal = 10 }\n"
    )
    settings = Settings(
        stripe_webhook_secret=SECRET,
        dunning_api_token=TOKEN,
        dunning_task_queue=f"experiment-{suffix}",
        dunning_policy_dir=policies_dir,
        dunning_state_dir=tmp_path / "state",
    )
    app = create_app(settings, client_factory=lambda: dev_env.client)
    migrations.upgrade(app.state.database)
    ledger = DatabaseLedger(app.state.database)
    [experiment] = load_experiments(policies_dir, load_policies(policies_dir))
    subscriptions = [f"sub_{suffix}_{n:03d}" for n in range(SUBSCRIPTIONS)]
    expected = Counter(arm_label(experiment.name, assign_arm(experiment, s)) for s in subscriptions)

    async with (
        new_worker(dev_env.client, task_queue=settings.dunning_task_queue, ledger=ledger, max_concurrent_activities=50),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as api,
    ):

        async def deliver(n: int, subscription: str) -> None:
            invoice = sf.invoice(f"in_{suffix}_{n:03d}", customer=f"cus_{suffix}_{n:03d}", subscription=subscription)
            body = json.dumps(sf.event("invoice.payment_failed", invoice, event_id=f"evt_{suffix}_{n}")).encode()
            response = await api.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)})
            assert response.status_code == 200, response.text

        for start in range(0, SUBSCRIPTIONS, 20):
            await asyncio.gather(*(deliver(n, s) for n, s in enumerate(subscriptions) if start <= n < start + 20))

        # Visibility: every case carries its policy and arm, as assigned by the pure function.
        async def visible() -> Counter[str] | None:
            arms: Counter[str] = Counter()
            query = f"{contract.EXPERIMENT_ARM.name} STARTS_WITH '{name}:'"
            async for execution in dev_env.client.list_workflows(query):
                arms[execution.typed_search_attributes.get(contract.EXPERIMENT_ARM) or ""] += 1
            return arms if sum(arms.values()) == SUBSCRIPTIONS else None

        seen = await eventually(visible, timeout=120, interval=1.0, what="200 cases in visibility")
        assert seen == expected

        # The ledger: every case once, in its arm (recorded when the case first sleeps).
        async def recorded() -> Counter[str] | None:
            rows = [r.facts for r in await ledger.report_rows() if r.facts.subscription_id in set(subscriptions)]
            return Counter(r.arm or "" for r in rows) if len(rows) == SUBSCRIPTIONS else None

        in_ledger = await eventually(recorded, timeout=180, interval=2.0, what="200 cases in the ledger")
        assert in_ledger == expected

        # The report: its arms' counts are the ledger's and visibility's.
        response = await api.get(f"/v1/reports/experiments/{name}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["name"] == name and report["verdict"] == "too_early"
        by_arm = {arm["arm"]: arm["cases"] for arm in report["arms"]}
        assert by_arm == {label.split(":", 1)[1]: count for label, count in expected.items()}
        assert 0.0 <= report["sample_ratio_p"] <= 1.0

        for subscription in subscriptions:
            await dev_env.client.get_workflow_handle(contract.workflow_id(subscription)).terminate("test done")
