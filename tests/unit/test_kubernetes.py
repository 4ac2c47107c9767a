"""deploy/kubernetes/, checked offline: every manifest against the Kubernetes schemas bundled by
kubernetes-validate (no cluster here), then for what the worker and the API need in production;
temporal-values.yaml against the keys Temporal's Helm chart documents (its values.yaml, vendored
in tests/assets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from dunning.policy import load_policies
from runtime.settings import Settings
from workflows.activity_calls import CALL_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
CHART_VALUES = ROOT / "tests" / "assets" / "temporal-helm-chart-values.yaml"
KUBERNETES_VERSION = "1.32.0"  # a release every supported cluster still serves these APIs on


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def secret_files(deployment: dict[str, Any]) -> set[str]:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    mounted = {m["name"] for m in container(deployment)["volumeMounts"] if m["mountPath"] == "/run/secrets"}
    return {item["path"] for v in volumes if v["name"] in mounted for item in v["secret"]["items"]}


@pytest.mark.parametrize("document", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_follows_the_kubernetes_schema(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelled_field() -> None:
    broken = one("Deployment", "dunning-worker")
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 90
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_worker_stops_gracefully_and_keeps_capacity_through_disruptions() -> None:
    worker = one("Deployment", "dunning-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > CALL_TIMEOUT.total_seconds()
    assert container(worker)["command"] == ["dunning", "worker"]
    assert one("PodDisruptionBudget", "dunning-worker")["spec"]["minAvailable"] >= 1
    assert one("HorizontalPodAutoscaler", "dunning-worker")["spec"]["scaleTargetRef"]["name"] == "dunning-worker"
    limits = container(worker)["resources"]["limits"]["memory"]
    config = one("ConfigMap", "dunning-config")["data"]
    assert int(limits.removesuffix("Mi")) >= int(config["DUNNING_MAX_CACHED_CASES"]) * 260 / 1024 + 150


def test_the_api_is_ready_only_when_healthz_says_so_and_scales() -> None:
    api = one("Deployment", "dunning-api")
    probe = container(api)["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and probe["port"] == "http"
    service = one("Service", "dunning-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert one("HorizontalPodAutoscaler", "dunning-api")["spec"]["minReplicas"] >= 2
    assert one("PodDisruptionBudget", "dunning-api")["spec"]["minAvailable"] >= 1


def test_secrets_are_files_by_reference_and_every_secret_setting_reaches_a_pod() -> None:
    config = one("ConfigMap", "dunning-config")["data"]
    assert config["DUNNING_SECRETS_DIR"] == "/run/secrets"
    secret_fields = {
        name for name, field in Settings.model_fields.items() if SecretStr in getattr(field.annotation, "__args__", ())
    }
    assert not {name.upper() for name in secret_fields} & set(config)
    worker, api = secret_files(one("Deployment", "dunning-worker")), secret_files(one("Deployment", "dunning-api"))
    assert secret_fields <= worker | api
    assert "stripe_webhook_secret" not in worker
    assert not [doc for doc in documents() if doc["kind"] == "Secret"], "Secrets are referenced, never committed"


def test_every_pod_takes_settings_the_service_knows() -> None:
    config = one("ConfigMap", "dunning-config")["data"]
    temporal = {name for name in config if name.startswith("TEMPORAL_")}
    ours = {name.lower() for name in set(config) - temporal} - {"dunning_secrets_dir", "dunning_worker_metrics_port"}
    assert ours <= set(Settings.model_fields)


def test_the_setup_job_registers_the_search_attributes_before_the_pods_need_them() -> None:
    job = one("Job", "dunning-setup-temporal")
    (setup,) = job["spec"]["template"]["spec"]["containers"]
    assert setup["command"][:2] == ["dunning", "setup-temporal"]
    assert job["spec"]["backoffLimit"] >= 3


def test_the_shipped_policy_configmap_holds_policies_that_pass_the_check(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    for name in generator["files"]:
        (tmp_path / Path(name).name).write_text((KUBE / name).read_text())
    assert set(load_policies(tmp_path)) == {Path(name).stem for name in generator["files"]}


def test_the_database_is_backed_up_every_day() -> None:
    cron = one("CronJob", "dunning-db-backup")
    assert cron["spec"]["schedule"].split()[2:] == ["*", "*", "*"]
    script = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "pg_dump --format=custom" in script and ".partial" in script


def _undocumented(ours: Any, documented: Any, path: str = "") -> list[str]:
    """Keys of `ours` that the chart's values.yaml does not have; below a key the chart leaves
    empty or free-form (`datastores.default`, lists, `{}`), anything goes."""
    if not isinstance(ours, dict) or not isinstance(documented, dict) or not documented:
        return []
    missing = []
    for key, value in ours.items():
        if key not in documented:
            missing.append(f"{path}{key}")
        else:
            missing += _undocumented(value, documented[key], f"{path}{key}.")
    return missing


def test_the_helm_values_use_only_keys_the_chart_documents() -> None:
    ours = yaml.safe_load((KUBE / "temporal-values.yaml").read_text())
    documented = yaml.safe_load(CHART_VALUES.read_text())
    assert _undocumented(ours, documented) == []
    assert _undocumented({"server": {"config": {"numHistoryShard": 4}}}, documented) == ["server.config.numHistoryShard"]


def test_the_helm_values_choose_shards_retention_postgres_visibility_and_tls() -> None:
    server = yaml.safe_load((KUBE / "temporal-values.yaml").read_text())["server"]
    persistence = server["config"]["persistence"]
    assert persistence["numHistoryShards"] == 512
    for store in ("default", "visibility"):
        assert persistence["datastores"][store]["sql"]["pluginName"] == "postgres12"
        assert persistence["datastores"][store]["sql"]["existingSecret"], "passwords by reference"
        assert "password" not in persistence["datastores"][store]["sql"]
    (namespace,) = server["config"]["namespaces"]["namespace"]
    assert server["config"]["namespaces"]["create"] and namespace["retention"] == "30d"
    assert server["tls"]["frontend"]["enabled"] and server["tls"]["frontend"]["requireClientAuth"]
    config = one("ConfigMap", "dunning-config")["data"]
    assert config["TEMPORAL_NAMESPACE"] == namespace["name"]
    assert config["TEMPORAL_TLS_SERVER_NAME"] == server["tls"]["frontend"]["serverName"]
