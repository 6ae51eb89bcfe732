"""The project's Terraform root (aws.terraform_dir): its workspace initialised with the configured backend, the
variables the aws settings give it, where plans are saved, and the digest that pins what a plan was made from.
The deployment (aws/deployment.py), the bootstrap of storage and IAM (aws/bootstrap.py) and the EC2 host
(aws/ec2_training.py) all work on this one root.

State lives where the configuration's backend says: locally in terraform/terraform.tfstate, or in S3 when the
configuration declares `backend "s3" {}` and aws.state_bucket is set (docs/aws.md, "Terraform state in S3").
"""

import hashlib
import re
from pathlib import Path

import botocore.exceptions
from invoke.exceptions import Exit

from aws.session import REPO_ROOT, aws_settings, client, ec2_settings
from configuration.areas import ProjectSettings, load
from aws.terraform import TerraformError, Workspace

IGNORED_PARTS = {".terraform", ".git", "__pycache__"}
IGNORED_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan", ".lock.info")


def plan_dir(c):
    return aws_settings(c).plan_dir


def plan_files(c):
    base = plan_dir(c)
    return {"plan": base / "plan.tfplan", "json": base / "plan.json", "review": base / "plan.md",
            "meta": base / "plan-meta.json"}


def backend_config(c):
    """-backend-config values for an S3 backend, from aws.state_*; {} keeps the configuration's own backend."""
    settings = aws_settings(c)
    if not settings.state_bucket:
        return {}
    config = {"bucket": settings.state_bucket, "key": settings.state_key or f"{settings.name_prefix}/terraform.tfstate",
              "region": settings.state_region or settings.region, "encrypt": "true"}
    if settings.state_lock_table:
        config["dynamodb_table"] = settings.state_lock_table
    return config


def _declares_s3_backend(directory):
    return any('backend "s3"' in path.read_text(errors="replace") for path in Path(directory).glob("*.tf"))


def workspace(c, init=True):
    """The Terraform root of this project (aws.terraform_dir), initialised with the configured backend."""
    settings = aws_settings(c)
    directory = settings.terraform_dir
    environment = {"AWS_REGION": settings.region, "AWS_DEFAULT_REGION": settings.region}
    if settings.profile:
        environment["AWS_PROFILE"] = settings.profile
    try:
        ws = Workspace(directory, terraform_bin=settings.terraform_bin, environment=environment)
        backend = backend_config(c)
        if backend and not _declares_s3_backend(directory):
            raise Exit(f"aws.state_bucket is set but {directory} declares no `backend \"s3\" {{}}`: add it "
                       "(docs/aws.md, section Terraform state in S3) or unset aws.state_bucket")
        if init:
            print(f"terraform init in {directory}", flush=True)
            ws.init(backend_config=backend)
    except TerraformError as error:
        raise Exit(str(error))
    return ws


def lambda_package(c):
    return load(c, ProjectSettings).function_zip

# For the applies that read no model (the bootstrap and EC2 targets, destroy): terraform/ requires model_data_url
# and validates its form, so a well-formed URI that names no model.
PLACEHOLDER_MODEL_URL = "s3://placeholder-bucket/no-model/model.tar.gz"


