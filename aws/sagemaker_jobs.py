"""Training and tuning on SageMaker with the SageMaker Python SDK 3 (ModelTrainer, Torchrun, HyperparameterTuner).

The job runs the same training/train.py as everywhere else. Its source is staged keeping the repository's layout
(training/ next to inference/, because train.py imports the shared modules from ../inference), the entry point is
training/train.py, hyperparameters reach it as `--name value` arguments, and the metrics SageMaker records are read
from its log lines with the regexes below. The job's model.tar.gz (SageMaker tars /opt/ml/model, which train.py
fills as a complete model directory) is registered as a version of the model registry (aws/model_registry.py),
pending approval.
"""

import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import botocore.exceptions
from invoke.exceptions import Exit

from aws.bootstrap import bootstrap_outputs
from aws import model_registry
from aws.tracking_runs import (bring_home, job_environment, tracking_server_arn, training_job_output,
                               tuning_trial_outputs)
from aws.session import (REPO_ROOT, aws_settings, boto_session, bucket_name, client, require_credentials, s3_prefix,
                         s3_uri, split_s3_uri, stops_with_one_line)
from configuration.areas import DataSettings, TrainSettings, TuningSettings, load
from configuration.values import parse_value
from training import hyperparameters
from training.metric_lines import SPLIT_METRICS, SPLITS, metric_pattern

ENTRY_SCRIPT = "training/train.py"
# The job's command: the SDK's driver under a relay that hands SageMaker's SIGTERM on to train.py (see the script).
SIGTERM_RELAY = "training/sigterm_relay.py"
SOURCE_FOLDERS = ("training", "inference")
# What train.py needs beyond the training image (mlflow, sagemaker-mlflow): ModelTrainer installs it from
# training/, the script mode of tuning jobs from the top of the source folder (sagemaker-training's `install`).
REQUIREMENTS = "training/requirements.txt"
DATA_CHANNEL = "training"  # train.py reads SM_CHANNEL_TRAINING

# SageMaker records each metric train.py logs (training/metric_lines.py) as `<split>:<metric>`.
METRIC_DEFINITIONS = [{"Name": f"{split}:{metric}", "Regex": metric_pattern(split, metric)}
                      for split in SPLITS for metric in SPLIT_METRICS]
TUNED = ("learning_rate", "weight_decay", "epochs", "batch_size")   # the ranges of the tuning section
OBJECTIVES = {"valid_loss": ("valid:loss", "Minimize"), "valid_accuracy": ("valid:accuracy", "Maximize")}


def data_uri(c, identity):
    """Where `invoke data --upload` puts the data set and the jobs read it.

    aws.data_uri, else s3://<bucket>/data/<name of data.dir>/.
    """
    if aws_settings(c).data_uri:
        return aws_settings(c).data_uri.rstrip("/") + "/"
    return s3_uri(c, identity, "data", load(c, DataSettings).dir.name) + "/"


def require_data(c, uri):
    bucket, prefix = split_s3_uri(uri)
    try:
        listing = client(c, "s3").list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except botocore.exceptions.ClientError as error:
        raise Exit(f"cannot read the training data at {uri} ({error.response['Error']['Code']}): "
                   "run `invoke data --upload` first")
    if not listing.get("KeyCount"):
        raise Exit(f"no training data at {uri}: run `invoke data --upload` first")


def stage_source(destination):
    """Copy what the job runs into `destination`, keeping training/ next to inference/; returns the folder."""
    destination = Path(destination)
    for folder in SOURCE_FOLDERS:
        target = destination / folder
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((REPO_ROOT / folder).iterdir()):
            if path.is_file() and path.suffix in (".py", ".sh", ".txt", ".json"):
                shutil.copy2(path, target / path.name)
    if not (destination / ENTRY_SCRIPT).exists():
        raise Exit(f"{ENTRY_SCRIPT} is missing: nothing to train with")
    if (destination / REQUIREMENTS).exists():
        shutil.copy2(destination / REQUIREMENTS, destination / "requirements.txt")
    return destination


def source_archive(source_dir, archive):
    """tar.gz of a staged source folder, its layout at the top level."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(Path(source_dir).rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(source_dir).as_posix())
    return archive


def upload_source_archive(c, identity, source_dir, run_name, prefix_name="code"):
    """Upload source_dir as s3://<bucket>/<prefix>/<run_name>/sourcedir.tar.gz; returns that URI."""
    uri = s3_uri(c, identity, prefix_name, run_name, "sourcedir.tar.gz")
    bucket, key = split_s3_uri(uri)
    archive = source_archive(source_dir, Path(source_dir).parent / "sourcedir.tar.gz")
    client(c, "s3").upload_file(str(archive), bucket, key)
    return uri


