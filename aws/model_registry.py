"""The SageMaker Model Registry: every model trained for AWS is a version in one model package group, pending approval.

train --target aws, tune (its best training job) and ec2-train register their model.tar.gz here with its metrics,
its data, what trained it and its MLflow run; `invoke models` lists the versions, `invoke approve N` approves one
(`--reject` rejects it) with the caller's ARN and a reason; `invoke plan` deploys the newest approved version, or
the one aws.model_version pins. The group is <name_prefix> (aws.model_package_group overrides it), which Terraform's
module.model_registry creates among aws.bootstrap_targets.

SageMaker keeps the approval status, the reason (ApprovalDescription) and LastModifiedBy (a Studio user profile,
not an IAM caller, and empty for API callers), so who approved is recorded as CustomerMetadataProperties too.
"""

import io
import json
import re
import subprocess
import tarfile
from datetime import datetime, timezone

import botocore.exceptions
from invoke.exceptions import Exit

from aws.bootstrap import bootstrap_outputs
from aws.session import REPO_ROOT, aws_settings, client, split_s3_uri
from aws.terraform_root import endpoint_image_settings
from stack_common.model_versions import (APPROVED, PENDING, ModelVersion, approval_text, data_fingerprint,
                                         find_version, metric_values, parse_version_number, transition_refusal)

# What SageMaker accepts in a CustomerMetadataProperties value: letters, numbers, spaces and _.:/=+-@ (1-256).
METADATA_FORBIDDEN = re.compile(r"[^\w\s.:/=+\-@]")
METADATA_MAX = 256
CONTENT_TYPES = ["application/x-image", "image/jpeg", "image/png", "application/json"]   # inference/ accepts these


def group_name(c):
    """aws.model_package_group, else <name_prefix>: the group module.model_registry creates."""
    return aws_settings(c).model_package_group or aws_settings(c).name_prefix


def ensure_group(c, identity):
    """Make sure the group exists before anything is trained into it: the bootstrap targets create it on first use
    (unless aws.model_package_group names one of its own, or aws.sagemaker_role_arn says the account's resources
    are managed outside Terraform: then it must exist); returns its name."""
    name = group_name(c)
    if _group_exists(c, name):
        return name
    if aws_settings(c).model_package_group:
        raise Exit(f"no model package group {name} (aws.model_package_group) in {identity.region}: create it, or "
                   "leave the setting empty to use the one Terraform creates")
    if aws_settings(c).sagemaker_role_arn:     # resources managed outside Terraform: no bootstrap apply
        raise Exit(f"model package group {name} does not exist: create it or set aws.model_package_group")
    bootstrap_outputs(c, identity, needed=("model_package_group_name",))
    if not _group_exists(c, name):
        raise Exit(f"Terraform created no model package group {name}: check module.model_registry and "
                   "aws.bootstrap_targets")
    return name


def _group_exists(c, name):
    try:
        client(c, "sagemaker").describe_model_package_group(ModelPackageGroupName=name)
        return True
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return False
        raise


def serving_image(c, image):
    """The inference image the endpoint module runs (terraform/modules/endpoint): endpoint.image_uri, else the
    prebuilt PyTorch inference image of endpoint.framework_version and python_version for the instance's
    processor, as the SageMaker SDK names it (the same repository and tag as Terraform's lookup); `image` is
    terraform_root.endpoint_image_settings."""
    if image["image_uri"]:
        return image["image_uri"]
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve("pytorch", region=aws_settings(c).region, version=image["framework_version"],
                                   py_version=image["python_version"], instance_type=image["instance_type"],
                                   image_scope="inference")
    except ValueError as error:
        raise Exit(f"no AWS PyTorch inference image for endpoint framework_version {image['framework_version']} "
                   f"({str(error).split('. ')[0]}): set aws.terraform_variables.endpoint.image_uri") from None


