"""Every training run is an MLflow run: the settings, the data set's fingerprint, each epoch's metrics, and at the end
the output folder and the model directory as artifacts.

Only rank 0 talks to MLflow (torchrun's other ranks log nothing). The run goes to --tracking-uri: a server (the
SageMaker managed tracking server's ARN, with the sagemaker-mlflow plugin), a project's SQLite store, or, when none
is given, a SQLite store inside the output folder (`<output-dir>/mlflow/`), so a SageMaker job or the EC2 host
without a server still keeps its run, and the task that started it copies it into the project's store
(`copy_runs`). A run resumed from a checkpoint goes on in the same MLflow run (the checkpoint keeps its id).

mlflow is imported when a run opens (seconds, and rank 0 only), and this module's top needs no torch: the AWS side
copies runs with it.
"""

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import unquote

from training.metric_lines import SPLITS

log = logging.getLogger("train")

DEFAULT_EXPERIMENT = "dog-breeds"
STORE_FOLDER = "mlflow"        # the store train.py keeps in its output folder when no tracking URI is given
DATABASE = "mlflow.db"
ARTIFACTS = "artifacts"
DATASET_TAG = "dataset_digest"
SOURCE_RUN_TAG = "copied_from_run"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (mlflow missing, a URI it cannot open): one line for the user."""


def store_uri(store_dir):
    """The tracking URI of the SQLite store in `store_dir` (mlflow.db, artifacts beside it)."""
    return f"sqlite:///{Path(store_dir).resolve() / DATABASE}"


def project_tracking_uri(tracking):
    """Where the project's runs and registered models are: MLFLOW_TRACKING_URI when set (a team's server wins, as
    it does for every MLflow tool), else the store of `tracking` (TrackingSettings)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or store_uri(tracking.store)


def sqlite_store_dir(tracking_uri):
    """The folder of a SQLite store's database, or None for any other tracking URI."""
    prefix = "sqlite:///"       # then the path: sqlite:////abs/mlflow.db, or sqlite:///relative/mlflow.db
    if not tracking_uri.startswith(prefix):
        return None
    return Path(unquote(tracking_uri[len(prefix):].split("?")[0])).resolve().parent


def output_store_uri(output_dir):
    """The store a run keeps in its output folder when it is given no tracking URI."""
    return store_uri(Path(output_dir) / STORE_FOLDER)


def dataset_fingerprint(data):
    """{digest, classes, <split>_samples}: the digest covers the class folders and every file's split, relative path
    and size (not its mtime: the same files downloaded twice are the same data)."""
    digest = hashlib.sha256(json.dumps(data.class_folders).encode())
    for split in sorted(data.splits):
        for path, _ in data.splits[split].samples:
            digest.update(f"\0{split}\0{path.relative_to(data.root).as_posix()}\0{path.stat().st_size}".encode())
    counts = {f"{split}_samples": len(data.splits[split]) for split in SPLITS if split in data.splits}
    return {"digest": digest.hexdigest()[:16], "classes": len(data.class_folders), **counts}


def _client(tracking_uri):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError("mlflow is not installed: pip install -r training/requirements.txt") from None
    return MlflowClient(tracking_uri)


