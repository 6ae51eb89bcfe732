"""SageMaker training and tuning, asserted on what reaches AWS (moto) rather than on what our code meant to send."""

import io
import json
import os
import re
import tarfile

import boto3
import pytest
from invoke.exceptions import Exit

from aws import sagemaker_jobs, tracking_runs
from aws.session import aws_settings, boto_session
from configuration.areas import TuningSettings, load
from training.tracking import store_uri
from aws_testlib import (BUCKET, REGION, RequestRecorder, answer, assert_copied, create_bucket,  # noqa: F401
                         create_model_package_group, create_role, make_context, moto_account,
                         aws_credentials, refuse, registered_versions, training_output)

DATA = ["data/dogImages/train/001.Affenpinscher/a.jpg", "data/dogImages/valid/001.Affenpinscher/b.jpg"]


@pytest.fixture
def account(moto_account, tmp_path):
    role = create_role()
    create_bucket(objects=DATA)
    create_model_package_group()
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=role)
    return c, RequestRecorder(boto_session(c)), role


REPORT = {"final": {"valid_accuracy": 0.8125, "valid_loss": 0.61, "test_accuracy": 0.79, "test_loss": 0.66},
          "dataset": {"digest": "0a1b2c3d4e5f6a7b"},
          "mlflow": {"tracking_uri": "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/dog-breeds",
                     "experiment_id": "1", "run_id": "4f3e2d1c"}}


def write_output_when_created(c, report=REPORT):
    """What the job leaves next to its model in S3 (moto runs nothing): output.tar.gz with train.py's metrics.json."""
    def write(params, **_):
        key = f"output/{params['TrainingJobName']}/output/output.tar.gz"
        boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=training_output(report))

    boto_session(c).events.register("before-parameter-build.sagemaker.CreateTrainingJob", write)


def channel_files(job, channel):
    """{relative path: bytes} of what the job's input channel holds in S3."""
    uri = next(ch["DataSource"]["S3DataSource"]["S3Uri"] for ch in job["InputDataConfig"]
               if ch["ChannelName"] == channel)
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    return {key[len(prefix):].lstrip("/"): s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_a_job_on_four_instances_runs_train_py_under_torchrun_on_spot_with_checkpoints(account, tmp_path):
    c, requests, role = account
    sagemaker_jobs.train(c, instances=4, spot=True, assignments=["epochs=2", "batch-size=64"])

    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=requests.of("CreateTrainingJob")[0]["TrainingJobName"])
    assert job["ResourceConfig"]["InstanceCount"] == 4
    assert job["ResourceConfig"]["InstanceType"] == aws_settings(c).training_instance_type
    assert job["RoleArn"] == role
    assert job["HyperParameters"] == {"epochs": "2", "batch_size": "64"}
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/checkpoints/")
    assert job["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"  # where train.py looks on SageMaker
    stopping = job["StoppingCondition"]
    assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"]
    # Each S3 location under the prefix the Terraform roles grant: data/ read, code/ read, output/ and checkpoints/.
    channels = {ch["ChannelName"]: ch["DataSource"]["S3DataSource"]["S3Uri"] for ch in job["InputDataConfig"]}
    assert channels["training"] == f"s3://{BUCKET}/data/dogImages/"
    assert channels["code"].startswith(f"s3://{BUCKET}/code/")
    assert channels["sm_drivers"].startswith(f"s3://{BUCKET}/code/")
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/output/"

    drivers = channel_files(job, "sm_drivers")
    assert json.loads(drivers["distributed.json"]) == {"process_count_per_node": None, "smp": None}
    assert "torchrun_driver.py" in drivers["sm_train.sh"].decode()
    assert json.loads(drivers["sourcecode.json"])["entry_script"] == "training/train.py"
    code = channel_files(job, "code")
    assert {"training/train.py", "inference/preprocessing.py", "inference/architectures.py"} <= set(code)

    # moto replaces a job's metric definitions with a canned one, so read them from the request sent to AWS.
    sent = requests.of("CreateTrainingJob")[0]["AlgorithmSpecification"]["MetricDefinitions"]
    assert sent == sagemaker_jobs.METRIC_DEFINITIONS

    [version] = registered_versions()
    assert version["ModelApprovalStatus"] == "PendingManualApproval"
    assert version["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == job["ModelArtifacts"][
        "S3ModelArtifacts"]
    assert version["CustomerMetadataProperties"]["training_job"] == job["TrainingJobName"]
    assert version["MetadataProperties"]["GeneratedBy"] == job["TrainingJobArn"]


def test_with_its_own_role_and_no_group_training_stops_with_one_line_before_terraform_or_a_job(moto_account,
                                                                                                 tmp_path):
    role = create_role()
    create_bucket(objects=DATA)
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=role, terraform_dir=str(tmp_path / "no-terraform"))
    requests = RequestRecorder(boto_session(c))
    with pytest.raises(Exit) as stopped:
        sagemaker_jobs.train(c)
    assert stopped.value.message == ("model package group dog-breeds does not exist: create it or set "
                                     "aws.model_package_group")
    assert "CreateTrainingJob" not in requests.names()


