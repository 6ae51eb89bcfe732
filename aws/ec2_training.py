"""Training on an EC2 host through Systems Manager, with the same train.py and the data downloaded on the host.

The host comes from Terraform (enable_ec2_training_host, applied to aws.ec2_targets only, so the endpoint is left as
it is). It has no inbound access: every step is an `ssm send-command` (AWS-RunShellScript), run in order, each
waited for, its output streamed from CloudWatch Logs when the host can write there and fetched from SSM otherwise.
A step that fails stops the run with the host's own error line. The model archive goes to the bucket's models/
prefix (which the host's role may write, next to the source it was trained from) and is registered as a model
version pending approval (aws/model_registry.py).
The host is destroyed at the end, failed or not, unless --keep.
"""

import shlex
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import botocore.exceptions
from invoke.exceptions import Exit

from aws import model_registry
from aws.sagemaker_jobs import source_archive, stage_source
from aws.tracking_runs import SERVER_OUTPUT, bring_home, job_environment
from aws.session import (aws_settings, client, ec2_settings, poll_until, require_credentials, s3_uri, split_s3_uri,
                         stops_with_one_line)
from configuration.areas import DataSettings, TrainSettings, load
from training import hyperparameters
from aws.terraform import TerraformError
from aws.terraform_root import PLACEHOLDER_MODEL_URL, plan_dir, terraform_variables, workspace

# Where train.py writes on the host, relative to ec2.workdir: the host's own layout, not this machine's paths.
HOST_PATHS = {"model_dir": "build/model", "output_dir": "build/output", "checkpoint_dir": "build/checkpoints",
              "archive": "build/model.tar.gz"}
TERMINAL = {"Success", "Failed", "Cancelled", "TimedOut", "Cancelling"}


def _run_id():
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _host_variables(c, identity, enabled):
    # The targeted modules never read the model: any well-formed URI will do.
    return terraform_variables(c, PLACEHOLDER_MODEL_URL, enable_ec2_training_host=enabled)


def set_training_host(c, identity, ws, enabled):
    """Apply aws.ec2_targets with the training host on or off; returns the outputs afterwards."""
    targets = list(ec2_settings(c).targets)
    plan_file = plan_dir(c) / f"ec2-host-{'on' if enabled else 'off'}.tfplan"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"terraform: training host {'on' if enabled else 'off'} ({', '.join(targets) or 'whole configuration'})",
          flush=True)
    try:
        ws.plan(plan_file, _host_variables(c, identity, enabled), targets=targets)
        ws.apply(plan_file)
        return ws.outputs()
    except TerraformError as error:
        raise Exit(str(error))
    finally:
        plan_file.unlink(missing_ok=True)


def wait_for_ssm(c, instance_id, timeout_s=None, poll_s=None):
    """Until Systems Manager reports the host Online (its agent registered); Exit on timeout."""
    ssm = client(c, "ssm")

    def read_status():
        found = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]).get("InstanceInformationList", [])
        return (found[0].get("PingStatus"), found[0]) if found else ("not registered yet", None)

    timeout_s = timeout_s or ec2_settings(c).ssm_wait_minutes * 60
    poll_s = poll_s if poll_s is not None else aws_settings(c).poll_seconds
    return poll_until(read_status, label=f"host {instance_id} in Systems Manager", done=lambda s: s == "Online",
                      timeout_s=timeout_s, poll_s=poll_s,
                      timeout_message=lambda status: f"host {instance_id} did not come online in Systems Manager "
                                                     f"within {timeout_s / 60:.0f} min: check its instance profile "
                                                     "(AmazonSSMManagedInstanceCore) and its route to SSM")


class RemoteLog:
    """Prints a command's stdout/stderr from CloudWatch Logs as it arrives (when the host can write there)."""

    def __init__(self, c, group, command_id, instance_id):
        self.logs = client(c, "logs") if group else None
        self.group = group
        self.streams = {kind: f"{command_id}/{instance_id}/aws-runShellScript/{kind}" for kind in ("stdout", "stderr")}
        self.tokens = {}
        self.printed = False

    def poll(self):
        if not self.logs:
            return
        for kind, stream in self.streams.items():
            try:
                kwargs = {"logGroupName": self.group, "logStreamName": stream, "startFromHead": True}
                if kind in self.tokens:
                    kwargs["nextToken"] = self.tokens[kind]
                page = self.logs.get_log_events(**kwargs)
            except botocore.exceptions.ClientError:
                continue  # the stream appears with the first line
            self.tokens[kind] = page["nextForwardToken"]
            for event in page.get("events", []):
                print(f"  {event['message'].rstrip()}", flush=True)
                self.printed = True