def terraform_variables(c, model_data_url, enable_ec2_training_host=False, running_instance_count=None):
    """The root module's variables from the aws settings; aws.terraform_variables adds to them (objects merge: its
    `github: {repository: owner/name}` turns on the GitHub roles, which get the S3 backend from aws.state_*)."""
    settings = aws_settings(c)
    variables = {
        "name_prefix": settings.name_prefix,
        "region": settings.region,
        "model_data_url": model_data_url,
        "lambda_package_path": str(lambda_package(c)),
        "enable_ec2_training_host": bool(enable_ec2_training_host),
        "endpoint": {"instance_type": settings.endpoint_instance_type},
        "ec2_training_host": {"instance_type": ec2_settings(c).instance_type},
    }
    if settings.bucket:  # an existing bucket: Terraform uses it and changes nothing on it
        variables["bucket"] = {"create": False, "name": settings.bucket}
    if running_instance_count:
        variables["endpoint_running_instance_count"] = int(running_instance_count)
    backend = backend_config(c)
    if backend:  # the GitHub workflows' roles (modules/github_oidc) read, lock and write this state
        variables["github"] = {"state_bucket": backend["bucket"], "state_key": backend["key"],
                               "state_lock_table": backend.get("dynamodb_table", ""), "state_region": backend["region"]}
    for key, value in settings.terraform_variables.items():   # plain dicts and lists: configuration/values.py
        if isinstance(value, dict) and isinstance(variables.get(key), dict):
            variables[key] = {**variables[key], **value}
        else:
            variables[key] = value
    return variables


def endpoint_image_settings(c):
    """What picks the endpoint's inference image: instance_type, framework_version, python_version, image_uri
    (None: the prebuilt image), from aws.terraform_variables.endpoint, else the root variable's declared defaults
    (variables.tf of aws.terraform_dir, else of the project's terraform/: the one place they are written), else
    aws.endpoint_instance_type."""
    declared = (_endpoint_defaults(aws_settings(c).terraform_dir / "variables.tf")
                or _endpoint_defaults(REPO_ROOT / "terraform" / "variables.tf"))
    chosen = {**declared, "instance_type": aws_settings(c).endpoint_instance_type,
              **(aws_settings(c).terraform_variables.get("endpoint") or {})}
    names = ("instance_type", "framework_version", "python_version", "image_uri")
    settings = {name: chosen.get(name) for name in names}
    missing = [name for name, value in settings.items() if value is None and name != "image_uri"]
    if missing:
        raise Exit(f"no endpoint {', '.join(missing)} in aws.terraform_variables.endpoint nor in the endpoint "
                   "variable's defaults of variables.tf: set it there")
    return settings


def _endpoint_defaults(variables_tf):
    """`name = optional(string, "value")` of the endpoint variable's type, read from its declaration."""
    text = variables_tf.read_text() if variables_tf.exists() else ""
    block = text.partition('variable "endpoint"')[2].partition("\nvariable ")[0]
    return dict(re.findall(r'^\s*(\w+)\s*=\s*optional\(string,\s*"([^"]*)"\)', block, flags=re.MULTILINE))


def running_instance_count(c, ws):
    """The deployed variant's current instance count (autoscaling may have changed it), or None before the first."""
    try:
        name = ws.outputs().get("endpoint_name")
    except TerraformError:
        return None
    if not name:
        return None
    try:
        endpoint = client(c, "sagemaker").describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError:
        return None
    counts = [variant.get("DesiredInstanceCount") or variant.get("CurrentInstanceCount")
              for variant in endpoint.get("ProductionVariants", [])]
    return max((n for n in counts if n), default=None)


def config_digest(c):
    """sha256 over the Terraform directory's files (names and bytes) and the function package it deploys."""
    directory = aws_settings(c).terraform_dir
    digest = hashlib.sha256()
    files = sorted(path for path in directory.rglob("*") if path.is_file()
                   and not IGNORED_PARTS.intersection(path.relative_to(directory).parts)
                   and not path.name.endswith(IGNORED_SUFFIXES))
    package = lambda_package(c)
    if package.exists():
        files.append(package)
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path).encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def state_version(ws):
    try:
        return ws.state_version()
    except TerraformError as error:
        raise Exit(str(error))


def deployed_outputs(c):
    """The root's Terraform outputs; Exit when nothing is deployed."""
    try:
        outputs = workspace(c).outputs()
    except TerraformError as error:
        raise Exit(str(error))
    if not outputs.get("endpoint_name"):
        raise Exit("nothing deployed on AWS (no Terraform outputs): `invoke plan` then `invoke deploy --target aws`")
    return outputs

