"""`invoke ec2-train`: the host from Terraform (real binary, stand-in configuration), the steps through SSM (moto),
asserted on the commands that reach Systems Manager and their order.

moto gaps, worked around in the open: it has no ssm:DescribeInstanceInformation, so the host's registration is
answered by a botocore hook (first "not registered", then Online); and it executes nothing, so each command
"succeeds" unless a hook answers GetCommandInvocation with the failure a real host would report.
"""

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import boto3
import pytest
from invoke.exceptions import Exit

from aws import ec2_training
from aws.session import boto_session
from aws_testlib import (  # noqa: F401 (fixtures)
                              BUCKET, REGION, RequestRecorder, answer, assert_copied, aws_credentials, create_bucket,
                              create_model_package_group, make_context, moto_account, refuse,
                              registered_versions, stand_in_terraform, state_outputs)
from training.tracking import store_uri

def api_parameters(request):
    """The operation's parameters out of the serialized request a before-call hook sees (SSM speaks JSON)."""
    return json.loads(request["body"] or b"{}")


@pytest.fixture
def host(moto_account, tmp_path, monkeypatch):
    create_bucket()
    create_model_package_group()
    instance_id = boto3.client("ec2", region_name=REGION).run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t2.medium")["Instances"][0]["InstanceId"]
    monkeypatch.setenv("TF_VAR_stand_in_training_host_id", instance_id)  # what the AWS provider would report
    terraform_dir = stand_in_terraform(tmp_path)
    # The stand-in has no modules to target: the whole (provider-less) configuration stands in for them.
    c = make_context(tmp_path, terraform_dir=str(terraform_dir), bucket=BUCKET, ec2={"targets": []},
                     hyperparameters={"epochs": 12, "arch": "resnet50"})
    polls = []

    def registration(params, **_):
        polls.append(api_parameters(params)["Filters"])
        status = [] if len(polls) == 1 else [{"InstanceId": instance_id, "PingStatus": "Online"}]
        return answer({"InstanceInformationList": status})

    boto_session(c).events.register("before-call.ssm.DescribeInstanceInformation", registration)
    return types.SimpleNamespace(c=c, instance_id=instance_id, terraform_dir=terraform_dir, polls=polls)


def sent_commands(instance_id):
    commands = boto3.client("ssm", region_name=REGION).list_commands(InstanceId=instance_id)["Commands"]
    return sorted(commands, key=lambda command: command["RequestedDateTime"])


def upload_metrics_when_the_upload_step_runs(c, metrics):
    """What the host's upload step puts next to the model (moto runs no command): train.py's metrics.json."""
    def upload(params, **_):
        script = api_parameters(params)["Parameters"]["commands"][0]
        for uri in re.findall(r"s3://\S+/metrics\.json", script):
            bucket, _, key = uri[len("s3://"):].partition("/")
            boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=json.dumps(metrics))

    boto_session(c).events.register("before-call.ssm.SendCommand", upload)


def upload_output_when_the_upload_step_runs(c, body):
    """The host's output folder (its run's MLflow store) that the upload step puts next to the model."""
    def upload(params, **_):
        script = api_parameters(params)["Parameters"]["commands"][0]
        for uri in re.findall(r"s3://\S+/output\.tar\.gz", script):
            bucket, _, key = uri[len("s3://"):].partition("/")
            boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=body)

    boto_session(c).events.register("before-call.ssm.SendCommand", upload)