def job_hyperparameters(c, assignments=(), tuned=()):
    """train.hyperparameters and the task's --set, as SageMaker hyperparameters; none of them may be `tuned`."""
    chosen = hyperparameters.from_settings(load(c, TrainSettings), assignments)
    hyperparameters.check_not_tuned(chosen, tuned)
    return hyperparameters.as_sagemaker(chosen)


def training_image(c, instance_type):
    if aws_settings(c).training_image:
        return aws_settings(c).training_image
    from sagemaker.core import image_uris

    version = str(aws_settings(c).pytorch_version)
    try:
        return image_uris.retrieve("pytorch", region=aws_settings(c).region, version=version,
                                   instance_type=instance_type, image_scope="training")
    except ValueError as error:  # a version or instance type the SDK's image list lacks
        raise Exit(f"no AWS PyTorch training image for aws.pytorch_version {version} on {instance_type} "
                   f"({str(error).split('. ')[0]}): set aws.pytorch_version to a version the SDK lists, or "
                   "aws.training_image") from None


def training_role(c, identity):
    """aws.sagemaker_role_arn, else the Terraform output (bootstrapping the storage and IAM modules if needed)."""
    if aws_settings(c).sagemaker_role_arn:
        return aws_settings(c).sagemaker_role_arn
    return bootstrap_outputs(c, identity)["sagemaker_role_arn"]


def _run_id():
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


TUNING_JOB_NAME_MAX_LENGTH = 32  # SageMaker's limit (CreateHyperParameterTuningJob), shorter than a training job's


