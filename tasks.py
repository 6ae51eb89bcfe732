"""Runbook of the project: each task is one step a person used to do by hand.

Settings come from flags, else invoke.yaml / INVOKE_* environment variables, else the defaults declared in
configuration/areas.py, which the collection hands to invoke (docs/configuration.md lists them all).
The work itself lives in training/, local/ and aws/; the tasks only call it.
"""

import importlib
import importlib.util
import shlex
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

# inference/'s flat modules are importable only through the editable install that .ci/setup makes (found, not
# imported: importing them loads torch, seconds on every invoke)
if importlib.util.find_spec("preprocessing") is None:
    sys.exit("this checkout is not installed: run `bash .ci/setup` (it installs the project into .venv), "
             "then use .venv/bin/invoke")
from configuration.areas import DataSettings, LintSettings, ProjectSettings, TrackingSettings, invoke_defaults, load

REPO_ROOT = Path(__file__).resolve().parent
TARGETS = ("local", "aws")   # each a package with the same commands module: local/commands.py, aws/commands.py
TARGET_ALIASES = {"sagemaker": "aws"}


def _commands(c, target):
    """The commands module of the chosen target: --target, else the `target` setting."""
    chosen = TARGET_ALIASES.get(target, target) or load(c, ProjectSettings).target
    if chosen not in TARGETS:
        raise Exit(f"unknown target {chosen!r}: use one of {', '.join(TARGETS)}")
    return importlib.import_module(f"{chosen}.commands")


@task(help={"synthetic": "make the small synthetic set in data.synthetic_dir (data/synthetic) instead (no network)",
            "upload": "sync the data set to the bucket (AWS target)",
            "url": "where to download dogImages.zip from (default: the data.url setting)"})
def data(c, synthetic=False, upload=False, url=None):
    """Get the data set: download and unzip dogImages, make the synthetic set, or upload to S3."""
    if upload:
        from aws import data_sync
        return data_sync.upload(c)
    if synthetic:
        from training.synthetic import make_synthetic_dataset
        made = make_synthetic_dataset(load(c, DataSettings).synthetic_dir, progress=sys.stderr.isatty())
        return print(f"synthetic data set ready in {made}")
    from training import download
    try:
        settings = load(c, DataSettings)
        data_dir, fetched = download.fetch_dataset(url or settings.url, settings.dir, progress=sys.stderr.isatty())
    except download.DownloadError as error:
        raise Exit(str(error))
    print(f"{data_dir}: {'downloaded and unpacked' if fetched else 'already there, nothing to do'}")


@task(help={"target": "local (default) or aws (SageMaker; also spelled sagemaker)",
            "workers": "local distributed processes (torchrun), each on its own shard (default 1)",
            "instances": "SageMaker instances; more than 1 trains with Torchrun across them (default 1)",
            "spot": "SageMaker managed spot training with checkpoints",
            "fresh": "local: ignore the checkpoint in train.checkpoint_dir and start over",
            "set": "a train.py flag for this run, name=value (repeatable): --set lr=0.01 --set arch=resnet18; "
                   "train.hyperparameters holds the lasting ones"},
      iterable=["set_"])
def train(c, target="local", workers=1, instances=1, spot=False, fresh=False, set_=None):
    """Train the classifier and build model.tar.gz."""
    return _commands(c, target).train(c, workers=workers, instances=instances, spot=spot, fresh=fresh,
                                      assignments=set_)


@task(help={"target": "local or aws (default: target in invoke.yaml)"})
def deploy(c, target=None):
    """Deploy the model: the local stack, or exactly the reviewed Terraform plan on AWS."""
    return _commands(c, target).deploy(c)


@task(help={"url": "image URL the endpoint fetches", "image": "local image file to send",
            "top_k": "how many breeds to return (default 5)",
            "target": "local or aws (default: target in invoke.yaml)"})
def predict(c, url=None, image=None, top_k=5, target=None):
    """Ask the deployed function which breed an image shows."""
    return _commands(c, target).predict(c, url=url, image=image, top_k=top_k)


@task(help={"target": "local or aws (default: target in invoke.yaml)"})
def status(c, target=None):
    """Show what is running, where, and which model it serves."""
    return _commands(c, target).status(c)


