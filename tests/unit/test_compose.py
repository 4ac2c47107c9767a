"""docker-compose.yml, its Temporal Cloud override, the proxy and Prometheus files, and the
Dockerfile, checked without a Docker engine (none runs here).

The compose file is validated against the Compose specification's JSON schema (vendored by
the check-jsonschema package), then checked for what an operator signs off: Temporal's reference
layout, profiles that let the worker and API run alone, health checks, secrets as files, nothing
private published, replicas that scale, memory sized from the case cache.
"""

from __future__ import annotations

import copy
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import SecretStr

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CLOUD = ROOT / "deploy" / "compose" / "temporal-cloud.yml"
DOCKERFILE = ROOT / "Dockerfile"

# What Temporal's Helm chart (temporalio/helm-charts, charts/temporal/values.yaml) pins today.
REFERENCE_IMAGES = {
    "temporalio/server": "1.31.2",
    "temporalio/admin-tools": "1.31.2",
    "temporalio/ui": "2.52.0",
}
OUR_SERVICES = {"temporal-setup", "worker", "api", "proxy"}
TEMPORAL_PROFILE = {"temporal-schema", "temporal", "temporal-namespace", "temporal-ui"}
ONE_SHOT = {"temporal-schema", "temporal-namespace", "temporal-setup", "dunning-db-setup"}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())  # resolves anchors and `<<` merge keys, as Compose does
    assert isinstance(data, dict)
    return data


def compose_schema() -> dict[str, Any]:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    assert isinstance(schema, dict)
    return schema