def metadata_value(value):
    """`value` as SageMaker takes it in CustomerMetadataProperties (its characters, its length)."""
    return METADATA_FORBIDDEN.sub(" ", str(value)).strip()[:METADATA_MAX]


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def training_report(c, metrics_uri):
    """The metrics.json train.py wrote, from S3; {} when it is not there (a job that wrote none)."""
    bucket, key = split_s3_uri(metrics_uri)
    try:
        return json.loads(client(c, "s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    except (botocore.exceptions.ClientError, ValueError):
        return {}


def job_report(c, model_data_url):
    """A SageMaker training job's metrics.json, out of the output.tar.gz next to its model.tar.gz (SageMaker tars
    SM_OUTPUT_DATA_DIR there), and where it is put beside it for ModelMetrics; ({}, None) when there is none."""
    output_uri = model_data_url.rsplit("/", 1)[0] + "/output.tar.gz"
    bucket, key = split_s3_uri(output_uri)
    s3 = client(c, "s3")
    try:
        archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "metrics.json")
            text = tar.extractfile(member).read()
        report = json.loads(text)
    except (botocore.exceptions.ClientError, tarfile.TarError, StopIteration, ValueError):
        return {}, None
    metrics_uri = model_data_url.rsplit("/", 1)[0] + "/metrics.json"
    s3.put_object(Bucket=bucket, Key=split_s3_uri(metrics_uri)[1], Body=text, ContentType="application/json")
    return report, metrics_uri


def register(c, identity, *, model_data_url, source, generated_by, data, report=None, metrics=None,
             metrics_uri=None, details=None, copied_runs=None):
    """Register model_data_url as a new version of the group, pending approval; returns its ARN.

    `report` is train.py's metrics.json when it could be read (metrics, data fingerprint, MLflow run), `metrics`
    what SageMaker recorded otherwise; `details` more name/value facts (the tuning job, the hyperparameters);
    `copied_runs` what tracking_runs.bring_home copied into the project's store: the version names that copy of
    the run, not the one in the job's own store (which is gone with the job)."""
    report = report or {}
    final = metric_values(report.get("final") or metrics or {})
    run = report.get("mlflow") or {}
    run = (copied_runs or {}).get(run.get("run_id"), run)
    image = endpoint_image_settings(c)
    properties = {"source": source, "data": data, "data_fingerprint": data_fingerprint(report),
                  "mlflow_run_id": run.get("run_id", ""), "mlflow_tracking_uri": run.get("tracking_uri", ""),
                  **{name: f"{value:.6g}" for name, value in final.items()}, **(details or {})}
    request = {
        "ModelPackageGroupName": group_name(c),
        "ModelPackageDescription": source[:1024],
        "ModelApprovalStatus": PENDING,
        "InferenceSpecification": {
            "Containers": [{"Image": serving_image(c, image), "ModelDataUrl": model_data_url, "Framework": "PYTORCH",
                            "FrameworkVersion": image["framework_version"]}],
            "SupportedContentTypes": CONTENT_TYPES, "SupportedResponseMIMETypes": ["application/json"],
            "SupportedRealtimeInferenceInstanceTypes": [image["instance_type"]]},
        "CustomerMetadataProperties": {key: metadata_value(value) for key, value in properties.items()
                                       if metadata_value(value)},
        "MetadataProperties": {key: value for key, value in {
            "GeneratedBy": generated_by[:1024], "CommitId": git_commit(),
            "ProjectId": aws_settings(c).name_prefix}.items() if value},
        "Domain": "COMPUTER_VISION", "Task": "IMAGE_CLASSIFICATION",
        "Tags": [{"Key": "Project", "Value": aws_settings(c).name_prefix}],
    }
    if metrics_uri:
        request["ModelMetrics"] = {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                                   "S3Uri": metrics_uri}}}
    arn = client(c, "sagemaker").create_model_package(**request)["ModelPackageArn"]
    number = arn.rsplit("/", 1)[-1]
    print(f"registered as version {number} of model package group {group_name(c)}, pending approval: "
          f"`invoke models --target aws`, then `invoke approve {number} --target aws`")
    return arn


def _version(package):
    properties = package.get("CustomerMetadataProperties") or {}
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or [{}]
    created = package.get("CreationTime")
    return ModelVersion(
        number=int(package["ModelPackageVersion"]), status=package.get("ModelApprovalStatus", PENDING),
        created=created.astimezone(timezone.utc).isoformat(timespec="seconds") if created else "",
        model_uri=containers[0].get("ModelDataUrl", ""), metrics=metric_values(properties),
        data=properties.get("data", ""), data_fingerprint=properties.get("data_fingerprint", ""),
        source=properties.get("source", package.get("ModelPackageDescription", "")),
        mlflow_run_id=properties.get("mlflow_run_id", ""), approved_by=properties.get("approved_by", ""),
        approved_at=properties.get("approved_at", ""), reason=package.get("ApprovalDescription", ""),
        reference=package["ModelPackageArn"])