def test_ec2_train_runs_download_then_train_then_upload_over_ssm_and_tears_the_host_down(host, tmp_path,
                                                                                         job_output_archive):
    requests = RequestRecorder(boto_session(host.c))
    upload_metrics_when_the_upload_step_runs(host.c, {"final": {"valid_accuracy": 0.5, "valid_loss": 1.2}})
    upload_output_when_the_upload_step_runs(host.c, job_output_archive.data)
    model_uri = ec2_training.ec2_train(host.c, assignments=["batch-size=32"])

    assert host.polls[0] == [{"Key": "InstanceIds", "Values": [host.instance_id]}]
    assert len(host.polls) == 2                                   # waited until SSM saw the host Online
    commands = sent_commands(host.instance_id)
    assert [command["Comment"] for command in commands] == [
        "fetch the code", "download the data", "train", "upload the model"]
    assert all(command["DocumentName"] == "AWS-RunShellScript" for command in commands)
    # moto keeps no CloudWatchOutputConfig: read it from the requests sent
    assert [sent["CloudWatchOutputConfig"] for sent in requests.of("SendCommand")] == 4 * [
        {"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": "/dog-breeds/ec2-training"}]
    scripts = [command["Parameters"]["commands"][0] for command in commands]

    source_uri = model_uri.replace("model.tar.gz", "source.tar.gz")
    assert f"aws s3 cp --only-show-errors {source_uri} source.tar.gz" in scripts[0]
    key = source_uri[len(f"s3://{BUCKET}/"):]
    source = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(source)) as tar:
        assert {"training/train.py", "inference/preprocessing.py"} <= set(tar.getnames())

    assert ("DATA_ROOT=/opt/dog-breeds-data MODEL_DIR=build/model DATA_URL=https://s3-us-west-1.amazonaws.com/"
            "udacity-aind/dog-project/dogImages.zip bash training/ec2-data-download.sh") in scripts[1]
    train = scripts[2]
    assert "training/train.py --data /opt/dog-breeds-data/dogImages" in train
    assert "--archive build/model.tar.gz" in train
    assert train.endswith("--epochs 12 --arch resnet50 --batch-size 32")   # train.hyperparameters, then --set
    assert f"aws s3 cp --only-show-errors build/model.tar.gz {model_uri}" in scripts[3]
    assert " MLFLOW_EXPERIMENT_NAME=dog-breeds $PY training/train.py" in train
    assert "MLFLOW_TRACKING_URI" not in train         # no tracking server: the host's run comes home in its output
    assert_copied(tmp_path / "mlflow", job_output_archive, model_uri.replace("model.tar.gz", "output.tar.gz"))

    assert model_uri.startswith(f"s3://{BUCKET}/models/ec2-") and model_uri.endswith("/model.tar.gz")
    [version] = registered_versions()
    assert version["ModelApprovalStatus"] == "PendingManualApproval"
    assert version["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == model_uri
    properties = version["CustomerMetadataProperties"]
    assert properties["source"] == f"EC2 training host {host.instance_id}"
    assert properties["data"] == "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
    assert float(properties["valid_accuracy"]) == 0.5                     # the metrics.json the host uploaded
    metrics_uri = model_uri.replace("model.tar.gz", "metrics.json")
    assert version["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == metrics_uri
    assert state_outputs(host.terraform_dir).get("training_host_id") is None   # host destroyed


def test_a_hyperparameter_given_twice_stops_ec2_train_before_any_host_is_provisioned(host, tmp_path):
    requests = RequestRecorder(boto_session(host.c))
    with pytest.raises(Exit, match="^hyperparameter epochs is given twice: by train.hyperparameters"):
        ec2_training.ec2_train(host.c, assignments=["epochs=3"])
    assert requests.names() == ["GetCallerIdentity"]      # who is calling (checked first, at once), nothing more


def test_a_failing_step_stops_with_the_hosts_error_and_still_removes_the_host(host, tmp_path):
    failing = set()

    def remember_train_command(parsed, **_):
        if parsed["Command"]["Comment"] == "train":
            failing.add(parsed["Command"]["CommandId"])

    def report_failure(params, **_):
        params = api_parameters(params)
        if params["CommandId"] in failing:
            return answer({"CommandId": params["CommandId"], "InstanceId": params["InstanceId"], "Status": "Failed",
                           "StatusDetails": "Failed", "ResponseCode": 2, "StandardOutputContent": "epoch 1/3\n",
                           "StandardErrorContent": "Traceback ...\ntrain.py: error: no train/ folder in /data\n"})
        return None

    events = boto_session(host.c).events
    events.register("after-call.ssm.SendCommand", remember_train_command)
    events.register("before-call.ssm.GetCommandInvocation", report_failure)

    with pytest.raises(Exit, match=rf"^train failed on {host.instance_id} \(Failed, exit 2\): "
                                   r"train.py: error: no train/ folder in /data$"):
        ec2_training.ec2_train(host.c)
    assert [c["Comment"] for c in sent_commands(host.instance_id)] == ["fetch the code", "download the data", "train"]
    assert registered_versions() == []
    assert state_outputs(host.terraform_dir).get("training_host_id") is None


def test_keep_leaves_the_host_running(host):
    import tasks

    tasks.ec2_train(host.c, keep=True, set_=["batch_size=4"])
    assert state_outputs(host.terraform_dir)["training_host_id"] == host.instance_id


# The SSM agent writes AWS-RunShellScript's commands to a script file and runs it with `sh`: dash on Ubuntu, the
# Deep Learning AMI's system. /bin/sh is dash on the machines that run the suite; elsewhere .ci/setup installs dash.
SSM_SHELL = "/bin/sh" if Path("/bin/sh").resolve().name == "dash" else shutil.which("dash")

# The one command of the steps that reaches AWS, `aws s3 cp`, against a folder standing for the bucket.
FAKE_AWS_CLI = """#!{python}
import shutil, sys
from pathlib import Path
bucket_root = Path({bucket_root!r})
with open(bucket_root.parent / "aws-calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
args = [arg for arg in sys.argv[1:] if arg != "--only-show-errors"]
if args[:2] != ["s3", "cp"] or len(args) != 4:
    sys.exit("fake aws: only `aws s3 cp SOURCE DESTINATION` is expected, not " + " ".join(sys.argv[1:]))
source, destination = (bucket_root / arg[len("s3://"):] if arg.startswith("s3://") else Path(arg) for arg in args[2:])
if not source.is_file():
    sys.exit(f"fatal error: An error occurred (404) when calling the HeadObject operation: Key {{source}} does not exist")
destination.parent.mkdir(parents=True, exist_ok=True)
shutil.copyfile(source, destination)
"""


def run_as_the_ssm_agent_does(script, folder, env):
    """The step's commands in a script file, run by dash; returns the CompletedProcess."""
    folder.mkdir(parents=True, exist_ok=True)
    script_file = folder / "_script.sh"
    script_file.write_text(script + "\n")
    script_file.chmod(0o700)
    return subprocess.run([SSM_SHELL, str(script_file)], capture_output=True, text=True, timeout=300, cwd=folder,
                          env=env)


@pytest.fixture
def data_archive_url(tiny_image_folder):
    """The tiny data set as a zip on a loopback HTTP server (what DATA_URL points the host at)."""
    import zipfile

    from bench.loopback_servers import ImageServer

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in sorted(tiny_image_folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"dogImages/{path.relative_to(tiny_image_folder)}")
    with ImageServer() as server:
        server.image("/dogImages.zip", zipped.getvalue(), content_type="application/zip")
        yield server.url("/dogImages.zip")


def test_the_steps_run_under_dash_as_the_ssm_agent_runs_them_and_upload_a_trained_model(tmp_path, data_archive_url):
    """All four steps, each a script file run by dash, with this machine's python as the host's python3 and `aws`
    faked: the code comes from the (fake) bucket, the data from an HTTP URL, train.py trains, the archive goes up."""
    from aws.sagemaker_jobs import source_archive, stage_source

    assert SSM_SHELL, "dash is missing: .ci/setup installs it"
    host = tmp_path / "host"
    bucket_root = tmp_path / "s3"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "aws").write_text(FAKE_AWS_CLI.format(python=sys.executable, bucket_root=str(bucket_root)))
    (fake_bin / "aws").chmod(0o755)
    (fake_bin / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # the host's python3, with torch
    (fake_bin / "python3").chmod(0o755)
    source_uri, model_uri = "s3://b/models/r/source.tar.gz", "s3://b/models/r/model.tar.gz"
    (bucket_root / "b/models/r").mkdir(parents=True)
    source_archive(stage_source(tmp_path / "staged"), bucket_root / "b/models/r/source.tar.gz")

    c = make_context(tmp_path, ec2={"workdir": str(host / "work"), "data_root": str(host / "data")},
                     hyperparameters={"arch": "resnet18", "weights": "none", "mode": "finetune",
                                      "image_size": 32, "num_workers": 0, "threads": 1},
                     data={"url": data_archive_url})
    env = {"PATH": f"{fake_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    for number, (title, script) in enumerate(ec2_training.steps(c, source_uri, model_uri,
                                                                 ["epochs=1", "batch_size=8"])):
        done = run_as_the_ssm_agent_does(script, host / "ssm" / str(number), env)
        assert done.returncode == 0, f"{title}: {(done.stdout + done.stderr)[-2000:]}"
        if title == "train":
            assert "valid_loss=" in done.stdout + done.stderr

    assert (tmp_path / "aws-calls.log").read_text().splitlines() == [
        f"s3 cp --only-show-errors {source_uri} source.tar.gz",
        f"s3 cp --only-show-errors build/model.tar.gz {model_uri}",
        "s3 cp --only-show-errors build/output/metrics.json s3://b/models/r/metrics.json",
        "s3 cp --only-show-errors build/output.tar.gz s3://b/models/r/output.tar.gz"]
    with tarfile.open(bucket_root / "b/models/r/model.tar.gz") as archive:
        assert {"model.pth", "model_config.json", "code/inference.py"} <= set(archive.getnames())
    metrics = json.loads((bucket_root / "b/models/r/metrics.json").read_text())
    assert metrics["final"]["epochs_run"] == 1
    # no tracking server: the run is in the output folder's own store, which goes up with the output
    assert metrics["mlflow"]["tracking_uri"] == store_uri(host / "work" / "build" / "output" / "mlflow")
    with tarfile.open(bucket_root / "b/models/r/output.tar.gz") as archive:
        assert {"./metrics.json", "./mlflow/mlflow.db"} <= set(archive.getnames())


def test_a_failing_command_in_a_step_fails_the_step_under_dash(tmp_path):
    """set -e holds under dash: the step stops at the first failing command with its status."""
    c = make_context(tmp_path, ec2={"workdir": str(tmp_path / "work")})
    fetch = dict(ec2_training.steps(c, "s3://b/models/r/source.tar.gz", "s3://b/models/r/model.tar.gz"))[
        "fetch the code"]
    env = {"PATH": f"{tmp_path / 'no-aws-here'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = run_as_the_ssm_agent_does(fetch, tmp_path / "ssm", env)
    assert done.returncode == 127 and "aws: not found" in done.stderr
    assert not (tmp_path / "work" / "source.tar.gz").exists()


def test_a_command_ssm_refuses_stops_with_one_line_and_still_removes_the_host(host, tmp_path):
    boto_session(host.c).events.register("before-call.ssm.SendCommand", refuse(
        "InvalidInstanceId", "Instances not in a valid state for account"))
    with pytest.raises(Exit) as stopped:
        ec2_training.ec2_train(host.c)
    assert stopped.value.message == (
        "EC2 training: AWS refused SendCommand (InvalidInstanceId: Instances not in a valid state for account): "
        "fix what AWS names and run the task again")
    assert state_outputs(host.terraform_dir).get("training_host_id") is None