def experiment_id(client, tracking_uri, name):
    """The experiment's id, creating it first; in a SQLite store its artifacts go beside the database (MLflow's
    default would be ./mlruns of whatever the working directory is)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    store = sqlite_store_dir(tracking_uri)
    location = (store / ARTIFACTS / name).as_uri() if store else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:       # another process created it meanwhile (one store shared by concurrent runs)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class RunTracking:
    """The MLflow run of one training run, on rank 0; on every other rank each method does nothing.

    `record` is what metrics.json keeps under "mlflow": {tracking_uri, experiment_id, run_id}, `dataset` what it keeps
    under "dataset": {digest, classes, <split>_samples}. As a context, a run that an exception leaves ends KILLED
    (one of `interruptions`: SIGTERM, Ctrl-C; a resumed run goes on) or FAILED."""

    def __init__(self, client=None, record=None, interruptions=(), dataset=None):
        self.client = client
        self.record = record or {}
        self.dataset = dataset or {}
        self.interruptions = interruptions
        self.ended = False

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and not self.ended:
            self.end("KILLED" if issubclass(kind, self.interruptions) else "FAILED")

    @property
    def run_id(self):
        return self.record.get("run_id")

    def log_epochs(self, rows):
        """Each metrics row (metrics.json's history) at step=epoch, names as in the log line (train_loss, lr, ...)."""
        if not self.client or not rows:
            return
        from mlflow.entities import Metric

        metrics = [Metric(key, float(value), _now_ms(), row["epoch"]) for row in rows
                   for key, value in row.items() if key != "epoch" and isinstance(value, (int, float))]
        for start in range(0, len(metrics), 1000):      # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, report, outputs, model_dir):
        """The best epoch's metrics (best_<name>), the evaluation's numbers, the files and folders this run wrote
        in its output folder (`outputs`; those that exist) under output/ and the model directory under model/;
        the run ends FINISHED. Only what this run wrote: the folder may hold an earlier run's files."""
        if not self.client:
            return
        from mlflow.entities import Metric

        final = {"best_epoch": report["final"]["best_epoch"], "epochs_run": report["final"]["epochs_run"],
                 **{f"best_{key}": value for key, value in report["final"].items()
                    if key.split("_")[0] in SPLITS}}
        final.update({f"evaluation_{key}": value for key, value in (report.get("evaluation") or {}).items()
                      if isinstance(value, (int, float)) and not isinstance(value, bool)})
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), _now_ms(), 0)
                                                    for key, value in final.items()])
        for entry in map(Path, outputs):
            if not entry.exists():
                continue
            if entry.is_dir():
                self.client.log_artifacts(self.run_id, str(entry), f"output/{entry.name}")
            else:
                self.client.log_artifact(self.run_id, str(entry), "output")
        self.client.log_artifacts(self.run_id, str(model_dir), "model")
        self.end("FINISHED")
        log.info("MLflow run %s finished (%s)", self.run_id, self.record["tracking_uri"])

    def end(self, status):
        if self.client:
            self.client.set_terminated(self.run_id, status)
            self.ended = True


def _now_ms():
    return int(time.time() * 1000)


def open_run(args, env, data, history, resume_run_id=None, interruptions=()):
    """The run of this training (a RunTracking that does nothing on ranks other than 0).

    `resume_run_id` (from the checkpoint) goes on in that run when the store has it; otherwise a new run starts.
    The epochs of `history` the run lacks are logged now: a run resumed into a fresh store (a SageMaker spot restart
    has a new output folder) still shows every epoch."""
    if not env.is_main:
        return RunTracking()
    fingerprint = dataset_fingerprint(data)
    try:
        client = _client(args.tracking_uri)
        experiment = experiment_id(client, args.tracking_uri, args.experiment)
        run = _resumable_run(client, resume_run_id)
        if run is None:
            run = _new_run(client, experiment, args, env, data, fingerprint)
        else:
            client.update_run(run.info.run_id, status="RUNNING")
            log.info("MLflow: going on with run %s", run.info.run_id)
    except TrackingError:
        raise
    except Exception as error:      # an unreachable server, a store MLflow refuses: say which and why
        raise TrackingError(f"cannot open an MLflow run at {args.tracking_uri} (experiment {args.experiment}): "
                            f"{' '.join(str(error).split())[:300]}") from None
    tracking = RunTracking(client, {"tracking_uri": args.tracking_uri, "experiment_id": run.info.experiment_id,
                                    "run_id": run.info.run_id}, interruptions, fingerprint)
    logged = {metric.step for metric in client.get_metric_history(run.info.run_id, "valid_loss")}
    tracking.log_epochs([row for row in history if row["epoch"] not in logged])
    return tracking


def _resumable_run(client, run_id):
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except Exception:       # not in this store (another output folder, another tracking URI)
        log.info("MLflow: run %s of the checkpoint is not in this store; starting a new run", run_id)
        return None