def unique_tuning_job_name(c):
    """<name_prefix>-<yymmddHHMMSS>-<4 random hex digits>, at most 32 characters: the SDK's own names have minutes
    only (<base>-yymmdd-HHMM), so two runs in one minute collided; the random part separates runs in one second."""
    suffix = f"{datetime.now(timezone.utc):%y%m%d%H%M%S}-{secrets.token_hex(2)}"
    base = aws_settings(c).name_prefix[:TUNING_JOB_NAME_MAX_LENGTH - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


@contextlib.contextmanager
def sdk_role_validation(c):
    """ModelTrainer's own check of the role, on only where aws.sdk_role_validation asks for it; its refusal as Exit.

    The SDK simulates the role (iam:SimulatePrincipalPolicy) for cloudwatch:PutMetricData and the EC2 network
    interface actions on "*", with no resource and no condition context, so it refuses any role that narrows them
    the way the Terraform role does (PutMetricData to the /aws/sagemaker/ namespaces, network interfaces only with
    VPC access). SageMaker itself still checks the role when the job is created (iam:PassRole, sts:AssumeRole).
    SAGEMAKER_VALIDATE_ROLE is the SDK's only switch for it; it is set for the SDK call and restored afterwards.
    """
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError

    before = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "true" if aws_settings(c).sdk_role_validation else "false"
    try:
        yield
    except RoleValidationError as error:
        refusal = " ".join(str(error).split("\n\n")[0].split())
        raise Exit(f"the SageMaker SDK refused the role: {refusal}: grant them to the role (terraform/modules/iam, or "
                   "the role of aws.sagemaker_role_arn), or leave the SDK's check off (aws.sdk_role_validation: "
                   "false; docs/aws.md says why)") from None
    finally:
        if before is None:
            os.environ.pop("SAGEMAKER_VALIDATE_ROLE", None)
        else:
            os.environ["SAGEMAKER_VALIDATE_ROLE"] = before


@functools.lru_cache(maxsize=None)
def _trainer_class():
    from sagemaker.train.model_trainer import ModelTrainer

    class ProjectModelTrainer(ModelTrainer):
        """ModelTrainer that stages code and drivers under the session's code/ prefix, always.

        ModelTrainer simulates s3:PutObject for the role on the whole default bucket and, when an administrator's
        simulation says no (the Terraform role writes only output/, checkpoints/ and data-capture/), stages under
        the output path instead. The role reads code/, which is where the project keeps what jobs run.
        """

        def _resolve_staging_bucket(self):
            return self.sagemaker_session.default_bucket(), None

    return ProjectModelTrainer


def gpus_per_instance(instance_type, region):
    """The instance type's GPU count from the SDK's table; None for a type it lacks (0 for a CPU type)."""
    from sagemaker.core import instance_types_gpu_info

    known = instance_types_gpu_info.retrieve(region).get(instance_type)
    if known:
        return known["Count"]
    return None if instance_type.startswith(("ml.g", "ml.p")) else 0


def uses_torchrun(instances, processes, instance_type, region):
    """Torchrun for more than one process in all: several instances, processes_per_instance > 1, or (0) one per GPU
    on a multi-GPU type. Torchrun without a process count starts SM_NUM_GPUS processes (the SDK's torchrun_driver's
    get_process_count), so a GPU type the SDK's table lacks gets it too: one process on a one-GPU instance."""
    if instances > 1 or processes > 1:
        return True
    gpus = gpus_per_instance(instance_type, region)
    return processes == 0 and (gpus is None or gpus > 1)


def model_trainer(c, identity, source_dir, *, hyperparameters, instances=1, spot=False, checkpoint_uri=None,
                  environment=None):
    """A configured ModelTrainer (nothing is started yet); with `spot`, checkpoints go to `checkpoint_uri`;
    `environment` is the job's (train.py's MLflow tracking server and experiment)."""
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.training.configs import (CheckpointConfig, Compute, MetricDefinition, OutputDataConfig,
                                                 SourceCode, StoppingCondition, Tag)
    from sagemaker.train.constants import SM_DRIVERS_CONTAINER_PATH
    from sagemaker.train.distributed import Torchrun

    if instances < 1:
        raise Exit(f"--instances must be at least 1, not {instances}")
    bucket = bucket_name(c, identity)
    prefix = aws_settings(c).name_prefix
    if source_dir.startswith("s3://"):
        requirements = None
    elif (Path(source_dir) / REQUIREMENTS).exists():
        requirements = REQUIREMENTS
    else:
        requirements = None
    instance_type = aws_settings(c).training_instance_type
    max_run_s = int(aws_settings(c).max_run_minutes * 60)
    processes = int(aws_settings(c).processes_per_instance or 0)
    distributed = (Torchrun(process_count_per_node=processes or None)
                   if uses_torchrun(instances, processes, instance_type, aws_settings(c).region) else None)
    driver = f"{SM_DRIVERS_CONTAINER_PATH}/distributed_drivers/" + (
        distributed.driver_script if distributed else "basic_script_driver.py")
    _quiet_command_warnings()
    checkpoint_uri = checkpoint_uri or s3_uri(c, identity, "checkpoints", f"{prefix}-{_run_id()}/")
    with sdk_role_validation(c):
        trainer = _trainer_class()(
            # The SDK uploads the source and its drivers under the code/ prefix, which the SageMaker role may read.
            sagemaker_session=Session(boto_session=boto_session(c), default_bucket=bucket,
                                      default_bucket_prefix=s3_prefix(c, "code").rstrip("/")),
            role=training_role(c, identity),
            base_job_name=prefix,
            training_image=training_image(c, instance_type),
            # sm_train.sh evals the command: exec makes the relay PID 1, and the driver still reads entry_script
            # and the hyperparameters (SM_ENTRY_SCRIPT, SM_HPS); tuning jobs take entry_script (sagemaker_program).
            source_code=SourceCode(source_dir=source_dir, entry_script=ENTRY_SCRIPT, requirements=requirements,
                                   command=f"exec $SM_PYTHON_CMD {SIGTERM_RELAY} $SM_PYTHON_CMD {driver}"),
            distributed=distributed,
            compute=Compute(instance_type=instance_type, instance_count=instances,
                            volume_size_in_gb=aws_settings(c).training_volume_gb,
                            enable_managed_spot_training=True if spot else None),
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=max_run_s,
                max_wait_time_in_seconds=max(max_run_s, int(aws_settings(c).spot_max_wait_minutes * 60))
                if spot else None),
            checkpoint_config=CheckpointConfig(s3_uri=checkpoint_uri) if spot else None,
            output_data_config=OutputDataConfig(s3_output_path=s3_uri(c, identity, "output")),
            hyperparameters=hyperparameters,
            environment=dict(environment or {}),
            tags=[Tag(key="Project", value=prefix)],
        )
    return trainer.with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS])


class _CommandWarnings(logging.Filter):
    """The SDK warns that a command replaces entry_script and the hyperparameters' flags; with the driver under
    the relay neither is true, so those two warnings would only mislead."""

    MISLEADING = ("Both 'command' and 'entry_script' are provided", "Hyperparameters are set but are not passed")

    def filter(self, record):
        return not str(record.getMessage()).startswith(self.MISLEADING)


def _quiet_command_warnings():
    sdk_logger = logging.getLogger("sagemaker.core.utils.utils")
    if not any(isinstance(f, _CommandWarnings) for f in sdk_logger.filters):
        sdk_logger.addFilter(_CommandWarnings())


