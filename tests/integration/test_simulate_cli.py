"""`dunning simulate` and `dunning demo --simulated-month` end to end, as an operator runs them.

The command starts its own time-skipping server (the temporal-test-server binary), so these live
here and not in tests/workflow. The database is a SQLite file in the test's folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from runtime.database import Database
from runtime.ledger import DatabaseLedger

POPULATION = """
cases = 40
open_over_days = 2
[declines]
insufficient_funds = 5
expired_card = 2
authentication_required = 1
[[amounts]]
amount = 4900
currency = "eur"
[[amounts]]
amount = 1900
currency = "usd"
[timezones]
"Europe/Berlin" = 1
"America/New_York" = 1
"""


def dunning(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DUNNING_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    for name in ("DUNNING_DATABASE_URL", "DUNNING_POLICY_DIR"):
        env.pop(name, None)
    dunning_script = Path(sys.executable).parent / "dunning"
    return subprocess.run([str(dunning_script), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_simulate_prints_the_simulated_report_and_the_rate_and_writes_the_ledger(tmp_path: Path) -> None:
    population = tmp_path / "population.toml"
    population.write_text(POPULATION)
    done = dunning(tmp_path, "simulate", str(population), "--cases", "30", "--seed", "4")
    assert done.returncode == 0, done.stderr
    assert "SIMULATED" in done.stdout and "cases per minute" in done.stdout
    assert re.search(r"Cases opened\s+30\b", done.stdout)

    as_json = dunning(tmp_path, "simulate", str(population), "--cases", "20", "--seed", "4", "--json", "--no-ledger")
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)  # nothing but the JSON on stdout
    assert answer["simulated"] is True and answer["report"]["cases"] == 20
    assert answer["rate"]["cases_per_minute"] > 0 and answer["rate"]["written_to_database"] is False

    # Only the first run wrote the service's database (the second had --no-ledger); reports show
    # simulated cases only when asked.
    database = Database(f"sqlite:///{tmp_path / 'state' / 'dunning.sqlite3'}")
    rows = asyncio.run(DatabaseLedger(database).report_rows(include_simulated=True))
    database.dispose()
    assert len(rows) == 30 and all(r.simulated for r in rows)
    plain = dunning(tmp_path, "report", "--json")
    assert plain.returncode == 0 and json.loads(plain.stdout)["cases"] == 0
    asked = dunning(tmp_path, "report", "--json", "--include-simulated")
    assert json.loads(asked.stdout)["cases"] == 30 and json.loads(asked.stdout)["simulated_cases"] == 30


def test_a_bad_population_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    population = tmp_path / "bad.toml"
    population.write_text(POPULATION.replace("insufficient_funds = 5", "insufficient_fund = 5"))
    done = dunning(tmp_path, "simulate", str(population), timeout=60)
    assert done.returncode == 1
    assert "declines: 'insufficient_fund': not a decline code" in done.stderr and "Traceback" not in done.stderr