def _new_run(client, experiment, args, env, data, fingerprint):
    from mlflow.entities import DatasetInput, InputTag, Param, RunTag
    from mlflow.entities import Dataset as DatasetEntity

    tags = {DATASET_TAG: fingerprint["digest"], "mlflow.source.name": "training/train.py",
            "world_size": str(env.world_size)}
    if os.environ.get("TRAINING_JOB_NAME"):
        tags["sagemaker_training_job"] = os.environ["TRAINING_JOB_NAME"]
    run = client.create_run(experiment, tags=tags, run_name=os.environ.get("TRAINING_JOB_NAME") or None)
    settings = {name: value for name, value in sorted(vars(args).items()) if name not in ("tracking_uri",)}
    params = [Param(name, str(value)[:6000]) for name, value in settings.items()]
    params += [Param(f"dataset_{key}", str(value)) for key, value in fingerprint.items()]
    client.log_batch(run.info.run_id, params=params, tags=[RunTag("mlflow.note.content", _note(data, fingerprint))])
    source = {"uri": Path(data.root).resolve().as_uri()}
    dataset = DatasetEntity(name=Path(data.root).name, digest=fingerprint["digest"], source_type="local",
                            source=json.dumps(source), profile=json.dumps(fingerprint))
    client.log_inputs(run.info.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
    log.info("MLflow run %s in experiment %s at %s", run.info.run_id, args.experiment, args.tracking_uri)
    return run


def _note(data, fingerprint):
    counts = ", ".join(f"{split} {fingerprint[f'{split}_samples']}" for split in SPLITS if split in data.splits)
    return f"data {data.root} (digest {fingerprint['digest']}): {fingerprint['classes']} classes, {counts}"


def copy_runs(source_store, destination_uri, copied_from=""):
    """Copy every run of the SQLite store in `source_store` (a job's <output>/mlflow, unpacked here) into
    `destination_uri`, into experiments of the same names: params, tags, every metric's history, dataset inputs,
    artifacts, status and times. A run copied before (tag copied_from_run) is not copied again. Returns
    {run id in the source store: its run id in the destination}, for the runs copied before too."""
    from mlflow.entities import ViewType

    source_store = Path(source_store)
    source, destination = _client(store_uri(source_store)), _client(destination_uri)
    copied = {}
    for experiment in source.search_experiments(view_type=ViewType.ALL):
        runs = source.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
        if not runs:
            continue
        target = experiment_id(destination, destination_uri, experiment.name)
        for run in runs:
            before = destination.search_runs([target], f"tags.{SOURCE_RUN_TAG} = '{run.info.run_id}'",
                                             run_view_type=ViewType.ALL)
            if before:
                copied[run.info.run_id] = before[0].info.run_id
                continue
            artifacts = _unpacked_artifacts(source_store, experiment.artifact_location, run.info.artifact_uri)
            copied[run.info.run_id] = _copy_run(source, destination, run, target, artifacts, copied_from)
    return copied


def _unpacked_artifacts(source_store, experiment_location, run_artifact_uri):
    """Where a run's artifacts are in the unpacked store: the store's artifact URIs name the folder the job wrote
    them in (/opt/ml/output/data/mlflow/artifacts/<experiment>/<run>/artifacts on SageMaker)."""
    run_path, experiment_path = (Path(unquote(uri.removeprefix("file://"))) for uri in
                                 (run_artifact_uri, experiment_location))
    try:
        return source_store / ARTIFACTS / run_path.relative_to(experiment_path.parent)
    except ValueError:      # an experiment whose artifacts are not beside its store: the URI as it is
        return run_path


def _copy_run(source, destination, run, experiment, artifacts, copied_from):
    from mlflow.entities import Param

    tags = {key: value for key, value in run.data.tags.items() if key != "mlflow.runName"}
    tags.update({SOURCE_RUN_TAG: run.info.run_id, "copied_from": copied_from,
                 "mlflow.note.content": (tags.get("mlflow.note.content", "") + f"\n\ncopied from "
                                         f"{copied_from or 'another store'} (run {run.info.run_id})").strip()})
    new = destination.create_run(experiment, start_time=run.info.start_time, tags=tags,
                                 run_name=run.info.run_name)
    run_id = new.info.run_id
    params = [Param(key, value) for key, value in run.data.params.items()]
    for start in range(0, len(params), 100):        # MLflow's limit of params per batch
        destination.log_batch(run_id, params=params[start:start + 100])
    metrics = [metric for key in run.data.metrics for metric in source.get_metric_history(run.info.run_id, key)]
    for start in range(0, len(metrics), 1000):
        destination.log_batch(run_id, metrics=metrics[start:start + 1000])
    if run.inputs and run.inputs.dataset_inputs:
        destination.log_inputs(run_id, run.inputs.dataset_inputs)
    if artifacts.is_dir():
        destination.log_artifacts(run_id, str(artifacts))
    destination.set_terminated(run_id, run.info.status, run.info.end_time)
    return run_id
