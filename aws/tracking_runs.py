"""The MLflow runs of AWS training: where jobs log them, and bringing them into the project's store.

With the SageMaker managed MLflow tracking server on (Terraform output `mlflow_tracking_server_arn`), training jobs,
tuning trials and the EC2 host log to it: their environment has MLFLOW_TRACKING_URI=<the server's ARN>, which the
sagemaker-mlflow plugin (training/requirements.txt) reads as a tracking URI. With it off, train.py keeps each run in
a SQLite store in its output folder (<output>/mlflow), which SageMaker packs into the job's output.tar.gz; when
the job ends, the task copies those runs into the project's store (MLFLOW_TRACKING_URI, else tracking.store) so `invoke ui` shows them.
"""

import tarfile
import tempfile
from pathlib import Path

import botocore.exceptions
from aws.bootstrap import bootstrap_outputs
from aws.session import aws_settings, client, split_s3_uri
from configuration.areas import TrackingSettings, load
from training.tracking import DATABASE, STORE_FOLDER, copy_runs, project_tracking_uri

SERVER_OUTPUT = "mlflow_tracking_server_arn"


def tracking_server_arn(c, identity):
    """The tracking server's ARN, "" when it is off (or Terraform does not manage this account's roles:
    aws.sagemaker_role_arn is set, and so no outputs are read)."""
    if aws_settings(c).sagemaker_role_arn:
        return ""
    return bootstrap_outputs(c, identity).get(SERVER_OUTPUT) or ""


def job_environment(server_arn, c):
    """The environment train.py gets on AWS: the experiment, and the tracking server when there is one."""
    environment = {"MLFLOW_EXPERIMENT_NAME": load(c, TrackingSettings).experiment}
    if server_arn:
        environment["MLFLOW_TRACKING_URI"] = server_arn
    return environment


def training_job_output(job):
    """s3:// URI of the output.tar.gz a training job writes (its output folder: metrics.json, mlflow/, ...)."""
    return f"{job['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job['TrainingJobName']}/output/output.tar.gz"


def tuning_trial_outputs(c, output_path, tuning_job_name):
    """The output.tar.gz of every training job of a tuning job: SageMaker names them <tuning job name>-NNN-<id>."""
    bucket, prefix = split_s3_uri(f"{output_path.rstrip('/')}/{tuning_job_name}-")
    pages = client(c, "s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [f"s3://{bucket}/{item['Key']}" for page in pages for item in page.get("Contents", [])
            if item["Key"].endswith("/output/output.tar.gz")]


def bring_home(c, server_arn, archives, what):
    """Copy the MLflow runs in each output archive (s3:// URIs) into the project's store; a line per archive.
    Returns {the run id in the job's store: {"run_id": its id in the project's store, "tracking_uri": that store}},
    which is what a registered version must name for `invoke ui` to find its run."""
    if server_arn:
        print(f"MLflow: {what} logged to the tracking server {server_arn}")
        return {}
    destination = project_tracking_uri(load(c, TrackingSettings))
    copied = {}
    for uri in archives:
        copied.update(_copy_archive_runs(c, uri, destination))
    if copied:
        print(f"MLflow: {len(copied)} run(s) of {what} in {destination} (`invoke ui` shows them)")
    return {old: {"run_id": new, "tracking_uri": destination} for old, new in copied.items()}


def _copy_archive_runs(c, uri, destination):
    with tempfile.TemporaryDirectory(prefix="job-output-") as folder:
        archive = Path(folder) / "output.tar.gz"
        try:
            client(c, "s3").download_file(*split_s3_uri(uri), str(archive))
        except botocore.exceptions.ClientError as error:
            print(f"MLflow: no run copied from {uri} ({error.response['Error'].get('Code', 'unreadable')})")
            return {}
        unpacked = Path(folder) / "output"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.removeprefix("./").split("/")[0] == STORE_FOLDER]
            tar.extractall(unpacked, members=members, filter="data")
        if not (unpacked / STORE_FOLDER / DATABASE).is_file():
            print(f"MLflow: {uri} holds no MLflow store (a job that did not track its run)")
            return {}
        try:
            return copy_runs(unpacked / STORE_FOLDER, destination, copied_from=uri)
        except Exception as error:  # the job and its model are fine; say where its run still is
            print(f"MLflow: could not copy the runs of {uri} into {destination} ({' '.join(str(error).split())[:200]}); "
                  "they are still in that archive")
            return {}