@task(help={"target": "local or aws (default: target in invoke.yaml)"})
def destroy(c, target=None):
    """Stop and remove everything deploy started."""
    return _commands(c, target).destroy(c)


@task(help={"target": "local (the MLflow registry) or aws (the SageMaker Model Registry); default: target in "
                      "invoke.yaml"})
def models(c, target=None):
    """List the registered model versions, newest first: metrics, data, source, approval and who approved."""
    return _commands(c, target).models(c)


@task(help={"version": "the version number `invoke models` lists",
            "reject": "reject the version instead of approving it",
            "reason": "why (recorded with who approved or rejected it)",
            "target": "local or aws (default: target in invoke.yaml)"})
def approve(c, version, reject=False, reason="", target=None):
    """Approve a model version (or --reject it), recording who and why; `invoke plan` deploys approved ones."""
    return _commands(c, target).approve(c, version, reject=reject, reason=reason)


@task(help={"terraform": "terraform >= 1.7 for validate and test (default: lint.terraform in invoke.yaml, else the "
                         "newest on PATH)",
            "provider": "hashicorp/aws for validate and test: auto (default: lint.provider), installed or offline",
            "checkov_report": "also write checkov's JSON report to this file"})
def lint(c, terraform=None, provider=None, checkov_report=None):
    """Offline checks of the infrastructure code: terraform fmt, checkov, validate of every module, terraform test."""
    command = [sys.executable, str(REPO_ROOT / "terraform" / "lint.py")]
    settings = load(c, LintSettings)
    terraform = terraform or settings.terraform
    provider = provider or settings.provider
    command += ["--terraform", terraform] if terraform else []
    command += ["--provider", provider] if provider else []
    command += ["--checkov-report", checkov_report] if checkov_report else []
    if not c.run(shlex.join(command), warn=True, pty=False).ok:
        raise Exit("lint: a check failed (details above)")


@task(help={"port": "the port on 127.0.0.1 (default: tracking.ui_port, 5000)"})
def ui(c, port=None):
    """MLflow's UI on the project's store: local runs, and AWS runs when no tracking server is on; Ctrl-C stops it."""
    from local import tracking_ui
    settings = load(c, TrackingSettings)
    tracking_ui.serve(settings.store, port or settings.ui_port)


# ------------------------------------------------------------------------------------------ AWS-only tasks

@task(help={"max_jobs": "training jobs in all (default: tuning.max_jobs, 8)",
            "parallel": "training jobs at a time (default: tuning.parallel, 2)",
            "objective": "valid_loss (minimized, default: tuning.objective) or valid_accuracy (maximized)",
            "spot": "run the tuning's training jobs on managed spot",
            "set": "a fixed train.py flag of every job, name=value (repeatable); not one that tuning searches"},
      iterable=["set_"])
def tune(c, max_jobs=None, parallel=None, objective=None, spot=False, set_=None):
    """SageMaker hyperparameter tuning (lr, batch size, epochs, weight decay); registers the best job's model."""
    from aws import sagemaker_jobs
    sagemaker_jobs.tune(c, max_jobs=max_jobs, parallel=parallel, objective=objective, spot=spot, assignments=set_)


@task(help={"keep": "leave the host running afterwards (default: destroy it)",
            "set": "a train.py flag for this run, name=value (repeatable): --set lr=0.01 --set arch=resnet18; "
                   "train.hyperparameters holds the lasting ones"},
      iterable=["set_"])
def ec2_train(c, keep=False, set_=None):
    """Train on an EC2 host via Systems Manager: provision, download data, train, upload model.tar.gz, tear down."""
    from aws import ec2_training
    ec2_training.ec2_train(c, keep=keep, assignments=set_)


@task(help={"model_uri": "s3://.../model.tar.gz to deploy (default: the newest approved model version, or the one "
                         "aws.model_version pins)"})
def plan(c, model_uri=None):
    """Terraform plan of the AWS deployment, saved with a review summary for `invoke deploy --target aws`."""
    from aws import deployment
    deployment.plan(c, model_uri=model_uri)


ns = Collection(data, train, deploy, predict, status, destroy, models, approve, lint, ui, tune, ec2_train, plan)
# The defaults as text, so that invoke hands every INVOKE_* variable on as written (configuration/areas.py says why).
ns.configure(invoke_defaults())