def schema_errors(data: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of `-f a -f b` for what the override uses: mappings merge, lists add up."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + [v for v in value if v not in out[key]]
        else:
            out[key] = copy.deepcopy(value)
    return out


def default(value: str) -> str:
    """`${VAR:-default}` → default, as compose reads it when VAR is unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def env(service: dict[str, Any]) -> dict[str, Any]:
    return service.get("environment") or {}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_check_catches_a_misspelled_key(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["healthchek"] = broken["services"]["worker"].pop("healthcheck")
    assert any("healthchek" in error for error in schema_errors(broken))


def test_temporal_runs_on_its_reference_layout_at_the_versions_it_pins(services: dict[str, Any]) -> None:
    images = {name: default(service["image"]) for name, service in services.items() if "image" in service}
    assert not any("auto-setup" in image for image in images.values()), "temporalio/auto-setup is deprecated"
    assert images["temporal"] == f"temporalio/server:{REFERENCE_IMAGES['temporalio/server']}"
    assert images["temporal-schema"] == images["temporal-namespace"] == (
        f"temporalio/admin-tools:{REFERENCE_IMAGES['temporalio/admin-tools']}"
    )
    assert images["temporal-ui"] == f"temporalio/ui:{REFERENCE_IMAGES['temporalio/ui']}"
    # The schema job runs before the server, the namespace job after it is healthy.
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    assert services["temporal-namespace"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert "update-schema" in services["temporal-schema"]["command"][0]


def test_shards_and_retention_are_chosen_not_inherited(services: dict[str, Any]) -> None:
    assert int(default(env(services["temporal"])["NUM_HISTORY_SHARDS"])) == 512  # Helm's; fixed forever
    retention = default(env(services["temporal-namespace"])["TEMPORAL_RETENTION"])
    assert re.fullmatch(r"\d+d", retention) and int(retention[:-1]) >= 30, retention
    script = services["temporal-namespace"]["command"][0]
    assert '--retention "$$TEMPORAL_RETENTION"' in script and "namespace update" in script


def test_nothing_private_is_published(services: dict[str, Any]) -> None:
    """7233 never leaves the compose network; every other port binds to loopback by default,
    except the TLS proxy, which is the front door."""
    for name, service in services.items():
        for mapping in service.get("ports", []):
            published = default(str(mapping))
            assert not published.endswith(":7233"), name
            if name != "proxy":
                assert published.startswith("127.0.0.1:"), (name, published)
    assert {default(p).rsplit(":", 1)[-1] for p in services["proxy"]["ports"]} == {"443", "80"}


def test_profiles_let_the_worker_and_the_api_run_alone(services: dict[str, Any]) -> None:
    for name in TEMPORAL_PROFILE:
        assert "temporal" in services[name]["profiles"], name
    assert set(services["postgresql"]["profiles"]) == {"temporal", "postgres"}
    for name in ("dunning-db-setup", "backup"):
        assert services[name]["profiles"] == ["postgres"], name
    assert services["prometheus"]["profiles"] == ["metrics"]
    for name in OUR_SERVICES:
        service = services[name]
        assert "profiles" not in service, name
        for needed, how in (service.get("depends_on") or {}).items():
            if "profiles" in services[needed]:
                assert how.get("required") is False, f"{name} cannot start without the profile of {needed}"


@pytest.mark.parametrize(
    "name", ["postgresql", "temporal", "temporal-ui", "worker", "api", "proxy", "prometheus", "backup"]
)
def test_long_running_services_have_health_checks(services: dict[str, Any], name: str) -> None:
    check = services[name].get("healthcheck")
    assert check and not check.get("disable"), f"{name} has no health check"
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert check.get("interval") and check.get("retries")


def test_one_shot_jobs_retry_instead_of_leaving_the_service_down(services: dict[str, Any]) -> None:
    for name in ONE_SHOT:
        assert services[name]["restart"].startswith("on-failure"), name


def test_the_search_attribute_job_is_ours_and_everything_waits_for_it(services: dict[str, Any]) -> None:
    setup = services["temporal-setup"]
    assert setup["command"][:2] == ["dunning", "setup-temporal"]
    for name in ("worker", "api"):
        assert services[name]["depends_on"]["temporal-setup"]["condition"] == "service_completed_successfully"
    # The list lives in dunning/contract.py alone: the job reads it there.
    assert "DunningStage" not in COMPOSE.read_text()


def test_every_service_rotates_its_logs(services: dict[str, Any]) -> None:
    for name, service in services.items():
        logging = service.get("logging") or {}
        assert logging.get("driver") == "json-file" and logging["options"]["max-file"], name


def test_secrets_reach_the_service_as_files_not_variables(compose: dict[str, Any], services: dict[str, Any]) -> None:
    secret_fields = {
        name for name, field in Settings.model_fields.items() if SecretStr in getattr(field.annotation, "__args__", ())
    }
    for name in ("worker", "api"):
        service = services[name]
        assert env(service)["DUNNING_SECRETS_DIR"] == "/run/secrets"
        assert not {field.upper() for field in secret_fields} & set(env(service)), f"{name} takes a secret as a variable"
    mounted = set(services["worker"]["secrets"]) | set(services["api"]["secrets"])
    assert secret_fields <= mounted
    assert "stripe_webhook_secret" not in services["worker"]["secrets"]  # only the API verifies webhooks
    assert set(mounted) <= set(compose["secrets"])
    assert env(services["postgresql"])["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"


@pytest.mark.parametrize("name", ["worker", "api"])
def test_every_setting_of_the_service_can_be_set(services: dict[str, Any], name: str) -> None:
    """Each field of runtime.settings.Settings reaches the container, as a variable or a secret file."""
    service = services[name]
    reachable = {key.lower() for key in env(service)} | set(service["secrets"])
    others = set(services["api" if name == "worker" else "worker"]["secrets"])
    assert set(Settings.model_fields) - reachable - others == set()


def test_workers_and_api_replicas_scale_and_keep_nothing_on_disk(services: dict[str, Any]) -> None:
    for name in ("worker", "api"):
        service = services[name]
        assert "container_name" not in service and "ports" not in service and "volumes" not in service, name
    assert services["api"]["expose"] == ["8000"]
    proxy = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    assert "set $api http://api:8000;" in proxy and "resolver 127.0.0.11" in proxy
    for secret in services["proxy"]["secrets"]:
        assert f"/run/secrets/{secret};" in proxy


def test_the_proxy_does_not_publish_the_business_metrics() -> None:
    proxy = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    assert re.search(r"location = /metrics \{\s*return 404;", proxy)


def test_worker_memory_fits_its_case_cache(services: dict[str, Any]) -> None:
    """~260 KiB per cached case (docs/performance.md) plus the process itself must fit the limit,
    or the kernel kills a worker that only did what DUNNING_MAX_CACHED_CASES allowed."""
    worker = services["worker"]
    cached = int(default(env(worker)["DUNNING_MAX_CACHED_CASES"]))
    assert cached == Settings.model_fields["dunning_max_cached_cases"].default
    limit = default(worker["deploy"]["resources"]["limits"]["memory"])
    number, unit = re.fullmatch(r"(\d+)([mg])", limit).groups()  # type: ignore[union-attr]
    limit_mib = int(number) * (1024 if unit == "g" else 1)
    assert limit_mib >= cached * 260 / 1024 + 150, limit
    for name in ("api", "temporal", "postgresql", "proxy", "prometheus"):
        assert services[name]["deploy"]["resources"]["limits"]["memory"], name


def test_graceful_stop_outlasts_a_provider_call(services: dict[str, Any]) -> None:
    from workflows.dunning_workflow import CALL_TIMEOUT

    seconds = int(services["worker"]["stop_grace_period"].rstrip("s"))
    assert seconds > CALL_TIMEOUT.total_seconds()


def test_prometheus_scrapes_the_server_every_worker_and_every_api_replica(services: dict[str, Any]) -> None:
    config = load(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    server_port = env(services["temporal"])["PROMETHEUS_ENDPOINT"].rsplit(":", 1)[1]
    assert jobs["temporal-server"]["static_configs"][0]["targets"] == [f"temporal:{server_port}"]
    worker_port = int(default(env(services["worker"])["DUNNING_WORKER_METRICS_PORT"]))
    assert jobs["dunning-worker"]["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": worker_port}]
    assert jobs["dunning-api"]["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": 8000}]
    assert jobs["dunning-api"]["metrics_path"] == "/metrics"


def test_alert_rules_cover_what_an_operator_must_hear_about() -> None:
    rules = [rule for group in load(ROOT / "deploy" / "prometheus" / "alerts.yml")["groups"] for rule in group["rules"]]
    by_name = {rule["alert"]: rule for rule in rules}
    assert {"DunningWebhookErrors", "DunningCaseFailures", "DunningBacklog", "DunningRecoveryRateDrop"} <= set(by_name)
    for rule in rules:
        assert rule["expr"].strip() and rule["labels"]["severity"] in ("page", "warn"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    assert 'status=~"5.."' in by_name["DunningWebhookErrors"]["expr"]
    assert 'outcome="recovered"' in by_name["DunningRecoveryRateDrop"]["expr"]


def test_the_temporal_cloud_override_gives_every_client_its_credentials(compose: dict[str, Any]) -> None:
    override = load(CLOUD)
    both = merged(compose, override)
    assert schema_errors(both) == []
    for name in ("temporal-setup", "worker", "api"):
        service = both["services"][name]
        assert "temporal_profile" in service["secrets"], name
        assert env(service)["TEMPORAL_CONFIG_FILE"] == "/run/secrets/temporal_profile"
        assert ":?" in env(service)["TEMPORAL_ADDRESS"], "no silent fallback to a local server"


def test_the_example_temporal_profile_is_one_the_sdk_reads() -> None:
    from temporalio.envconfig import ClientConfigProfile

    profile = ClientConfigProfile.load(
        config_source=ROOT / "deploy" / "compose" / "temporal-profile.example.toml",
        config_file_strict=True,
        override_env_vars={"TEMPORAL_ADDRESS": "my-ns.a1b2c.tmprl.cloud:7233", "TEMPORAL_NAMESPACE": "my-ns.a1b2c"},
    )
    config = profile.to_client_connect_config()
    assert config["api_key"] == "replace-with-the-api-key" and config["namespace"] == "my-ns.a1b2c"
    assert config.get("tls"), "an API key goes over TLS"


def test_variables_are_all_named_in_the_contract_or_compose_own() -> None:
    # `$${…}` is compose's escape: the container's shell expands it, not compose.
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text() + CLOUD.read_text()))
    service_variables = {field.upper() for field in Settings.model_fields} | {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "DUNNING_WORKER_METRICS_PORT",
    }
    compose_own = {
        "POSTGRES_USER", "POSTGRESQL_VERSION", "POSTGRES_MEMORY",
        "TEMPORAL_VERSION", "TEMPORAL_ADMINTOOLS_VERSION", "TEMPORAL_UI_VERSION", "TEMPORAL_HISTORY_SHARDS",
        "TEMPORAL_RETENTION", "TEMPORAL_MEMORY", "TEMPORAL_UI_BIND", "TEMPORAL_UI_PORT", "TEMPORAL_UI_PUBLIC_URL",
        "TEMPORAL_CODEC_ENDPOINT", "TEMPORAL_UI_DISABLE_WRITE_ACTIONS",
        "DUNNING_IMAGE", "DUNNING_LOG_MAX_SIZE", "DUNNING_SECRETS_PATH", "DUNNING_WORKER_MEMORY", "DUNNING_API_MEMORY",
        "DUNNING_PUBLIC_BIND", "DUNNING_HTTPS_PORT", "DUNNING_HTTP_PORT", "NGINX_VERSION",
        "BACKUP_INTERVAL_SECONDS", "BACKUP_KEEP_DAYS",
        "PROMETHEUS_VERSION", "PROMETHEUS_RETENTION", "PROMETHEUS_BIND", "PROMETHEUS_PORT", "PROMETHEUS_MEMORY",
    }  # fmt: skip
    assert referenced - service_variables - compose_own == set()


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