def test_a_training_job_registers_its_model_pending_approval_with_metrics_data_and_mlflow_run(account):
    c, requests, _ = account
    write_output_when_created(c)
    sagemaker_jobs.train(c)

    [version] = registered_versions()
    job = requests.of("CreateTrainingJob")[0]["TrainingJobName"]
    assert version["ModelApprovalStatus"] == "PendingManualApproval"
    properties = version["CustomerMetadataProperties"]
    assert {name: float(properties[name]) for name in ("valid_accuracy", "valid_loss", "test_accuracy",
                                                       "test_loss")} == REPORT["final"]
    assert properties["data"] == f"s3://{BUCKET}/data/dogImages/"
    assert properties["data_fingerprint"] == "0a1b2c3d4e5f6a7b"
    assert properties["mlflow_run_id"] == "4f3e2d1c"
    assert properties["source"] == f"SageMaker training job {job}"
    [container] = version["InferenceSpecification"]["Containers"]
    # the image terraform/modules/endpoint looks up for the default endpoint (2.6.0, py312, a CPU instance)
    assert container["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/output/{job}/output/model.tar.gz"
    assert version["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large"]
    statistics = version["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["S3Uri"] == f"s3://{BUCKET}/output/{job}/output/metrics.json"
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=f"output/{job}/output/metrics.json")
    assert json.loads(body["Body"].read()) == REPORT


def test_a_single_instance_job_runs_the_script_directly_and_on_demand(account, aws_requests_match_the_service_model):
    import tasks

    c, requests, _ = account
    tasks.train(c, target="sagemaker")
    # the service-model check (conftest.py) saw the SDK's own requests, not only ours
    assert {"sagemaker CreateTrainingJob", "s3 PutObject"} <= set(aws_requests_match_the_service_model.checked)

    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=requests.of("CreateTrainingJob")[0]["TrainingJobName"])
    assert job["ResourceConfig"]["InstanceCount"] == 1
    assert job["EnableManagedSpotTraining"] is False
    assert "CheckpointConfig" not in job
    assert "MaxWaitTimeInSeconds" not in job["StoppingCondition"]
    drivers = channel_files(job, "sm_drivers")
    assert json.loads(drivers["distributed.json"]) == {}
    assert "basic_script_driver.py" in drivers["sm_train.sh"].decode()


@pytest.mark.parametrize("instance_type, driver, processes", [
    ("ml.g5.12xlarge", "torchrun_driver.py", None),     # 4 GPUs: torchrun starts one process per GPU
    ("ml.g5.2xlarge", "basic_script_driver.py", "-"),   # 1 GPU: the script itself
    ("ml.m5.xlarge", "basic_script_driver.py", "-"),    # CPU
])
def test_processes_per_instance_0_runs_one_process_per_gpu_on_one_instance(moto_account, tmp_path, instance_type,
                                                                            driver, processes):
    create_bucket(objects=DATA)
    create_model_package_group()
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role(), processes_per_instance=0,
                     training_instance_type=instance_type)
    requests = RequestRecorder(boto_session(c))
    sagemaker_jobs.train(c)

    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=requests.of("CreateTrainingJob")[0]["TrainingJobName"])
    drivers = channel_files(job, "sm_drivers")
    assert driver in drivers["sm_train.sh"].decode()
    assert json.loads(drivers["distributed.json"]).get("process_count_per_node", "-") == processes


