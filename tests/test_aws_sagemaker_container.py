"""The jobs `invoke train --target sagemaker` and `invoke tune` create, run the way the training container runs them.

The job is submitted to moto as usual; then what it uploaded (the SDK's sm_drivers channel, the code, the data set)
is laid out in an /opt/ml of its own and the job's entry point runs as PID 1 of a container made of namespaces
(sagemaker_container_testlib.py): the SDK's bash entrypoint and drivers for training jobs, the `sagemaker-training`
toolkit's `train` for the script mode that tuning jobs take.
"""

import re
import tarfile

import boto3
import pytest

from aws import sagemaker_jobs
from aws.session import boto_session
from sagemaker_container_testlib import TrainingContainer
from aws_testlib import (BUCKET, REGION, RequestRecorder, aws_credentials, create_bucket,  # noqa: F401
                         create_model_package_group, create_role, make_context, moto_account)

# Small enough for 2 cores: ResNet-18 at 32 px on 24 training images (8 a class), 3 steps an epoch on each of 2 ranks.
TINY = {"arch": "resnet18", "weights": "none", "mode": "finetune", "image_size": 32, "batch_size": 8,
        "num_workers": 0, "patience": 0}
EPOCHS = 2
CONTAINER_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """{relative path: bytes} of a generated ImageFolder set, as the data channel holds it."""
    from training import synthetic

    root = synthetic.make_synthetic_dataset(tmp_path_factory.mktemp("shapes") / "shapes", classes=3,
                                            split_sizes={"train": 8, "valid": 2}, image_size=40, seed=3)
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*.jpg"))}


def _objects(uri):
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {key[len(prefix):].lstrip("/"): s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _submitted_job(tmp_path, shapes, processes, spot, **overrides):
    """CreateTrainingJob as `invoke train --target sagemaker` sends it, with the generated set as its data."""
    s3 = create_bucket()
    create_model_package_group()
    for relative, body in shapes.items():
        s3.put_object(Bucket=BUCKET, Key=f"data/dogImages/{relative}", Body=body)
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role(), processes_per_instance=processes,
                     hyperparameters={**TINY, **overrides})
    requests = RequestRecorder(boto_session(c))
    sagemaker_jobs.train(c, spot=spot)
    return requests.of("CreateTrainingJob")[0]


def _training_container(root, request):
    channels = {ch["ChannelName"]: _objects(ch["DataSource"]["S3DataSource"]["S3Uri"])
                for ch in request["InputDataConfig"]}
    return TrainingContainer(root, hyperparameters=request["HyperParameters"], channels=channels,
                             instance_type=request["ResourceConfig"]["InstanceType"],
                             job_name=request["TrainingJobName"], environment=request.get("Environment"))


def _entry(request):
    spec = request["AlgorithmSpecification"]
    return spec["ContainerEntrypoint"] + spec.get("ContainerArguments", [])


def _stopped_after_epoch_1(container, command, stop_timeout_s):
    """Run `command` as PID 1 and SIGTERM it once epoch 1 is logged; its exit status, None if still running after
    `stop_timeout_s`."""
    container.start(command)
    try:
        assert container.wait_for_line("epoch=1 ", CONTAINER_TIMEOUT_S), container.log()
        container.stop()
        return container.wait(stop_timeout_s)
    finally:
        container.close()


def _metrics_logged(log):
    """What SageMaker's metric definitions read from the job's log: {metric name: [values]}."""
    return {d["Name"]: [float(v) for v in re.findall(d["Regex"], log)] for d in sagemaker_jobs.METRIC_DEFINITIONS}


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "torchrun-two-processes"])
def test_a_spot_training_job_checkpoints_on_sigterm_to_pid_1_and_its_restart_finishes_the_model(
        moto_account, tmp_path, shapes, processes):
    import torch

    from training.model_archive import build_model_archive

    request = _submitted_job(tmp_path, shapes, processes, spot=True, epochs=EPOCHS)
    container = _training_container(tmp_path / "ml", request)

    # The spot interruption: SIGTERM to the container's PID 1 once the first epoch is done.
    status = _stopped_after_epoch_1(container, _entry(request), STOP_TIMEOUT_S)
    interrupted = container.log()
    assert status is not None, f"SIGTERM to PID 1 did not stop training within {STOP_TIMEOUT_S} s:\n{interrupted}"
    assert "SIGTERM: " in interrupted and f"epoch={EPOCHS} " not in interrupted, interrupted
    assert not re.search(r"\[rank\d\]: Traceback", interrupted), interrupted     # every rank stopped, none crashed
    assert (f"torchrun --nnodes=1 --nproc_per_node={processes} " in interrupted) == (processes > 1), interrupted
    # train.py keeps each job's checkpoints apart: /opt/ml/checkpoints/<training job name>/
    checkpoint = torch.load(container.path(f"/opt/ml/checkpoints/{request['TrainingJobName']}/checkpoint.pt"),
                            weights_only=False)
    assert checkpoint["epoch"] >= 1 and not checkpoint["finished"]

    # SageMaker restarts the job with the checkpoints restored and the model folder empty.
    container.start(_entry(request))
    status = container.wait(CONTAINER_TIMEOUT_S)
    resumed = container.log()
    assert status == 0, resumed
    assert f"resuming from the checkpoint in /opt/ml/checkpoints/{request['TrainingJobName']}" in resumed, resumed
    model_dir = container.path("/opt/ml/model")
    archive = build_model_archive(model_dir, tmp_path / "model.tar.gz")
    with tarfile.open(archive) as tar:
        assert {"model.pth", "model_config.json", "code/inference.py"} <= set(tar.getnames())
    # One line an epoch, each metric read; then the best epoch's line, whose valid:loss (the model kept) is the
    # last value and so the one a tuning job's objective takes.
    logged = _metrics_logged(interrupted + resumed)
    assert all(len(values) == EPOCHS + 1 for name, values in logged.items() if name.startswith("valid:")), logged
    assert all(len(values) == EPOCHS for name, values in logged.items() if name.startswith("train:")), logged
    assert logged["valid:loss"][-1] == min(logged["valid:loss"][:-1])


