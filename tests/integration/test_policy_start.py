"""The worker checks the policy folder at every start, as the API does: a bad file stops it in one line.

It used to start without looking, so a broken file was discovered by customers. Before connecting
to Temporal (unreachable here): the file is what the operator must fix.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.policy_files import LADDER, policy_text
from tests.helpers.workers import TEST_LINK_KEYS

ROOT = Path(__file__).resolve().parents[2]


async def start_worker(command: list[str], policy_dir: Path, state_dir: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "SENDGRID_", "TWILIO_", "STRIPE_"))}
    env |= {
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
        "DUNNING_STATE_DIR": str(state_dir),
        "DUNNING_POLICY_DIR": str(policy_dir),
        "DUNNING_LINK_KEYS": TEST_LINK_KEYS,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode()


@pytest.mark.parametrize("command", [["-m", "starter.cli.app", "worker"], ["worker.py"]], ids=["dunning", "python"])
@pytest.mark.parametrize(
    ("text", "why"),
    [
        (policy_text(grace="14"), 'grace: must be an ISO 8601 duration string such as "P14D", not 14'),
        (policy_text(grace='"P999999999D"'), 'grace: must be at most P365D (a year), not "P999999999D"'),
        (policy_text(ladder=LADDER.replace('"final_notice"', '"final_notise"')), "notify.1.template: no template"),
        (policy_text(ladder=""), "notify: no step with `at` falls due within grace"),
    ],
    ids=["bare-number", "out-of-range", "unknown-template", "no-ladder"],
)
async def test_a_bad_policy_stops_the_worker_with_one_line(
    command: list[str], text: str, why: str, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.toml").write_text(text)
    code, err = await start_worker(command, policies, tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert len(errors) == 1 and errors[0].startswith(f"error: {policies / 'default.toml'}: "), err
    assert why in errors[0], err
    assert "Traceback" not in err