def test_hyperparameters_are_train_hyperparameters_and_the_tasks_set(moto_account, tmp_path):
    create_bucket(objects=DATA)
    create_model_package_group()
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role(),
                     hyperparameters={"arch": "resnet18", "epochs": 5})
    requests = RequestRecorder(boto_session(c))
    sagemaker_jobs.train(c, assignments=["learning_rate=0.01"])
    assert requests.of("CreateTrainingJob")[0]["HyperParameters"] == {"arch": "resnet18", "epochs": "5", "lr": "0.01"}


def test_a_hyperparameter_given_twice_stops_before_aws_is_asked_for_anything_but_who_is_calling(moto_account,
                                                                                                    tmp_path):
    c = make_context(tmp_path, bucket=BUCKET, hyperparameters={"epochs": 5})
    requests = RequestRecorder(boto_session(c))
    with pytest.raises(Exit, match=re.escape("hyperparameter epochs is given twice: by train.hyperparameters "
                                             "(epochs=5) and by --set (epochs=3); keep one")):
        sagemaker_jobs.train(c, assignments=["epochs=3"])
    with pytest.raises(Exit, match=re.escape("hyperparameter epochs is given twice: as a fixed value and as the "
                                             "range tuning.epochs searches")):
        sagemaker_jobs.tune(c)
    # the credentials are checked first (at once: checking the flags imports torch), nothing else
    assert set(requests.names()) == {"GetCallerIdentity"}


def test_no_data_in_the_bucket_stops_before_any_job_starts(moto_account, tmp_path):
    create_bucket()
    create_model_package_group()
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role())
    requests = RequestRecorder(boto_session(c))
    with pytest.raises(Exit, match=r"no training data at s3://dog-breeds-test-bucket/data/dogImages/: "
                                   r"run `invoke data --upload` first"):
        sagemaker_jobs.train(c)
    assert "CreateTrainingJob" not in requests.names()
    assert registered_versions() == []


def test_metric_definitions_read_the_values_train_py_logs():
    from training.metric_lines import epoch_line

    logged = {split: {"loss": 0.1 + i, "accuracy": 0.2 + i / 10, "top5_accuracy": 0.3 + i / 10}
              for i, split in enumerate(("train", "valid", "test"))}
    line = epoch_line(3, logged, lr=0.0001, seconds=12.5, images_per_second=300)
    for definition in sagemaker_jobs.METRIC_DEFINITIONS:
        split, metric = definition["Name"].split(":")
        found = re.findall(definition["Regex"], line)
        assert [float(value) for value in found] == [pytest.approx(logged[split][metric], abs=1e-4)], definition
    objective_metrics = {metric for metric, _ in sagemaker_jobs.OBJECTIVES.values()}
    assert objective_metrics <= {d["Name"] for d in sagemaker_jobs.METRIC_DEFINITIONS}