def run_remote(c, instance_id, title, script, log_group=None, timeout_s=None, poll_s=None):
    """One step on the host; prints its output; Exit with the host's error when it does not succeed."""
    ssm = client(c, "ssm")
    poll_s = poll_s if poll_s is not None else aws_settings(c).poll_seconds
    timeout_s = int(timeout_s or ec2_settings(c).step_timeout_minutes * 60)
    request = {"InstanceIds": [instance_id], "DocumentName": "AWS-RunShellScript", "Comment": title[:100],
               "TimeoutSeconds": 600,  # to start, not to finish: executionTimeout below bounds the run
               "Parameters": {"commands": [script], "executionTimeout": [str(timeout_s)]}}
    if log_group:
        request["CloudWatchOutputConfig"] = {"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": log_group}
    print(f"[{title}]", flush=True)
    command_id = ssm.send_command(**request)["Command"]["CommandId"]
    remote_log = RemoteLog(c, log_group, command_id, instance_id)
    while True:
        try:
            invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except botocore.exceptions.ClientError as error:
            if error.response["Error"]["Code"] != "InvocationDoesNotExist":  # right after sending, briefly
                raise Exit(f"{title}: {error}")
            invocation = {"Status": "Pending"}
        remote_log.poll()
        if invocation["Status"] in TERMINAL:
            break
        time.sleep(poll_s)
    remote_log.poll()
    stdout, stderr = invocation.get("StandardOutputContent", ""), invocation.get("StandardErrorContent", "")
    if not remote_log.printed:
        for line in (stdout + stderr).splitlines():
            print(f"  {line}")
    if invocation["Status"] != "Success":
        last = next((line for line in reversed(stderr.splitlines() or stdout.splitlines()) if line.strip()),
                    invocation.get("StatusDetails", ""))
        raise Exit(f"{title} failed on {instance_id} ({invocation['Status']}, exit "
                   f"{invocation.get('ResponseCode')}): {last.strip()}")
    return invocation


def train_arguments(c, assignments=()):
    """train.py's flags on the host: its paths there, then train.hyperparameters and the task's --set."""
    paths = [f"--{name.replace('_', '-')} {path}" for name, path in HOST_PATHS.items()]
    chosen = hyperparameters.from_settings(load(c, TrainSettings), assignments)
    return " ".join(paths + [shlex.quote(flag) for flag in hyperparameters.as_flags(chosen)])


def metrics_uri_of(model_uri):
    """Where the upload step puts train.py's metrics.json: next to the model."""
    return model_uri.rsplit("/", 1)[0] + "/metrics.json"


def output_archive_uri(model_uri):
    """Where the host uploads its output folder (metrics.json, the run's MLflow store): next to the model."""
    return model_uri.rsplit("/", 1)[0] + "/output.tar.gz"


