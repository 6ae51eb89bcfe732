"""The local model registry: the MLflow model registry of the project's tracking store (SQLite, tracking.store).

Each local training run (`invoke train`, and the training `invoke deploy` does when there is no model) registers
its MLflow run's `model` artifact as a new version of the registered model named after the project (the tracking
experiment, dog-breeds), pending approval. The approval is kept in tags with SageMaker's values and names
(approval_status: PendingManualApproval / Approved / Rejected; approved_by, approved_at, approval_reason), so that
`invoke models` and `invoke approve` read the same on both targets. The local stack serves without approval and
shows which version it serves, found by the served model's model_version (the hash of its weights).

MLFLOW_TRACKING_URI, when set (a team's server), wins over the project's store, as it does for training.
"""

import getpass
import json
import subprocess
from datetime import datetime, timezone

from configuration.areas import REPO_ROOT, TrackingSettings, TrainSettings, load
from stack_common.model_versions import (PENDING, ModelVersion, data_fingerprint, find_version, metric_values,
                                         parse_version_number, transition_refusal)
from training.tracking import DATABASE, project_tracking_uri, sqlite_store_dir

STATUS_TAG, WEIGHTS_TAG = "approval_status", "model_version"


class RegistryError(RuntimeError):
    """Something the user can fix: one line."""


def registry_uri(config):
    return project_tracking_uri(load(config, TrackingSettings))


def model_name(config):
    return load(config, TrackingSettings).experiment


def _client(uri):
    from mlflow.tracking import MlflowClient     # seconds: only once there is a registry to read

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_trained_model(config, source="local training (invoke train)"):
    """Register the model train.py just wrote (its metrics.json names the MLflow run) as a version pending
    approval; returns (the ModelVersion, whether it is new: False when these weights are registered already), or
    (None, False) when the run was not tracked (no "mlflow" in metrics.json)."""
    train = load(config, TrainSettings)
    report = json.loads((train.output_dir / "metrics.json").read_text())
    run = report.get("mlflow") or {}
    if not run.get("run_id"):
        return None, False
    weights = json.loads((train.model_dir / "model_config.json").read_text()).get("model_version", "")
    client = _client(run.get("tracking_uri") or registry_uri(config))
    name = model_name(config)
    if not _has_registered_model(client, name):
        client.create_registered_model(name, description="dog breed classifier: every local training run")
    same = client.search_model_versions(f"name='{name}' and tags.{WEIGHTS_TAG}='{weights}'")
    if same:                    # a resumed run that only rewrote the same weights: one version per model
        return max((_version(v) for v in same), key=lambda v: v.number), False
    tags = {STATUS_TAG: PENDING, WEIGHTS_TAG: weights, "source": source,
            "data": str(report.get("settings", {}).get("data", "")),
            "data_fingerprint": data_fingerprint(report),
            **{metric: f"{value:.6g}" for metric, value in metric_values(report.get("final") or {}).items()}}
    created = client.create_model_version(name, source=f"runs:/{run['run_id']}/model", run_id=run["run_id"],
                                          tags={k: v for k, v in tags.items() if v}, description=source)
    return _version(client.get_model_version(name, created.version)), True


def _has_registered_model(client, name):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def _version(found):
    tags = found.tags or {}
    created = datetime.fromtimestamp(found.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds")
    return ModelVersion(
        number=int(found.version), status=tags.get(STATUS_TAG, PENDING), created=created, model_uri=found.source,
        metrics=metric_values(tags), data=tags.get("data", ""), data_fingerprint=tags.get("data_fingerprint", ""),
        source=tags.get("source", found.description or ""), mlflow_run_id=found.run_id or "",
        approved_by=tags.get("approved_by", ""), approved_at=tags.get("approved_at", ""),
        reason=tags.get("approval_reason", ""), reference=f"{found.name}/{found.version}")


def versions(config):
    """Every version of the project's registered model, newest first."""
    if not _store_exists(registry_uri(config)):
        return []               # nothing trained yet (and reading would create the store)
    client = _client(registry_uri(config))
    name = model_name(config)
    if not _has_registered_model(client, name):
        return []
    found = client.search_model_versions(f"name='{name}'")
    return sorted((_version(v) for v in found), key=lambda v: v.number, reverse=True)


def approver():
    """Who approves here: git's user.email, else the login name."""
    try:
        email = subprocess.run(["git", "config", "user.email"], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    return email or getpass.getuser()


def set_approval(config, number, status, reason=""):
    """Approve or reject version `number` as approver(), with `reason`; returns (the version before, who)."""
    try:
        number = parse_version_number(number)
        before = find_version(versions(config), number, f"registered model {model_name(config)} "
                                                        f"({registry_uri(config)})")
    except (ValueError, LookupError) as error:
        raise RegistryError(str(error)) from None
    refusal = transition_refusal(before, status)
    if refusal:
        raise RegistryError(refusal)
    who = approver()
    client = _client(registry_uri(config))
    for key, value in {STATUS_TAG: status, "approved_by": who, "approval_reason": reason,
                       "approved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}.items():
        client.set_model_version_tag(model_name(config), str(number), key, value)
    return before, who


def _store_exists(uri):
    store = sqlite_store_dir(uri)
    return store is None or (store / DATABASE).exists()


def served_version(config, weights_version):
    """The registered version of the model whose weights hash to `weights_version`, or None (a model directory
    trained before the registry, or by an untracked run)."""
    uri = registry_uri(config)
    if not weights_version or not _store_exists(uri):
        return None             # no store yet: nothing was registered (and reading would create one)
    client = _client(uri)
    name = model_name(config)
    if not _has_registered_model(client, name):
        return None
    found = client.search_model_versions(f"name='{name}' and tags.{WEIGHTS_TAG}='{weights_version}'")
    return max((_version(v) for v in found), key=lambda v: v.number, default=None)