def _input_data(uri):
    from sagemaker.core.training.configs import InputData

    return [InputData(channel_name=DATA_CHANNEL, data_source=uri)]


def _final_metrics(job):
    return {metric["MetricName"]: metric["Value"] for metric in job.get("FinalMetricDataList", [])}


@stops_with_one_line("SageMaker training")
def train(c, instances=1, spot=False, assignments=()):
    """One SageMaker training job (Torchrun across instances when more than one); registers its model.tar.gz."""
    identity = require_credentials(c)    # first: at once, where checking the flags imports torch (seconds)
    chosen = job_hyperparameters(c, assignments)
    uri = data_uri(c, identity)
    require_data(c, uri)
    model_registry.ensure_group(c, identity)
    from sagemaker.core.utils.exceptions import FailedStatusError  # a 4 s import: only once there is work to do

    server = tracking_server_arn(c, identity)
    with tempfile.TemporaryDirectory(prefix="sagemaker-source-") as staging:
        trainer = model_trainer(c, identity, str(stage_source(staging)), hyperparameters=chosen,
                                instances=instances, spot=spot, environment=job_environment(server, c))
        print(f"SageMaker training: {instances} x {trainer.compute.instance_type}"
              f"{', managed spot' if spot else ''}, data {uri}", flush=True)
        try:
            trainer.train(input_data_config=_input_data(uri), wait=True, logs=True)
        except FailedStatusError as error:
            raise Exit(f"training job failed: {error}")
        except KeyboardInterrupt:
            job = trainer._latest_training_job
            if job is not None:
                _stop_training_job(c, job.training_job_name)
            raise
    name = trainer._latest_training_job.training_job_name
    job = client(c, "sagemaker").describe_training_job(TrainingJobName=name)
    if job["TrainingJobStatus"] != "Completed":
        raise Exit(f"training job {name} ended {job['TrainingJobStatus']}: {job.get('FailureReason', '')}")
    print(f"training job {name} completed; metrics: {_final_metrics(job)}")
    copied = bring_home(c, server, [training_job_output(job)], f"training job {name}")
    register_job(c, identity, job, source=f"SageMaker training job {name}", data=uri, copied_runs=copied)
    return job


def register_job(c, identity, job, *, source, data, details=None, copied_runs=None):
    """Register a completed training job's model.tar.gz with its metrics.json (else SageMaker's final metrics)."""
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    report, metrics_uri = model_registry.job_report(c, artifact)
    metrics = {name.replace(":", "_"): value for name, value in _final_metrics(job).items()}
    return model_registry.register(c, identity, model_data_url=artifact, source=source, data=data,
                                   generated_by=job["TrainingJobArn"], report=report, metrics=metrics,
                                   metrics_uri=metrics_uri, copied_runs=copied_runs,
                                   details={"training_job": job["TrainingJobName"], **(details or {})})


def _stop_training_job(c, name):
    try:
        client(c, "sagemaker").stop_training_job(TrainingJobName=name)
        print(f"\nasked SageMaker to stop training job {name}")
    except Exception as error:  # the job keeps running (and billing): say how to stop it by hand
        print(f"\ncould not stop training job {name} ({error}): "
              f"`aws sagemaker stop-training-job --training-job-name {name}`")


