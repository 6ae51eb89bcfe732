"""The aws target's commands, the same as local/commands.py's: deploy, status, destroy, predict, train, models,
approve.

deploy applies the plan `invoke plan` saved (aws/deployment.py); train runs one SageMaker training job
(aws/sagemaker_jobs.py); models and approve work on the SageMaker Model Registry (aws/model_registry.py). The tasks
only on AWS (plan, tune, ec2-train, data --upload) call their modules directly.
"""

from invoke.exceptions import Exit

from aws import deployment, model_registry, sagemaker_jobs
from aws.session import boto_session, require_credentials, stops_with_one_line
from stack_common.model_versions import APPROVED, REJECTED, print_versions
from stack_common.function_client import aws_lambda_client
from stack_common.predict import predict_through


def deploy(c):
    """Apply the reviewed plan, wait for the endpoint, smoke-test through the function."""
    return deployment.deploy(c)


def status(c):
    """Print what runs on AWS: the endpoint, its instances and model, the function; returns the facts."""
    return deployment.status(c)


def destroy(c):
    """Destroy everything Terraform created for this project."""
    return deployment.destroy(c)


def predict(c, url=None, image=None, top_k=5):
    """Ask the deployed function which breed an image shows; prints the answer and returns its body."""
    return predict_through(lambda: (aws_lambda_client(boto_session(c)), deployment.function_name(c)),
                           url=url, image=image, top_k=top_k)


def train(c, workers=1, instances=1, spot=False, fresh=False, assignments=()):
    """One SageMaker training job on `instances` instances (Torchrun across them when more than one)."""
    if int(workers) != 1 or fresh:
        raise Exit("--workers and --fresh are for local training: drop them or add --target local")
    return sagemaker_jobs.train(c, instances=int(instances), spot=spot, assignments=assignments)


@stops_with_one_line("model registry")
def models(c):
    """List the model package group's versions, newest first, with metrics, data, source and approval."""
    require_credentials(c)
    found = model_registry.versions(c)
    print_versions(f"model package group {model_registry.group_name(c)}", found)
    return found


@stops_with_one_line("model registry")
def approve(c, version, reject=False, reason=""):
    """Approve (or reject) a version as the caller's IAM identity, with a reason; `invoke plan` deploys approved ones."""
    identity = require_credentials(c)
    status = REJECTED if reject else APPROVED
    before = model_registry.set_approval(c, identity, version, status, reason or "")
    print(f"version {before.number} of {model_registry.group_name(c)}: {before.status} -> {status} by "
          f"{identity.arn}" + (f" ({reason})" if reason else ""))
    return status