def steps(c, source_uri, model_uri, assignments=(), server_arn=""):
    """[(title, shell script)] run on the host, in order; train.py logs to the MLflow tracking server `server_arn`
    when there is one, else into the output folder that the last step uploads."""
    host = ec2_settings(c)
    workdir, data_root, python = shlex.quote(host.workdir), shlex.quote(host.data_root), host.python
    data_dir = f"{host.data_root}/dogImages"  # where training/ec2-data-download.sh unpacks the archive
    # POSIX sh throughout: the SSM agent runs AWS-RunShellScript's commands as a script of `sh`, which is dash on
    # Ubuntu (the Deep Learning AMI), and dash has no `-o pipefail`; no step pipes, so `-eu` loses nothing.
    prologue = f"set -eu; export HOME=${{HOME:-/root}}; PY={python}; cd {workdir}"
    metrics_uri = metrics_uri_of(model_uri)
    tracking = " ".join(f"{name}={shlex.quote(value)}" for name, value in job_environment(server_arn, c).items())
    output = HOST_PATHS["output_dir"]
    return [
        ("fetch the code", f"set -eu; rm -rf {workdir}; mkdir -p {workdir}; "
                           f"cd {workdir}; aws s3 cp --only-show-errors {source_uri} source.tar.gz; "
                           "tar -xzf source.tar.gz; "
                           f"PY={python}; $PY -c 'import torch, torchvision; print(\"torch\", torch.__version__)'; "
                           "if [ -f training/requirements.txt ]; then "
                           "$PY -m pip install --quiet -r training/requirements.txt; fi"),
        ("download the data", f"{prologue}; DATA_ROOT={data_root} MODEL_DIR={HOST_PATHS['model_dir']} "
                              f"DATA_URL={shlex.quote(load(c, DataSettings).url)} bash training/ec2-data-download.sh"),
        ("train", f"{prologue}; {tracking} $PY training/train.py --data {shlex.quote(data_dir)} "
                  f"{train_arguments(c, assignments)}"),
        ("upload the model", f"{prologue}; aws s3 cp --only-show-errors {HOST_PATHS['archive']} {model_uri}; "
                             f"aws s3 cp --only-show-errors {output}/metrics.json {metrics_uri}; "
                             f"tar -czf build/output.tar.gz -C {output} .; "
                             f"aws s3 cp --only-show-errors build/output.tar.gz {output_archive_uri(model_uri)}"),
    ]


@stops_with_one_line("EC2 training")
def ec2_train(c, keep=False, assignments=()):
    """Provision the host, train there, upload and register model.tar.gz, destroy the host unless `keep`."""
    identity = require_credentials(c)    # first: at once, where checking the flags imports torch (seconds)
    train_arguments(c, assignments)      # a bad hyperparameter stops here, before a host is paid for
    model_registry.ensure_group(c, identity)
    ws = workspace(c)
    run = f"ec2-{_run_id()}"
    model_uri = s3_uri(c, identity, "models", run, "model.tar.gz")
    source_uri = s3_uri(c, identity, "models", run, "source.tar.gz")
    instance_id = None
    try:
        outputs = set_training_host(c, identity, ws, enabled=True)
        instance_id = outputs.get("training_host_id")
        if not instance_id:
            raise Exit("Terraform reports no training_host_id after enabling the training host")
        with tempfile.TemporaryDirectory(prefix="ec2-source-") as staging:
            archive = source_archive(stage_source(Path(staging) / "source"), Path(staging) / "source.tar.gz")
            client(c, "s3").upload_file(str(archive), *split_s3_uri(source_uri))
        wait_for_ssm(c, instance_id)
        log_group = outputs.get("ec2_log_group_name")
        server = outputs.get(SERVER_OUTPUT) or ""
        for title, script in steps(c, source_uri, model_uri, assignments, server_arn=server):
            run_remote(c, instance_id, title, script, log_group=log_group)
        metrics_uri = metrics_uri_of(model_uri)
        copied = bring_home(c, server, [output_archive_uri(model_uri)], f"EC2 run {run}")
        model_registry.register(c, identity, model_data_url=model_uri, source=f"EC2 training host {instance_id}",
                                generated_by=instance_id, data=load(c, DataSettings).url,
                                report=model_registry.training_report(c, metrics_uri), metrics_uri=metrics_uri,
                                details={"ec2_instance": instance_id, "ec2_run": run}, copied_runs=copied)
    finally:
        if keep:
            print(f"--keep: host {instance_id} keeps running (`aws ssm start-session --target {instance_id}`); "
                  "the next `invoke ec2-train` without --keep, or `invoke destroy --target aws`, removes it")
        else:
            _tear_down(c, identity, ws, instance_id)
    return model_uri


def _tear_down(c, identity, ws, instance_id):
    try:
        set_training_host(c, identity, ws, enabled=False)
        print(f"host {instance_id or '(none)'} destroyed")
    except Exit as error:  # do not hide why the run stopped; say what is left running
        print(f"could not destroy the training host {instance_id}: {error.message}; "
              "run `invoke ec2-train` again or `invoke destroy --target aws`")
