"""`invoke ec2-train`: the host from Terraform (real binary, stand-in configuration), the steps through SSM (moto),
asserted on the commands that reach Systems Manager and their order.

moto gaps, worked around in the open: it has no ssm:DescribeInstanceInformation, so the host's registration is
answered by a botocore hook (first "not registered", then Online); and it executes nothing, so each command
"succeeds" unless a hook answers GetCommandInvocation with the failure a real host would report.
"""

import io
import json
import tarfile
import types

import boto3
import pytest
from invoke.exceptions import Exit

from aws import ec2_training
from aws.session import boto_session
from test_aws_support import (  # noqa: F401 (fixtures)
                              BUCKET, REGION, RequestRecorder, aws_credentials, create_bucket,
                              make_context, moto_account, stand_in_terraform,
                              state_outputs)

OK = types.SimpleNamespace(status_code=200, headers={})


def answer(parsed):
    return OK, parsed


def api_parameters(request):
    """The operation's parameters out of the serialized request a before-call hook sees (SSM speaks JSON)."""
    return json.loads(request["body"] or b"{}")


@pytest.fixture
def host(moto_account, tmp_path, monkeypatch):
    create_bucket()
    instance_id = boto3.client("ec2", region_name=REGION).run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t2.medium")["Instances"][0]["InstanceId"]
    monkeypatch.setenv("TF_VAR_stand_in_training_host_id", instance_id)  # what the AWS provider would report
    terraform_dir = stand_in_terraform(tmp_path)
    # The stand-in has no modules to target: the whole (provider-less) configuration stands in for them.
    c = make_context(tmp_path, terraform_dir=str(terraform_dir), bucket=BUCKET, ec2_targets=[],
                     ec2_hyperparameters={"epochs": 12, "arch": "resnet50"})
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


def test_ec2_train_runs_download_then_train_then_upload_over_ssm_and_tears_the_host_down(host, tmp_path):
    requests = RequestRecorder(boto_session(host.c))
    model_uri = ec2_training.ec2_train(host.c, overrides={"epochs": 3, "batch_size": 32})

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
    assert train.endswith("--epochs 3 --arch resnet50 --batch_size 32")   # the flag wins over the setting
    assert f"aws s3 cp --only-show-errors build/model.tar.gz {model_uri}" in scripts[3]

    assert model_uri.startswith(f"s3://{BUCKET}/models/ec2-") and model_uri.endswith("/model.tar.gz")
    assert json.loads((tmp_path / "model_uri.json").read_text())["model_data_url"] == model_uri
    assert state_outputs(host.terraform_dir).get("training_host_id") is None   # host destroyed


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
    assert not (tmp_path / "model_uri.json").exists()
    assert state_outputs(host.terraform_dir).get("training_host_id") is None


def test_keep_leaves_the_host_running(host):
    import tasks

    tasks.ec2_train(host.c, keep=True, epochs="1")
    assert state_outputs(host.terraform_dir)["training_host_id"] == host.instance_id


def test_the_train_step_is_a_script_that_really_trains_and_archives(tmp_path, tiny_image_folder):
    """The `train` step as the host runs it (bash, in the work folder), here with this machine's python."""
    import subprocess
    import sys

    from aws.sagemaker_jobs import stage_source

    workdir = stage_source(tmp_path / "host" / "work")            # what `fetch the code` unpacks
    data_root = tmp_path / "host" / "data"
    data_root.mkdir()
    (data_root / "dogImages").symlink_to(tiny_image_folder)        # what `download the data` leaves
    c = make_context(tmp_path, ec2_workdir=str(workdir), ec2_data_root=str(data_root), ec2_python=sys.executable,
                     ec2_hyperparameters={"arch": "resnet18", "weights": "none", "mode": "finetune",
                                          "image_size": 32, "num_workers": 0, "threads": 1})
    train_step = dict(ec2_training.steps(c, "s3://b/models/r/source.tar.gz", "s3://b/models/r/model.tar.gz",
                                         overrides={"epochs": 1, "batch_size": 8}))["train"]
    done = subprocess.run(["bash", "-c", train_step], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "valid_loss=" in done.stdout + done.stderr
    with tarfile.open(workdir / "build" / "model.tar.gz") as archive:
        assert {"model.pth", "model_config.json", "code/inference.py"} <= set(archive.getnames())
