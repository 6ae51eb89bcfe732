"""Registered model versions as both registries show them: the SageMaker Model Registry (aws/model_registry.py) and
the MLflow model registry (local/model_registry.py) give the same facts, listed and approved the same way.

A version is pending approval when it is registered; `invoke approve N` makes it Approved, `--reject` Rejected, with
who did it and why. The statuses are SageMaker's ModelApprovalStatus values; the local registry uses them as tags.
"""

from dataclasses import dataclass, field

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED)
# The metrics a version carries (train.py's metrics.json "final", SageMaker's `<split>:<metric>`), in listing order.
METRICS = ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss")


@dataclass(frozen=True)
class ModelVersion:
    number: int
    status: str
    created: str                                  # ISO 8601, UTC
    model_uri: str                                # s3://.../model.tar.gz, or the MLflow run's model artifact
    metrics: dict = field(default_factory=dict)   # METRICS' names -> float
    data: str = ""                                # where the training data came from
    data_fingerprint: str = ""
    source: str = ""                              # what trained it: a job, a tuning job, a host, a local run
    mlflow_run_id: str = ""
    approved_by: str = ""                         # who set the status last (approved or rejected)
    approved_at: str = ""
    reason: str = ""
    reference: str = ""                           # the model package ARN, or <name>/<version> locally


def metric_values(final):
    """METRICS from a metrics.json "final" mapping (or any mapping of those names) as floats, the missing ones left out."""
    values = {}
    for name in METRICS:
        try:
            values[name] = float(final[name])
        except (KeyError, TypeError, ValueError):
            continue
    return values


def data_fingerprint(report):
    """The data set's digest in train.py's metrics.json ("dataset", training/tracking.py's dataset_fingerprint; the
    run's MLflow tag dataset_digest holds the same), "" when the report has none."""
    found = (report.get("dataset") or {}).get("digest", "")
    return found if isinstance(found, str) else ""


def metrics_text(metrics):
    if not metrics:
        return "no metrics"
    parts = []
    for split in ("valid", "test"):
        shown = [f"{kind} {metrics[f'{split}_{kind}']:.4f}" for kind in ("accuracy", "loss")
                 if f"{split}_{kind}" in metrics]
        if shown:
            parts.append(f"{split} {' '.join(shown)}")
    return ", ".join(parts)


def approval_text(version):
    if version.status == PENDING:
        return "pending approval"
    text = f"{version.status.lower()} by {version.approved_by or 'unknown'}"
    text += f" at {version.approved_at}" if version.approved_at else ""
    return text + (f": {version.reason}" if version.reason else "")


def data_text(version):
    if not version.data:
        return "data unknown"
    return version.data + (f" (fingerprint {version.data_fingerprint})" if version.data_fingerprint else "")


def version_lines(version):
    """The lines `invoke models` prints for one version: the facts a reviewer approves it on."""
    lines = [f"{version.number:>4}  {version.status:<21}  {version.created}  {metrics_text(version.metrics)}",
             f"      source: {version.source or 'unknown'}" +
             (f" (MLflow run {version.mlflow_run_id})" if version.mlflow_run_id else ""),
             f"      data: {data_text(version)}",
             f"      model: {version.model_uri}"]
    if version.status != PENDING:
        lines.append(f"      {approval_text(version)}")
    return lines


def print_versions(registry, versions):
    if not versions:
        print(f"no model versions in {registry} yet: train one (`invoke train`)")
        return
    print(f"model versions in {registry}, newest first:")
    for version in versions:
        print("\n".join(version_lines(version)))


def transition_refusal(version, wanted):
    """Why `wanted` may not be set on `version` (one line), or None when it may.

    The same status twice is refused (nothing would change, and the first approver would be overwritten). Every
    other change is allowed, as SageMaker allows it: a rejected version approved later, an approved one rejected
    (the way to withdraw an approval; `invoke plan` then takes the newest version still approved)."""
    if version.status == wanted:
        return (f"version {version.number} is already {wanted} ({approval_text(version)}): nothing to change")
    return None


def find_version(versions, number, registry):
    """The version numbered `number`; raises LookupError with one line when there is none."""
    for version in versions:
        if version.number == number:
            return version
    known = ", ".join(str(v.number) for v in sorted(versions, key=lambda v: v.number)) or "none yet"
    raise LookupError(f"no version {number} in {registry} (versions: {known}): `invoke models` lists them")


def parse_version_number(text):
    """VERSION as `invoke approve` takes it: a positive integer; raises ValueError with one line otherwise."""
    try:
        number = int(str(text).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"not a version number: {text!r} (a positive integer, as `invoke models` lists them)")
    return number
