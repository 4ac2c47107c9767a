"""`dunning report`, `dunning customer export|forget` and `dunning db prune` over a SQLite ledger."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime.ledger import DatabaseLedger
from starter.cli.app import app
from tests.helpers import ledger_checks
from tests.helpers.database import sqlite_database


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatabaseLedger:
    database = sqlite_database(tmp_path)
    monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{tmp_path / 'dunning.sqlite3'}")
    monkeypatch.setenv("DUNNING_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DUNNING_FEEDBACK_RETENTION_DAYS", raising=False)
    ledger = DatabaseLedger(database)
    record = ledger_checks.recovered("c1", "cus_1")
    record.facts.feedback_comment = "old comment"
    asyncio.run(ledger.record(record))
    asyncio.run(ledger.record(ledger_checks.CaseRecord(facts=ledger_checks.facts("c2", "cus_2", amount=2500, currency="usd"))))
    return ledger


def test_report_as_table_json_and_csv(ledger_env: DatabaseLedger) -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["report", "--by", "trigger"], env={"COLUMNS": "120"})
    assert table.exit_code == 0, table.output
    assert "Cases opened" in table.output and "card_update" in table.output and "50.0%" in table.output
    full = json.loads(runner.invoke(app, ["report", "--json"]).output)
    assert (full["cases"], full["recovered"], full["recovered_amount"]) == (2, 1, {"eur": 4900})
    assert full["amount_recovery_rate"] == {"eur": 1.0, "usd": 0.0} and full["open_cases"] == 1
    rows = list(csv.reader(io.StringIO(runner.invoke(app, ["report", "--csv", "--by", "channel"]).output)))
    assert rows[0] == ["key", "cases", "closed", "recovered", "recovery_rate", "currency", "recovered_amount"]
    assert ["all", "2", "1", "1", "0.5", "eur", "4900"] in rows
    assert runner.invoke(app, ["report", "--by", "colour"]).exit_code == 2
    assert runner.invoke(app, ["report", "--since", "yesterday"]).exit_code == 2


def test_customer_export_forget_and_prune(ledger_env: DatabaseLedger) -> None:
    runner = CliRunner()
    exported = json.loads(runner.invoke(app, ["customer", "export", "cus_1"]).output)
    assert exported["tables"]["ledger_cases"][0]["feedback_comment"] == "old comment"
    pruned = runner.invoke(app, ["db", "prune", "--feedback-days", "0"])
    assert pruned.exit_code == 0 and "1 feedback comment(s)" in pruned.output
    assert runner.invoke(app, ["db", "prune"]).exit_code == 1  # no retention configured
    gone = runner.invoke(app, ["customer", "forget", "cus_1", "--yes"])
    assert gone.exit_code == 0 and "1 ledger_cases" in gone.output
    again = json.loads(runner.invoke(app, ["customer", "export", "cus_1"]).output)
    assert all(rows == [] for rows in again["tables"].values())


def test_experiments_report_as_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from dunning.policy import SHIPPED_POLICY_DIR

    database = sqlite_database(tmp_path)
    monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{tmp_path / 'dunning.sqlite3'}")
    monkeypatch.setenv("DUNNING_STATE_DIR", str(tmp_path))
    policies = tmp_path / "policies"
    policies.mkdir()
    for name in ("default", "minimal"):
        shutil.copy(SHIPPED_POLICY_DIR / f"{name}.toml", policies)
    (policies / "experiments.toml").write_text(
        '[[experiment]]\nname = "holdout-q1"\napplies_to = "default"\ncontrol = "default"\narms = { default = 9, minimal = 1 }\n'
    )
    monkeypatch.setenv("DUNNING_POLICY_DIR", str(policies))
    ledger = DatabaseLedger(database)
    record = ledger_checks.recovered("c1", "cus_1")
    record.facts.arm = "holdout-q1:default"
    asyncio.run(ledger.record(record))
    held_out = ledger_checks.facts("c2", "cus_2", arm="holdout-q1:minimal", policy="minimal")
    asyncio.run(ledger.record(ledger_checks.CaseRecord(facts=held_out)))
    runner = CliRunner()
    table = runner.invoke(app, ["experiments", "report", "holdout-q1"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "holdout-q1" in table.output and "minimal" in table.output and "too_early" in table.output
    full = json.loads(runner.invoke(app, ["experiments", "report", "holdout-q1", "--json"]).output)
    assert [a["arm"] for a in full["arms"]] == ["default", "minimal"] and full["planned_per_arm"] > 0
    assert runner.invoke(app, ["experiments", "report", "nope"]).exit_code != 0
    listed = runner.invoke(app, ["experiments", "list"])
    assert "holdout-q1 on default" in listed.output
