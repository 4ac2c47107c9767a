"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

No engine runs here, so the file is parsed (with YAML merge keys resolved, as Compose does)
and checked for what production needs: every service, health checks, the contract's
variables, and a search-attribute registration in step with dunning/contract.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dunning import contract

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

CONTRACT_VARIABLES = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "SENDGRID_API_KEY",
    "SENDGRID_API_HOST",
    "DUNNING_EMAIL_FROM",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_API_BASE",
    "DUNNING_POLICY_DIR",
    "DUNNING_API_TOKEN",
    "DUNNING_PUBLIC_URL",
    "DUNNING_LINK_KEYS",
    "DUNNING_PAYMENTS",
    "DUNNING_EMAIL",
    "DUNNING_SMS",
    "DUNNING_TASK_QUEUE",
    "DUNNING_DATABASE_URL",
}
KIND = {"KEYWORD": "Keyword", "INT": "Int", "DATETIME": "Datetime"}


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _command(service: dict) -> list[str]:
    command = service.get("command")
    return command if isinstance(command, list) else str(command or "").split()


def test_every_service_is_there(services: dict) -> None:
    assert {"postgresql", "temporal", "temporal-ui", "temporal-setup", "dunning-db-setup", "worker", "api"} <= set(
        services
    )


@pytest.mark.parametrize("name", ["postgresql", "temporal", "temporal-ui", "worker", "api"])
def test_long_running_services_have_health_checks(services: dict, name: str) -> None:
    check = services[name].get("healthcheck")
    assert check and not check.get("disable"), f"{name} has no health check"
    test = check["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert check.get("interval") and check.get("retries")


def test_health_checks_ask_the_right_thing(services: dict) -> None:
    assert "pg_isready" in " ".join(services["postgresql"]["healthcheck"]["test"])
    assert "cluster health" in " ".join(services["temporal"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"][1:] == ["dunning", "healthcheck", "worker"]
    assert services["api"]["healthcheck"]["test"][1:4] == ["dunning", "healthcheck", "api"]


@pytest.mark.parametrize("name", ["worker", "api"])
def test_our_processes_take_every_contract_variable(services: dict, name: str) -> None:
    env = _env(services[name])
    missing = CONTRACT_VARIABLES - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"
    assert env["TEMPORAL_ADDRESS"].endswith("temporal:7233}")
    # Secrets are required, never defaulted in production.
    assert ":?" in env["STRIPE_WEBHOOK_SECRET"] and ":?" in env["DUNNING_API_TOKEN"]
    # Pass-through variables are unset in the container unless set on the host (an empty
    # DUNNING_PAYMENTS would be an invalid backend name, an empty TEMPORAL_API_KEY would turn TLS on).
    for var in ("DUNNING_PAYMENTS", "DUNNING_EMAIL", "DUNNING_SMS", "TEMPORAL_API_KEY", "STRIPE_API_KEY"):
        assert env[var] is None, var


@pytest.mark.parametrize("name", ["worker", "api"])
def test_every_setting_of_the_service_can_be_set(services: dict, name: str) -> None:
    """Each field of runtime.settings.Settings reaches the container (compose stays in step)."""
    from runtime.settings import Settings

    env = _env(services[name])
    missing = {field.upper() for field in Settings.model_fields} - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"


def test_worker_and_api_run_our_image_and_commands(services: dict) -> None:
    for name in ("worker", "api"):
        service = services[name]
        assert service["build"] == "." and service["image"]
        assert service["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert service["depends_on"]["temporal-setup"]["condition"] == "service_completed_successfully"
    assert _command(services["worker"]) == ["dunning", "worker"]
    api = _command(services["api"])
    assert api[:2] == ["dunning", "api"] and "0.0.0.0" in api
    assert any(p.endswith(":8000") for p in services["api"]["ports"])


def test_workers_can_scale(services: dict) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_api_and_workers_share_the_consent_store(services: dict, compose: dict) -> None:
    for name in ("worker", "api"):
        assert "dunning-state:/app/.dunning" in services[name]["volumes"]
        assert _env(services[name])["DUNNING_STATE_DIR"] == "/app/.dunning"
    assert "dunning-state" in compose["volumes"]


def test_our_database_is_its_own_on_the_compose_postgres(services: dict) -> None:
    """`dunning` (role and database) beside Temporal's, created before the worker and API start."""
    for name in ("worker", "api"):
        url = _env(services[name])["DUNNING_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://dunning:${DUNNING_DB_PASSWORD:?")
        assert url.endswith("@postgresql:5432/dunning")
        assert services[name]["depends_on"]["dunning-db-setup"]["condition"] == "service_completed_successfully"
    setup = services["dunning-db-setup"]
    assert setup["depends_on"]["postgresql"]["condition"] == "service_healthy" and setup["restart"] == "no"
    script = _command(setup)[-1]
    assert "CREATE ROLE dunning" in script and "CREATE DATABASE dunning OWNER dunning" in script
    assert ":?" in _env(setup)["DUNNING_DB_PASSWORD"]


def test_temporal_on_postgres(services: dict) -> None:
    temporal = services["temporal"]
    assert temporal["image"].split(":")[0].endswith("temporalio/auto-setup")
    env = _env(temporal)
    assert env["DB"] == "postgres12" and env["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert _env(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_setup_registers_exactly_the_contract_search_attributes(services: dict) -> None:
    command = _command(services["temporal-setup"])
    assert command[:4] == ["temporal", "operator", "search-attribute", "create"]
    names = [command[i + 1] for i, arg in enumerate(command) if arg == "--name"]
    types = [command[i + 1] for i, arg in enumerate(command) if arg == "--type"]
    registered = dict(zip(names, types, strict=True))
    expected = {key.name: KIND[key.indexed_value_type.name] for key in contract.SEARCH_ATTRIBUTES}
    assert registered == expected
    assert services["temporal-setup"]["restart"] == "no"


def test_variables_are_all_named_in_the_contract_or_compose_own(compose: dict) -> None:
    text = COMPOSE.read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    compose_own = {
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "TEMPORAL_VERSION",
        "TEMPORAL_UI_VERSION",
        "TEMPORAL_PORT",
        "TEMPORAL_UI_PORT",
        "TEMPORAL_UI_PUBLIC_URL",
        "TEMPORAL_CODEC_ENDPOINT",
        "DUNNING_IMAGE",
        "DUNNING_API_PORT",
        "DUNNING_DB_PASSWORD",
    }
    assert referenced - CONTRACT_VARIABLES - compose_own == set()


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(re.match(r"RUN pip install (--no-cache-dir )?\.(\s|$)", line) for line in lines)
    user_lines = [line for line in lines if line.startswith("USER ")]
    assert user_lines and user_lines[-1] not in ("USER root", "USER 0")
    # The shipped policies travel inside the wheel (package data), not as a separate copy.
    assert "COPY policies/" not in text
    # Everything `pip install .` needs is copied before it runs.
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install"))
    copied = " ".join(line for line in lines[:install] if line.startswith("COPY"))
    for needed in ("pyproject.toml", "README.md", "dunning/", "workflows/", "activities/", "runtime/", "starter/", "worker.py"):
        assert needed in copied, needed