def describe(c, arn):
    return _version(client(c, "sagemaker").describe_model_package(ModelPackageName=arn))


def summaries(c, status=None, newest_only=False):
    """The group's versions as ListModelPackages gives them (no metadata), newest first."""
    request = {"ModelPackageGroupName": group_name(c), "ModelPackageType": "Versioned", "SortBy": "CreationTime",
               "SortOrder": "Descending"}
    if status:
        request["ModelApprovalStatus"] = status
    try:
        if newest_only:
            return client(c, "sagemaker").list_model_packages(MaxResults=1, **request)["ModelPackageSummaryList"]
        pages = client(c, "sagemaker").get_paginator("list_model_packages").paginate(**request)
        return [summary for page in pages for summary in page["ModelPackageSummaryList"]]
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return []          # no group yet: nothing was registered
        raise


def versions(c):
    """Every version of the group, newest first, with its metrics, data, source and approval."""
    return [describe(c, summary["ModelPackageArn"]) for summary in summaries(c)]


def set_approval(c, identity, number, status, reason=""):
    """Approve or reject version `number` as the caller (identity.arn), with `reason`; returns the version before."""
    number = _number(number)
    listed = [ModelVersion(number=int(s["ModelPackageVersion"]), status=s.get("ModelApprovalStatus", PENDING),
                           created="", model_uri="", reference=s["ModelPackageArn"]) for s in summaries(c)]
    try:
        found = find_version(listed, number, f"model package group {group_name(c)}")
    except LookupError as error:
        raise Exit(str(error)) from None
    sagemaker = client(c, "sagemaker")
    package = sagemaker.describe_model_package(ModelPackageName=found.reference)
    before = _version(package)
    refusal = transition_refusal(before, status)
    if refusal:
        raise Exit(refusal)
    properties = {**(package.get("CustomerMetadataProperties") or {}),   # moto replaces the map: send all of it
                  "approved_by": metadata_value(identity.arn),
                  "approved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    sagemaker.update_model_package(ModelPackageArn=found.reference, ModelApprovalStatus=status,
                                   ApprovalDescription=reason[:1024], CustomerMetadataProperties=properties)
    return before


def _number(text):
    try:
        return parse_version_number(text)
    except ValueError as error:
        raise Exit(str(error)) from None


def version_to_deploy(c):
    """The version `invoke plan` deploys: the one aws.model_version pins (it must be approved), else the newest
    approved one; Exit with one line when there is none."""
    pinned = aws_settings(c).model_version
    if pinned:
        listed = {int(s["ModelPackageVersion"]): s["ModelPackageArn"] for s in summaries(c)}
        if pinned not in listed:
            raise Exit(f"aws.model_version pins version {pinned}, which model package group {group_name(c)} does "
                       "not have: `invoke models --target aws` lists them")
        version = describe(c, listed[pinned])
        if version.status != APPROVED:
            raise Exit(f"aws.model_version pins version {pinned}, which is {version.status}, not Approved: "
                       f"`invoke approve {pinned} --target aws`, or pin an approved one")
        return version
    newest = summaries(c, status=APPROVED, newest_only=True)
    if not newest:
        raise Exit(f"no approved model version in {group_name(c)}: `invoke models`, then `invoke approve N`")
    return describe(c, newest[0]["ModelPackageArn"])


def still_approved(c, arn):
    """The version of `arn` now; Exit when it was rejected (or removed) since the plan was made."""
    try:
        version = describe(c, arn)
    except botocore.exceptions.ClientError as error:
        raise Exit(f"the planned model version {arn} cannot be read ({error.response['Error']['Message']}): "
                   "run `invoke plan` again") from None
    if version.status != APPROVED:
        raise Exit(f"model version {version.number} is {version.status} since the plan was made "
                   f"({approval_text(version)}): run `invoke plan` again")
    return version