def _best_job_of_moto(bucket):
    # moto's tuning job names "FakeTrainingJobName" as its best job without creating it; create that job the way
    # the tuning job would have, so the test can check which model gets recorded.
    boto3.client("sagemaker", region_name=REGION).create_training_job(
        TrainingJobName="FakeTrainingJobName", RoleArn=create_role("tuned"),
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output/"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    return f"s3://{bucket}/output/FakeTrainingJobName/output/model.tar.gz"


def test_tuning_searches_lr_batch_size_epochs_and_weight_decay_for_the_lowest_valid_loss(account, tmp_path):
    c, requests, role = account
    best_model = _best_job_of_moto(BUCKET)
    sagemaker_jobs.tune(c, max_jobs=6, parallel=2, objective="valid_loss")

    name = requests.of("CreateHyperParameterTuningJob")[0]["HyperParameterTuningJobName"]
    tuning = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)
    config = tuning["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "valid:loss"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 2
    ranges = config["ParameterRanges"]
    continuous = {r["Name"]: r for r in ranges["ContinuousParameterRanges"]}
    assert continuous["lr"]["ScalingType"] == "Logarithmic"
    assert float(continuous["lr"]["MinValue"]) == 0.0001
    assert float(continuous["lr"]["MaxValue"]) == 0.1
    assert continuous["weight_decay"]["ScalingType"] == "Logarithmic"
    assert [r["Name"] for r in ranges["IntegerParameterRanges"]] == ["epochs"]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch_size", "Values": ["32", "64", "128", "256"]}]

    definition = tuning["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == sagemaker_jobs.METRIC_DEFINITIONS
    assert definition["RoleArn"] == role
    assert definition["StaticHyperParameters"]["sagemaker_program"] == "training/train.py"
    submitted = definition["StaticHyperParameters"]["sagemaker_submit_directory"]
    assert submitted.startswith(f"s3://{BUCKET}/code/")            # readable by the SageMaker role
    assert all(ch["DataSource"]["S3DataSource"]["S3Uri"].startswith((f"s3://{BUCKET}/code/", f"s3://{BUCKET}/data/"))
               for ch in definition["InputDataConfig"])
    source = boto3.client("s3", region_name=REGION).get_object(
        Bucket=BUCKET, Key=submitted[len(f"s3://{BUCKET}/"):])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(source)) as tar:
        assert {"training/train.py", "inference/preprocessing.py"} <= set(tar.getnames())

    [version] = registered_versions()
    assert version["ModelApprovalStatus"] == "PendingManualApproval"
    assert version["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == best_model
    assert version["CustomerMetadataProperties"]["tuning_job"] == name
    assert version["CustomerMetadataProperties"]["training_job"] == "FakeTrainingJobName"
    assert version["CustomerMetadataProperties"]["source"] == (f"SageMaker tuning job {name}: best training job "
                                                              "FakeTrainingJobName")


def test_tuning_for_accuracy_maximizes_valid_accuracy(account):
    c, requests, _ = account
    import tasks

    _best_job_of_moto(BUCKET)
    tasks.tune(c, max_jobs="2", parallel="1", objective="valid_accuracy")   # strings, as invoke passes them
    sent = requests.of("CreateHyperParameterTuningJob")[0]["HyperParameterTuningJobConfig"]
    assert sent["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "valid:accuracy"}


@pytest.mark.parametrize("kwargs, message", [
    ({"objective": "test_loss"}, "tuning.objective (INVOKE_TUNING_OBJECTIVE): 'test_loss' is not one of "
                                 "valid_loss, valid_accuracy"),
    ({"max_jobs": 2, "parallel": 3}, "tuning.parallel (3) is more than tuning.max_jobs (2)"),
    ({"max_jobs": 0}, "tuning.max_jobs (INVOKE_TUNING_MAX_JOBS): 0 is below 1"),
    ({"max_jobs": "0", "parallel": "0"}, "0 is below 1"),      # as invoke passes flags: text
    ({"max_jobs": "many"}, "--max-jobs: 'many' is not"),
])
def test_impossible_tuning_requests_stop_with_one_line(account, kwargs, message):
    c, requests, _ = account
    with pytest.raises(Exit, match=re.escape(message)):
        sagemaker_jobs.tune(c, **kwargs)
    assert "CreateHyperParameterTuningJob" not in requests.names()


def test_train_py_reads_the_tuned_hyperparameters_as_the_container_passes_them(moto_account, tmp_path):
    from training import train
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    ranges = sagemaker_jobs.tuning_ranges(load(make_context(tmp_path), TuningSettings))
    assert set(ranges) == {"lr", "batch_size", "epochs", "weight_decay"}     # train.py's own names
    picked = {"lr": "0.0123", "batch_size": "128", "epochs": "7", "weight_decay": "0.0005"}
    args = train.parse_args(hyperparameters_to_cli_args({**picked, "arch": "resnet18"}))
    assert (args.lr, args.batch_size, args.epochs, args.weight_decay, args.arch) == (0.0123, 128, 7, 0.0005, "resnet18")


def test_first_use_bootstraps_storage_and_iam_with_terraform_then_reuses_its_role(moto_account, tmp_path):
    from aws_testlib import pinned_workspace, stand_in_terraform

    role = create_role("dog-breeds-sagemaker")                    # what Terraform's iam module would create
    create_bucket(objects=DATA)
    create_model_package_group()                                  # and its model_registry module
    terraform_dir = stand_in_terraform(tmp_path)
    # The stand-in has no modules to target: its whole configuration stands in for storage and iam.
    c = make_context(tmp_path, bucket=BUCKET, terraform_dir=str(terraform_dir), bootstrap_targets=[])
    requests = RequestRecorder(boto_session(c))

    sagemaker_jobs.train(c)
    assert requests.of("CreateTrainingJob")[0]["RoleArn"] == role
    applied = pinned_workspace(terraform_dir).state_version()
    assert applied[1] >= 1

    sagemaker_jobs.train(c)                                       # the role is in the state now: no second apply
    assert requests.of("CreateTrainingJob")[1]["RoleArn"] == role
    assert pinned_workspace(terraform_dir).state_version() == applied


def test_two_tuning_runs_in_the_same_minute_get_distinct_names_within_32_characters(account):
    c, requests, _ = account
    _best_job_of_moto(BUCKET)
    sagemaker_jobs.tune(c, max_jobs=2, parallel=1)
    sagemaker_jobs.tune(c, max_jobs=2, parallel=1)
    first, second = (sent["HyperParameterTuningJobName"] for sent in requests.of("CreateHyperParameterTuningJob"))
    assert first != second
    assert all(len(name) <= 32 and name.startswith("dog-breeds-") for name in (first, second))


@pytest.mark.parametrize("prefix", ["dog-breeds", "a-project-prefix-of-32-characters"[:32]])
def test_tuning_job_names_keep_to_what_sagemaker_accepts_for_any_name_prefix(tmp_path, prefix):
    import botocore.session

    from botocore_model_check import violations

    operation = botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "CreateHyperParameterTuningJob")
    name = sagemaker_jobs.unique_tuning_job_name(make_context(tmp_path, name_prefix=prefix))
    assert name.startswith(prefix[:14].rstrip("-"))
    assert violations(operation.input_shape.members["HyperParameterTuningJobName"], name, "name") == []


def test_a_pytorch_version_without_a_training_image_stops_with_one_line(account):
    c, requests, _ = account
    c.config.aws.pytorch_version = "9.9"
    with pytest.raises(Exit, match=r"^no AWS PyTorch training image for aws.pytorch_version 9.9 on ml.m5.xlarge "
                                   r"\(Unsupported pytorch version: 9.9\): set aws.pytorch_version to a version the "
                                   r"SDK lists, or aws.training_image$"):
        sagemaker_jobs.train(c)
    assert "CreateTrainingJob" not in requests.names()


def test_a_tuning_job_name_in_use_stops_with_one_line(account):
    c, requests, _ = account
    boto_session(c).events.register("before-call.sagemaker.CreateHyperParameterTuningJob", refuse(
        "ResourceInUse", "Hyperparameter tuning job dog-breeds-x already exists"))
    with pytest.raises(Exit) as stopped:
        sagemaker_jobs.tune(c, max_jobs=2, parallel=1)
    assert stopped.value.message == (
        "SageMaker tuning: AWS refused CreateHyperParameterTuningJob (ResourceInUse: Hyperparameter tuning job "
        "dog-breeds-x already exists): a resource of that name exists already: run the task again (it picks a new "
        "name)")


def test_a_training_job_aws_refuses_stops_with_one_line(account, tmp_path):
    c, requests, role = account
    boto_session(c).events.register("before-call.sagemaker.CreateTrainingJob", refuse(
        "ValidationException", f"Could not assume role {role}. Please ensure that the role exists and allows "
                               "principal 'sagemaker.amazonaws.com' to assume the role."))
    with pytest.raises(Exit) as stopped:
        sagemaker_jobs.train(c)
    assert stopped.value.message.startswith(
        f"SageMaker training: AWS refused CreateTrainingJob (ValidationException: Could not assume role {role}.")
    assert stopped.value.message.endswith("): fix what AWS names and run the task again")
    assert "\n" not in stopped.value.message
    assert registered_versions() == []


def test_every_training_job_of_a_spot_tuning_job_checkpoints_to_its_own_prefix(account, monkeypatch):
    """The definition holds one checkpoint URI for all jobs; train.py, in each job, keeps to <uri>/<job name>/."""
    from training import train

    c, requests, _ = account
    _best_job_of_moto(BUCKET)
    sagemaker_jobs.tune(c, max_jobs=2, parallel=1, spot=True)
    sent = requests.of("CreateHyperParameterTuningJob")[0]
    definition = sent["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/checkpoints/{sent['HyperParameterTuningJobName']}/",
        "LocalPath": "/opt/ml/checkpoints"}

    # Inside the container: SageMaker names each job in TRAINING_JOB_NAME and syncs LocalPath with the S3 URI.
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    folders = set()
    for job in ("dog-breeds-261201-001-3a2b1c0d", "dog-breeds-261201-002-9f8e7d6c"):
        monkeypatch.setenv("TRAINING_JOB_NAME", job)
        folders.add(train.parse_args([]).checkpoint_dir)
    assert folders == {"/opt/ml/checkpoints/dog-breeds-261201-001-3a2b1c0d",
                       "/opt/ml/checkpoints/dog-breeds-261201-002-9f8e7d6c"}


# What IAM's policy simulator answers for the Terraform role (terraform/modules/iam) when an administrator asks:
# ecr:GetAuthorizationToken is granted on "*"; PutMetricData is granted only under a namespace condition (no context
# is given, so it does not match), the EC2 network interface actions only with VPC access, and s3:PutObject only on
# output/, checkpoints/ and data-capture/ (not on the bucket's "*").
TERRAFORM_ROLE_ALLOWS = {"ecr:GetAuthorizationToken"}


@pytest.fixture
def iam_simulator(account, monkeypatch):
    """iam:SimulatePrincipalPolicy (which moto lacks) as IAM answers it for the Terraform role; the SDK's own switch
    left unset, as on a user's machine. Returns the simulated requests."""
    c, _, _ = account
    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE", raising=False)
    simulated = []

    def simulate(params, **_):
        body = params["body"]  # the query protocol's parameters, not yet encoded: ActionNames.member.<n>
        members = sorted((key for key in body if key.startswith("ActionNames.member.")),
                         key=lambda key: int(key.rsplit(".", 1)[1]))
        actions = [body[key] for key in members]
        simulated.append(actions)
        return answer({"EvaluationResults": [
            {"EvalActionName": action, "EvalResourceName": "*",
             "EvalDecision": "allowed" if action in TERRAFORM_ROLE_ALLOWS else "implicitDeny"} for action in actions],
            "IsTruncated": False})

    boto_session(c).events.register("before-call.iam.SimulatePrincipalPolicy", simulate)
    return simulated


def test_the_terraform_role_trains_though_the_sdks_simulation_would_refuse_it(account, iam_simulator):
    c, requests, role = account
    sagemaker_jobs.train(c)
    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=requests.of("CreateTrainingJob")[0]["TrainingJobName"])
    assert job["RoleArn"] == role
    channels = {ch["ChannelName"]: ch["DataSource"]["S3DataSource"]["S3Uri"] for ch in job["InputDataConfig"]}
    assert channels["code"].startswith(f"s3://{BUCKET}/code/")      # not output/: the role reads code/
    assert channels["sm_drivers"].startswith(f"s3://{BUCKET}/code/")
    assert "SAGEMAKER_VALIDATE_ROLE" not in os.environ               # restored after the SDK call


def test_with_the_sdks_role_check_on_a_refused_role_stops_with_one_line(account, iam_simulator):
    c, requests, role = account
    c.config.aws.sdk_role_validation = True
    with pytest.raises(Exit) as stopped:
        sagemaker_jobs.train(c)
    message = stopped.value.message
    assert message.startswith(f"the SageMaker SDK refused the role: IAM role '{role}' cannot be used for 'training' "
                              "workloads. Missing permissions: cloudwatch:PutMetricData, ec2:CreateNetworkInterface")
    assert message.endswith("or leave the SDK's check off (aws.sdk_role_validation: false; docs/aws.md says why)")
    assert "\n" not in message and "ecr:GetAuthorizationToken" not in message
    assert iam_simulator and "CreateTrainingJob" not in requests.names()


def _put_output_when_created(c, requests, operation, key_of, body):
    """moto completes a job at once and writes no output: put `body` where the job's output would be."""
    def put(**_):
        sent = requests.of(operation)[-1]
        boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key_of(sent), Body=body)
    boto_session(c).events.register(f"after-call.sagemaker.{operation}", put)


