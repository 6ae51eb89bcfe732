"""Runbook of the project: each task is one step a person used to do by hand.

Settings come from flags, else invoke.yaml / INVOKE_* environment variables, else the defaults there.
The work itself lives in training/, local/ and aws/; the tasks only call it.
"""

import importlib
import shlex
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

REPO_ROOT = Path(__file__).resolve().parent
TARGETS = ("local", "aws")


def _target(c, target):
    chosen = target or c.config.target
    if chosen not in TARGETS:
        raise Exit(f"unknown target {chosen!r}: use one of {', '.join(TARGETS)}")
    return chosen


def _training_module(name):
    """A module of training/ (flat modules that import their siblings and inference/ by name)."""
    for folder in (REPO_ROOT / "training", REPO_ROOT / "inference"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    return importlib.import_module(name)


@task(help={"synthetic": "make the small synthetic set in data.synthetic_dir (data/synthetic) instead (no network)",
            "upload": "sync the data set to the bucket (AWS target)",
            "url": "where to download dogImages.zip from (default: data.url in invoke.yaml)"})
def data(c, synthetic=False, upload=False, url=None):
    """Get the data set: download and unzip dogImages, make the synthetic set, or upload to S3."""
    if upload:
        from aws import data_sync
        return data_sync.upload(c)
    if synthetic:
        made = _training_module("synthetic").make_synthetic_dataset(c.config.data.synthetic_dir,
                                                                    progress=sys.stderr.isatty())
        return print(f"synthetic data set ready in {made}")
    download = _training_module("download")
    try:
        data_dir, fetched = download.fetch_dataset(url or c.config.data.url, c.config.data.dir,
                                                   progress=sys.stderr.isatty())
    except download.DownloadError as error:
        raise Exit(str(error))
    print(f"{data_dir}: {'downloaded and unpacked' if fetched else 'already there, nothing to do'}")


@task(help={"target": "local (default) or sagemaker",
            "workers": "local distributed processes (torchrun), each on its own shard (default 1)",
            "instances": "SageMaker instances; more than 1 trains with Torchrun across them (default 1)",
            "spot": "SageMaker managed spot training with checkpoints",
            "fresh": "local: ignore the checkpoint in train.checkpoint_dir and start over"})
def train(c, target="local", workers=1, instances=1, spot=False, fresh=False):
    """Train the classifier and build model.tar.gz."""
    if target in ("sagemaker", "aws"):
        from aws import sagemaker_jobs
        return sagemaker_jobs.train(c, instances=int(instances), spot=spot)
    if target != "local":
        raise Exit(f"unknown training target {target!r}: use local or sagemaker")
    local_run = _training_module("local_run")
    try:
        model_dir = local_run.train_locally(c.config, workers=int(workers), fresh=fresh)
    except local_run.LocalTrainingError as error:
        raise Exit(None if error.already_reported else str(error), code=error.exit_code)
    print(f"model directory {model_dir}, archive {c.config.train.archive}")


@task(help={"target": "local or aws (default: target in invoke.yaml)"})
def deploy(c, target=None):
    """Deploy the model: the local stack, or exactly the reviewed Terraform plan on AWS."""
    if _target(c, target) == "aws":
        from aws import deployment
        return deployment.deploy(c)
    from local import commands
    return commands.deploy(c)


@task(help={"url": "image URL the endpoint fetches", "image": "local image file to send",
            "top_k": "how many breeds to return (default 5)",
            "target": "local or aws (default: target in invoke.yaml)"})
def predict(c, url=None, image=None, top_k=5, target=None):
    """Ask the deployed function which breed an image shows."""
    from local import commands
    return commands.predict(c, _target(c, target), url=url, image=image, top_k=top_k)


@task(help={"target": "local or aws (default: target in invoke.yaml)"})
def status(c, target=None):
    """Show what is running, where, and which model it serves."""
    if _target(c, target) == "aws":
        from aws import deployment
        return deployment.status(c)
    from local import commands
    return commands.status(c)


@task(help={"target": "local or aws (default: target in invoke.yaml)"})
def destroy(c, target=None):
    """Stop and remove everything deploy started."""
    if _target(c, target) == "aws":
        from aws import deployment
        return deployment.destroy(c)
    from local import commands
    return commands.destroy(c)


@task(help={"terraform": "terraform >= 1.7 for validate and test (default: lint.terraform in invoke.yaml, else the "
                         "newest on PATH)",
            "provider": "hashicorp/aws for validate and test: auto (default: lint.provider), installed or offline",
            "checkov_report": "also write checkov's JSON report to this file"})
def lint(c, terraform=None, provider=None, checkov_report=None):
    """Offline checks of the infrastructure code: terraform fmt, checkov, validate of every module, terraform test."""
    command = [sys.executable, str(REPO_ROOT / "terraform" / "lint.py")]
    terraform = terraform or c.config.get("lint", {}).get("terraform")
    provider = provider or c.config.get("lint", {}).get("provider")
    command += ["--terraform", terraform] if terraform else []
    command += ["--provider", provider] if provider else []
    command += ["--checkov-report", checkov_report] if checkov_report else []
    if not c.run(shlex.join(command), warn=True, pty=False).ok:
        raise Exit("lint: a check failed (details above)")


# ------------------------------------------------------------------------------------------ AWS-only tasks

@task(help={"max_jobs": "training jobs in all (default: aws.tuning.max_jobs, 8)",
            "parallel": "training jobs at a time (default: aws.tuning.parallel, 2)",
            "objective": "valid_loss (minimized, default) or valid_accuracy (maximized)",
            "spot": "run the tuning's training jobs on managed spot"})
def tune(c, max_jobs=None, parallel=None, objective=None, spot=False):
    """SageMaker hyperparameter tuning (lr, batch size, epochs, weight decay); records the best job's model."""
    from aws import sagemaker_jobs
    sagemaker_jobs.tune(c, max_jobs=max_jobs, parallel=parallel, objective=objective, spot=spot)


@task(help={"keep": "leave the host running afterwards (default: destroy it)",
            "epochs": "train.py --epochs on the host (default: aws.ec2_hyperparameters, else train.py's)",
            "batch_size": "train.py --batch-size on the host",
            "arch": "train.py --arch on the host"})
def ec2_train(c, keep=False, epochs=None, batch_size=None, arch=None):
    """Train on an EC2 host via Systems Manager: provision, download data, train, upload model.tar.gz, tear down."""
    from aws import ec2_training
    ec2_training.ec2_train(c, keep=keep, overrides={"epochs": epochs, "batch_size": batch_size, "arch": arch})


@task(help={"model_uri": "s3://.../model.tar.gz to deploy (default: the latest model train/tune/ec2-train recorded)"})
def plan(c, model_uri=None):
    """Terraform plan of the AWS deployment, saved with a review summary for `invoke deploy --target aws`."""
    from aws import deployment
    deployment.plan(c, model_uri=model_uri)


ns = Collection(data, train, deploy, predict, status, destroy, lint, tune, ec2_train, plan)
