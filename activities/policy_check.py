"""The policy check every process runs at start: the folder loads, and its templates exist.

`dunning.policy` checks what a policy says (durations, bounds, the ladder); whether the templates
it names exist is known only here, where the templates live. The worker (`worker.py`) and the API
(`starter.api.main.create_app`) both call `load_checked_policies`, so a bad file stops either one
at start, naming the file, the field and why, before any customer meets it.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from activities.messages import LANGUAGES, TEMPLATE_FILES, missing_templates
from dunning.experiments import Experiment, load_experiments
from dunning.policy import SHIPPED_POLICY_DIR, Policy, PolicyError, iso_duration, load_policies

log = structlog.get_logger("dunning.policies")


def template_problems(policy: Policy) -> list[str]:
    """`notify.N.template: why` (or `pre_dunning.N.template`) for each step whose template is
    missing in some language."""
    problems = []
    steps = [(f"notify.{i}", step.template) for i, step in enumerate(policy.notify)]
    steps += [(f"pre_dunning.{i}", reminder.template) for i, reminder in enumerate(policy.pre_dunning)]
    for where, template in steps:
        missing = missing_templates([template])
        if missing:
            problems.append(
                f"{where}.template: no template {template!r} in every language"
                f" ({', '.join(LANGUAGES)}; each needs {', '.join(TEMPLATE_FILES)}): missing {', '.join(missing)}"
            )
    return problems


def load_checked_policies(directory: Path | None = None) -> dict[str, Policy]:
    """Every policy of the folder, validated, with its templates checked; logs one line each."""
    directory = Path(directory or SHIPPED_POLICY_DIR)
    policies = load_policies(directory)
    for name, policy in policies.items():
        problems = template_problems(policy)
        if problems:
            raise PolicyError(f"{directory / name}.toml: {'; '.join(problems)}")
    for name, policy in policies.items():
        log.info(
            "policy loaded",
            policy=name,
            retries=len(policy.retry_after),
            ladder_steps=len(policy.ladder),
            event_steps=len(policy.notify) - len(policy.ladder),
            pre_dunning=[iso_duration(reminder.before) for reminder in policy.pre_dunning],
            grace=iso_duration(policy.grace),
            cancel_after_suspension=iso_duration(policy.cancel_after_suspension),
        )
        if not policy.retry_after:
            log.warning(
                "policy never retries the charge: it only asks the customer for a new card",
                policy=name,
                retry_after=[],
            )
    for experiment in load_experiments(directory, policies):
        log.info(
            "experiment running",
            experiment=experiment.name,
            applies_to=experiment.applies_to,
            control=experiment.control,
            arms=experiment.arms,
        )
    return policies


def load_checked_experiments(directory: Path | None, policies: dict[str, Policy]) -> list[Experiment]:
    """`experiments.toml` of the folder (none: no experiments), checked against its policies."""
    return load_experiments(Path(directory or SHIPPED_POLICY_DIR), policies)