def test_with_no_tracking_server_the_jobs_mlflow_run_is_copied_into_the_projects_store(account, tmp_path,
                                                                                       job_output_archive):
    c, requests, _ = account
    _put_output_when_created(c, requests, "CreateTrainingJob",
                             lambda sent: f"output/{sent['TrainingJobName']}/output/output.tar.gz",
                             job_output_archive.data)
    sagemaker_jobs.train(c)

    sent = requests.of("CreateTrainingJob")[0]
    assert sent["Environment"] == {"MLFLOW_EXPERIMENT_NAME": "dog-breeds"}      # no server: the run stays in output
    output = f"s3://{BUCKET}/output/{sent['TrainingJobName']}/output/output.tar.gz"
    copied = assert_copied(tmp_path / "mlflow", job_output_archive, output)
    # the version names the copy `invoke ui` shows, not the run in the job's own store (gone with the job)
    [version] = registered_versions()
    assert version["CustomerMetadataProperties"]["mlflow_run_id"] == copied.info.run_id
    assert version["CustomerMetadataProperties"]["mlflow_tracking_uri"] == store_uri(tmp_path / "mlflow")
    assert tracking_runs.bring_home(c, "", [output], "the same job again") == {       # copied once only
        job_output_archive.run.info.run_id: {"run_id": copied.info.run_id,
                                             "tracking_uri": store_uri(tmp_path / "mlflow")}}
    assert_copied(tmp_path / "mlflow", job_output_archive, output)