def test_a_tuning_job_trains_through_the_sagemaker_training_toolkit_where_sigterm_does_not_reach_train_py(
        moto_account, tmp_path, shapes):
    """Tuning jobs cannot name an entrypoint, so the image's own runs the toolkit, which runs train.py with the
    hyperparameters as flags; the toolkit forwards no signal, so a spot interruption there loses the epoch in
    progress (the checkpoint of the epoch before survives). This pins what docs/aws.md says."""
    import json

    from training.model_archive import build_model_archive

    s3 = create_bucket()
    create_model_package_group()
    for relative, body in shapes.items():
        s3.put_object(Bucket=BUCKET, Key=f"data/dogImages/{relative}", Body=body)
    fixed = {name: value for name, value in TINY.items() if name != "batch_size"}    # tuning searches it
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role(), hyperparameters=fixed,
                     tuning={"epochs": [1, EPOCHS], "batch_size": [8]})
    requests = RequestRecorder(boto_session(c))
    boto3.client("sagemaker", region_name=REGION).create_training_job(   # moto's "best" job, which it never creates
        TrainingJobName="FakeTrainingJobName", RoleArn=create_role("tuned"),
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output/"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    sagemaker_jobs.tune(c, max_jobs=1, parallel=1, spot=True)
    definition = requests.of("CreateHyperParameterTuningJob")[0]["TrainingJobDefinition"]
    assert "ContainerEntrypoint" not in definition["AlgorithmSpecification"]

    # What SageMaker hands one training job of the tuning job: the static hyperparameters, the values it picked
    # (as strings) and the objective's name. The source archive is read from a local copy of the same object.
    static = dict(definition["StaticHyperParameters"])
    archive_uri = static["sagemaker_submit_directory"]
    static["sagemaker_submit_directory"] = "/opt/ml/input/sourcedir.tar.gz"
    picked = {"lr": "0.002", "weight_decay": "0.0001", "epochs": str(EPOCHS), "batch_size": "8"}
    channels = {ch["ChannelName"]: _objects(ch["DataSource"]["S3DataSource"]["S3Uri"])
                for ch in definition["InputDataConfig"]}
    container = TrainingContainer(tmp_path / "ml", channels=channels, job_name="dog-breeds-tune-001-abcdef",
                                  hyperparameters={**static, **picked, "_tuning_objective_metric": "valid:loss"})
    container.path("/opt/ml/input/sourcedir.tar.gz").write_bytes(_objects(archive_uri)[""])

    status = _stopped_after_epoch_1(container, container.image_entrypoint(), CONTAINER_TIMEOUT_S)
    log = container.log()
    assert status == 0 and "SIGTERM: " not in log and f"epoch={EPOCHS} " in log, log
    command = next(line for line in log.splitlines() if "training/train.py" in line and "--" in line)
    assert "sagemaker_" not in command and "_tuning_objective_metric" not in command, command
    settings = json.loads(container.path("/opt/ml/output/data/metrics.json").read_text())["settings"]
    assert (settings["lr"], settings["weight_decay"], settings["epochs"], settings["batch_size"]) == (
        0.002, 0.0001, EPOCHS, 8)
    with tarfile.open(build_model_archive(container.path("/opt/ml/model"), tmp_path / "model.tar.gz")) as tar:
        assert {"model.pth", "model_config.json", "code/inference.py"} <= set(tar.getnames())
    logged = _metrics_logged(log)
    assert len(logged["valid:loss"]) == EPOCHS + 1 and len(logged["train:accuracy"]) == EPOCHS, logged


def test_submitting_a_job_does_not_repeat_the_sdks_warnings_about_its_command(moto_account, tmp_path, caplog):
    """The SDK warns that a command replaces entry_script and the hyperparameter flags; under the relay neither
    holds (the driver reads both), so the warnings would send a user looking for a problem that is not there."""
    create_bucket(objects=["data/dogImages/train/a/x.jpg"])
    create_model_package_group()
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role(), hyperparameters={"epochs": 1})
    with caplog.at_level("WARNING"):
        sagemaker_jobs.train(c)
    assert not [r for r in caplog.records if "command" in r.getMessage()], caplog.text