def tuning_ranges(tuning):
    """The ranges of the tuning section under train.py's own names: learning rate and weight decay on a log scale,
    epochs, the batch sizes to try; an empty range is left out of the search."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    kinds = {"learning_rate": lambda low, high: ContinuousParameter(low, high, scaling_type="Logarithmic"),
             "weight_decay": lambda low, high: ContinuousParameter(low, high, scaling_type="Logarithmic"),
             "epochs": IntegerParameter, "batch_size": lambda *sizes: CategoricalParameter(list(sizes))}
    return {hyperparameters.canonical_name(name): kinds[name](*getattr(tuning, name))
            for name in TUNED if getattr(tuning, name)}


@stops_with_one_line("SageMaker tuning")
def tune(c, max_jobs=None, parallel=None, objective=None, spot=False, assignments=()):
    """A hyperparameter tuning job over tuning_ranges; registers the best training job's model.tar.gz."""
    flags = {"max_jobs": max_jobs if max_jobs is None else parse_value("--max-jobs", max_jobs, int),
             "parallel": parallel if parallel is None else parse_value("--parallel", parallel, int),
             "objective": objective}
    # replace() runs the area's own checks: choices, minimums, parallel <= max_jobs
    tuning = dataclasses.replace(load(c, TuningSettings), **{k: v for k, v in flags.items() if v is not None})
    max_jobs, parallel = tuning.max_jobs, tuning.parallel
    metric, direction = OBJECTIVES[tuning.objective]
    identity = require_credentials(c)    # before the ranges and flags: they import the SDK and torch (seconds)
    ranges = tuning_ranges(tuning)
    chosen = job_hyperparameters(c, assignments, tuned=[name for name in TUNED if getattr(tuning, name)])
    uri = data_uri(c, identity)
    require_data(c, uri)
    model_registry.ensure_group(c, identity)
    from sagemaker.train.tuner import HyperparameterTuner

    server = tracking_server_arn(c, identity)
    with tempfile.TemporaryDirectory(prefix="sagemaker-source-") as staging:
        # Tuning jobs start the script the classic way (sagemaker_submit_directory); upload that archive under the
        # code/ prefix ourselves, since the SDK would put it outside the prefixes the SageMaker role may read.
        name = unique_tuning_job_name(c)
        source = upload_source_archive(c, identity, stage_source(Path(staging) / "source"), name)
        # The tuning job gives each of its training jobs this one checkpoint URI (the SDK copies the trainer's
        # CheckpointConfig into the job definition as it is); train.py keeps each job apart inside it, in a
        # folder named after the job (TRAINING_JOB_NAME), which SageMaker syncs to <uri>/<job name>/.
        trainer = model_trainer(c, identity, source, hyperparameters=chosen, instances=1, spot=spot,
                                checkpoint_uri=s3_uri(c, identity, "checkpoints", f"{name}/"),
                                environment=job_environment(server, c))
        tuner = HyperparameterTuner(
            model_trainer=trainer, objective_metric_name=metric, objective_type=direction,
            hyperparameter_ranges=ranges, metric_definitions=METRIC_DEFINITIONS,
            strategy=tuning.strategy, max_jobs=max_jobs, max_parallel_jobs=parallel,
            early_stopping_type="Off")
        print(f"SageMaker tuning: {max_jobs} jobs, {parallel} at a time, {direction.lower()} {metric}", flush=True)
        tuner.tune(inputs=_input_data(uri), job_name=name, wait=False)
    tuning_job = wait_for_tuning_job(c, name)
    best = tuning_job.get("BestTrainingJob") or {}
    if not best.get("TrainingJobName"):
        raise Exit(f"tuning job {name} ended without a best training job: "
                   f"{tuning_job.get('FailureReason') or 'no job reported the objective metric'}")
    try:
        job = client(c, "sagemaker").describe_training_job(TrainingJobName=best["TrainingJobName"])
    except botocore.exceptions.ClientError as error:
        raise Exit(f"best training job {best['TrainingJobName']} of {name}: {error}")
    final = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    print(f"best training job {best['TrainingJobName']}: {final.get('MetricName')}={final.get('Value')} "
          f"with {best.get('TunedHyperParameters')}")
    tuned = " ".join(f"{key}={value}" for key, value in sorted(best.get("TunedHyperParameters", {}).items()))
    copied = bring_home(c, server, tuning_trial_outputs(c, s3_uri(c, identity, "output"), name), f"tuning job {name}")
    register_job(c, identity, job, source=f"SageMaker tuning job {name}: best training job {best['TrainingJobName']}",
                 data=uri, details={"tuning_job": name, "hyperparameters": tuned}, copied_runs=copied)
    return tuning_job


def wait_for_tuning_job(c, name, poll_s=None):
    """Poll the tuning job, printing its job counters and best objective as they change."""
    sagemaker = client(c, "sagemaker")
    poll_s = poll_s if poll_s is not None else aws_settings(c).poll_seconds
    last = None
    while True:
        job = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        counters = job.get("TrainingJobStatusCounters", {})
        best = (job.get("BestTrainingJob") or {}).get("FinalHyperParameterTuningJobObjectiveMetric", {})
        line = (f"tuning job {name}: {job['HyperParameterTuningJobStatus']}; jobs completed "
                f"{counters.get('Completed', 0)}, running {counters.get('InProgress', 0)}, failed "
                f"{counters.get('NonRetryableError', 0) + counters.get('RetryableError', 0)}"
                + (f"; best {best.get('MetricName')}={best.get('Value')}" if best else ""))
        if line != last:
            print(line, flush=True)
            last = line
        if job["HyperParameterTuningJobStatus"] in ("Completed", "Stopped"):
            return job
        if job["HyperParameterTuningJobStatus"] == "Failed":
            raise Exit(f"tuning job {name} failed: {job.get('FailureReason', 'no reason given')}")
        time.sleep(poll_s)