def test_every_tuning_trials_mlflow_run_is_copied_into_the_projects_store(account, tmp_path, job_output_archive):
    c, requests, _ = account
    _best_job_of_moto(BUCKET)
    _put_output_when_created(c, requests, "CreateHyperParameterTuningJob",
                             lambda sent: f"output/{sent['HyperParameterTuningJobName']}-001-0a1b2c3d/output/"
                                          "output.tar.gz", job_output_archive.data)
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key="output/another-job/output/output.tar.gz",
                                                      Body=b"not this tuning job's")
    sagemaker_jobs.tune(c, max_jobs=2, parallel=1)

    sent = requests.of("CreateHyperParameterTuningJob")[0]
    assert sent["TrainingJobDefinition"]["Environment"] == {"MLFLOW_EXPERIMENT_NAME": "dog-breeds"}
    assert_copied(tmp_path / "mlflow", job_output_archive,
                  f"s3://{BUCKET}/output/{sent['HyperParameterTuningJobName']}-001-0a1b2c3d/output/output.tar.gz")


def test_with_the_tracking_server_on_jobs_and_trials_log_to_it(moto_account, tmp_path):
    from aws_testlib import stand_in_terraform

    create_role("dog-breeds-sagemaker")
    create_bucket(objects=DATA)
    create_model_package_group()
    terraform_dir = stand_in_terraform(tmp_path)
    server = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/dog-breeds"   # the stand-in's output
    c = make_context(tmp_path, bucket=BUCKET, terraform_dir=str(terraform_dir), bootstrap_targets=[],
                     terraform_variables={"mlflow_tracking_server": {"enabled": True}})
    requests = RequestRecorder(boto_session(c))
    sagemaker_jobs.train(c)
    _best_job_of_moto(BUCKET)
    sagemaker_jobs.tune(c, max_jobs=2, parallel=1)

    expected = {"MLFLOW_TRACKING_URI": server, "MLFLOW_EXPERIMENT_NAME": "dog-breeds"}
    assert requests.of("CreateTrainingJob")[0]["Environment"] == expected
    assert requests.of("CreateHyperParameterTuningJob")[0]["TrainingJobDefinition"]["Environment"] == expected
    assert not (tmp_path / "mlflow").exists()          # nothing to copy: the runs are on the server


def test_the_staged_source_installs_mlflow_in_training_jobs_and_in_tuning_trials(tmp_path):
    staged = sagemaker_jobs.stage_source(tmp_path / "staged")
    wanted = {line.split("==")[0] for line in (staged / "training" / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    assert wanted == {"mlflow", "sagemaker-mlflow"}
    # ModelTrainer installs training/requirements.txt; the script mode of tuning jobs the top-level one
    assert (staged / "requirements.txt").read_text() == (staged / "training" / "requirements.txt").read_text()
