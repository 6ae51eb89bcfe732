"""Deploying to AWS: a Terraform plan saved for review, then exactly that plan applied.

`plan(c)` writes build/terraform/{plan.tfplan, plan.json, plan.md, plan-meta.json}. plan-meta.json pins what the
plan was made from: a digest of the configuration (every file of the Terraform directory, and the function's
package) and the state's lineage and serial. `deploy(c)` refuses a plan whose configuration or state moved on since
(Terraform 1.0 itself applies such a plan without complaint), applies it, waits for the endpoint to be InService
and sends one prediction through the function.

State lives where the configuration's backend says: locally in terraform/terraform.tfstate, or in S3 when the
configuration declares `backend "s3" {}` and aws.state_bucket is set (see the README).
"""

import base64
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import botocore.config
import botocore.exceptions
from invoke.exceptions import Exit

from aws import plan_review
from aws.model_record import latest_model, resolve_model_uri
from aws.session import (REPO_ROOT, boto_session, client, poll_until, repo_path, require_credentials, setting,
                         stops_with_one_line)
from aws.terraform import TerraformError, Workspace

IGNORED_PARTS = {".terraform", ".git", "__pycache__"}
IGNORED_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan", ".lock.info")


def plan_dir(c):
    return repo_path(c, "plan_dir", "build/terraform")


def plan_files(c):
    base = plan_dir(c)
    return {"plan": base / "plan.tfplan", "json": base / "plan.json", "review": base / "plan.md",
            "meta": base / "plan-meta.json"}


def backend_config(c):
    """-backend-config values for an S3 backend, from aws.state_*; {} keeps the configuration's own backend."""
    bucket = setting(c, "state_bucket")
    if not bucket:
        return {}
    default_key = f"{setting(c, 'name_prefix', 'dog-breeds')}/terraform.tfstate"
    config = {"bucket": bucket, "key": setting(c, "state_key", default_key),
              "region": setting(c, "state_region", setting(c, "region")), "encrypt": "true"}
    if setting(c, "state_lock_table"):
        config["dynamodb_table"] = setting(c, "state_lock_table")
    return config


def _declares_s3_backend(directory):
    return any('backend "s3"' in path.read_text(errors="replace") for path in Path(directory).glob("*.tf"))


def workspace(c, init=True):
    """The Terraform root of this project (aws.terraform_dir), initialised with the configured backend."""
    directory = repo_path(c, "terraform_dir", "terraform")
    environment = {"AWS_REGION": setting(c, "region", ""), "AWS_DEFAULT_REGION": setting(c, "region", "")}
    if setting(c, "profile"):
        environment["AWS_PROFILE"] = setting(c, "profile")
    try:
        ws = Workspace(directory, terraform_bin=setting(c, "terraform_bin"), environment=environment)
        backend = backend_config(c)
        if backend and not _declares_s3_backend(directory):
            raise Exit(f"aws.state_bucket is set but {directory} declares no `backend \"s3\" {{}}`: add it "
                       "(see the README, section aws target) or unset aws.state_bucket")
        if init:
            print(f"terraform init in {directory}", flush=True)
            ws.init(backend_config=backend)
    except TerraformError as error:
        raise Exit(str(error))
    return ws


def lambda_package(c):
    return repo_path(c, "lambda_package", "build/function.zip")


def terraform_variables(c, model_data_url, enable_ec2_training_host=False, running_instance_count=None):
    """The root module's variables from the aws settings; aws.terraform_variables adds to them (objects merge)."""
    extra = {key: _plain(value) for key, value in dict(setting(c, "terraform_variables", {}) or {}).items()}
    variables = {
        "name_prefix": setting(c, "name_prefix", "dog-breeds"),
        "region": setting(c, "region"),
        "model_data_url": model_data_url,
        "lambda_package_path": str(lambda_package(c)),
        "enable_ec2_training_host": bool(enable_ec2_training_host),
        "endpoint": {"instance_type": setting(c, "endpoint_instance_type", "ml.m5.large")},
        "ec2_training_host": {"instance_type": setting(c, "ec2_instance_type", "t2.medium")},
    }
    if setting(c, "bucket"):  # an existing bucket: Terraform uses it and changes nothing on it
        variables["bucket"] = {"create": False, "name": setting(c, "bucket")}
    if running_instance_count:
        variables["endpoint_running_instance_count"] = int(running_instance_count)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(variables.get(key), dict):
            variables[key] = {**variables[key], **value}
        else:
            variables[key] = value
    return variables


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


def _plain(value):
    """invoke's DataProxy values -> plain dicts and lists that json can write."""
    if hasattr(value, "items"):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def config_digest(c):
    """sha256 over the Terraform directory's files (names and bytes) and the function package it deploys."""
    directory = repo_path(c, "terraform_dir", "terraform")
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


def _state_version(ws):
    try:
        return ws.state_version()
    except TerraformError as error:
        raise Exit(str(error))


@stops_with_one_line("invoke plan")
def plan(c, model_uri=None):
    """Plan the deployment of a model, save the plan for review and print its summary; returns the summary."""
    from local.function_zip import build_function_zip

    identity = require_credentials(c)
    model_data_url = resolve_model_uri(c, model_uri)
    # The plan deploys the function code as it is now (the zip is reproducible: unchanged code, same bytes).
    build_function_zip(lambda_package(c))
    ws = workspace(c)
    files = plan_files(c)
    files["plan"].parent.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        path.unlink(missing_ok=True)
    variables = terraform_variables(c, model_data_url, running_instance_count=running_instance_count(c, ws))
    try:
        print("terraform plan ...", flush=True)
        ws.plan(files["plan"], variables)
        plan_json = ws.show_json(files["plan"])
    except TerraformError as error:
        raise Exit(str(error))
    lineage, serial = _state_version(ws)
    files["json"].write_text(json.dumps(plan_json, indent=2) + "\n")
    title = f"Terraform plan: {variables['name_prefix']} in {identity.region} (account {identity.account})"
    review = plan_review.summarize(plan_json, title, model_data_url)
    record = latest_model(c) if not model_uri else None
    if record and record.get("model_data_url") == model_data_url:
        review += f"\nModel source: {record.get('source')} (recorded {record.get('recorded_at')})\n"
    review += "\nApply exactly this plan with `invoke deploy --target aws`.\n"
    files["review"].write_text(review)
    meta = {"config_digest": config_digest(c), "state_lineage": lineage, "state_serial": serial,
            "model_data_url": model_data_url, "account": identity.account, "region": identity.region,
            "planned_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    files["meta"].write_text(json.dumps(meta, indent=2) + "\n")
    print(review)
    print(f"saved: {files['plan'].relative_to(REPO_ROOT) if files['plan'].is_relative_to(REPO_ROOT) else files['plan']}"
          f" (+ plan.json, plan.md)")
    return review


def check_plan_is_current(c, ws):
    """Exit unless the saved plan was made from the configuration and state there are now; returns its meta."""
    files = plan_files(c)
    if not files["plan"].exists() or not files["meta"].exists():
        raise Exit("no saved plan: run `invoke plan`, review it, then `invoke deploy --target aws`")
    meta = json.loads(files["meta"].read_text())
    if meta.get("config_digest") != config_digest(c):
        raise Exit(f"the saved plan ({meta.get('planned_at')}) is older than the Terraform configuration or the "
                   "function package: run `invoke plan` again and review it")
    lineage, serial = _state_version(ws)
    if (lineage, serial) != (meta.get("state_lineage"), meta.get("state_serial")):
        raise Exit(f"the saved plan ({meta.get('planned_at')}) is older than the Terraform state (serial "
                   f"{meta.get('state_serial')} then, {serial} now): run `invoke plan` again and review it")
    return meta


def wait_for_endpoint(c, endpoint_name, timeout_s=None, poll_s=None):
    """Poll the endpoint until InService, printing each status change; Exit on Failed or timeout."""
    sagemaker = client(c, "sagemaker")

    def read_status():
        try:
            endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        except botocore.exceptions.ClientError as error:
            raise Exit(f"endpoint {endpoint_name}: {error}")
        status = endpoint["EndpointStatus"]
        if status in ("Failed", "OutOfService"):
            raise Exit(f"endpoint {endpoint_name} is {status}: {endpoint.get('FailureReason', 'no reason given')}")
        return status, endpoint

    timeout_s = timeout_s or float(setting(c, "endpoint_wait_minutes", 30)) * 60
    poll_s = poll_s if poll_s is not None else float(setting(c, "poll_seconds", 15))
    return poll_until(read_status, label=f"endpoint {endpoint_name}", done=lambda status: status == "InService",
                      timeout_s=timeout_s, poll_s=poll_s,
                      timeout_message=lambda status: f"endpoint {endpoint_name} still {status} after "
                                                     f"{timeout_s / 60:.0f} min: check it with "
                                                     "`invoke status --target aws`")


def smoke_test_event(c):
    """aws.smoke_test_url when set (the endpoint must be able to fetch it), else a small generated JPEG inline."""
    if setting(c, "smoke_test_url"):
        return {"url": setting(c, "smoke_test_url"), "top_k": 3}
    from local.stack import smoke_image

    return {"image": base64.b64encode(smoke_image()).decode(), "top_k": 3}


def lambda_client(c):
    """The function's client as users get it: long read timeout (the endpoint has 60 s), standard retries."""
    return boto_session(c).client("lambda", config=botocore.config.Config(
        connect_timeout=5, read_timeout=120, retries={"mode": "standard", "total_max_attempts": 3}))


def smoke_test(c, function):
    """One prediction through the function, as `invoke predict` makes it; Exit unless it answers 200."""
    from local.function_client import describe_failure, format_predictions, invoke_function

    try:
        answer = invoke_function(lambda_client(c), function, smoke_test_event(c))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise Exit(f"smoke test failed: calling function {function}: {error}")
    if answer.status != 200:
        raise Exit(f"smoke test failed: {describe_failure(answer)}")
    print(f"smoke test: function {function} answered 200")
    for line in format_predictions(answer.body):
        print(f"  {line}")
    return answer.body


@stops_with_one_line("deploy on AWS")
def deploy(c):
    """Apply the reviewed plan, wait for the endpoint, smoke-test through the function, print the outputs."""
    require_credentials(c)
    ws = workspace(c)
    meta = check_plan_is_current(c, ws)
    files = plan_files(c)
    print(f"applying the plan of {meta['planned_at']} (model {meta['model_data_url']})", flush=True)
    try:
        ws.apply(files["plan"])
        outputs = ws.outputs()
    except TerraformError as error:
        raise Exit(f"{error} (the state may be partly applied: run `invoke plan` to see what remains)")
    wait_for_endpoint(c, outputs["endpoint_name"])
    smoke_test(c, outputs["function_name"])
    print_outputs(outputs)
    return outputs


def print_outputs(outputs):
    width = max((len(name) for name in outputs), default=0)
    for name in sorted(outputs):
        print(f"{name:<{width}}  {outputs[name]}")


def _outputs_or_exit(c):
    try:
        outputs = workspace(c).outputs()
    except TerraformError as error:
        raise Exit(str(error))
    if not outputs.get("endpoint_name"):
        raise Exit("nothing deployed on AWS (no Terraform outputs): `invoke plan` then `invoke deploy --target aws`")
    return outputs


def function_name(c):
    """The deployed function's name (the Terraform output), for `invoke predict --target aws`."""
    require_credentials(c)
    return _outputs_or_exit(c)["function_name"]


@stops_with_one_line("AWS status")
def status(c):
    """Print what runs on AWS: the endpoint, its instances and the model it serves, the function; returns the facts."""
    require_credentials(c)
    outputs = _outputs_or_exit(c)
    sagemaker = client(c, "sagemaker")
    facts = {"endpoint": outputs["endpoint_name"], "function": outputs.get("function_name"),
             "bucket": outputs.get("bucket_name")}
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=outputs["endpoint_name"])
        facts["endpoint_status"] = endpoint["EndpointStatus"]
        facts["instances"] = ", ".join(f"{v['VariantName']}: {v.get('CurrentInstanceCount')}"
                                       for v in endpoint.get("ProductionVariants", []))
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        models = [variant["ModelName"] for variant in config.get("ProductionVariants", [])]
        facts["model"] = ", ".join(models)
        facts["model_data_url"] = ", ".join(
            sagemaker.describe_model(ModelName=name).get("PrimaryContainer", {}).get("ModelDataUrl", "?")
            for name in models)
    except botocore.exceptions.ClientError as error:
        facts["endpoint_status"] = f"unknown ({error.response['Error']['Code']}: {error.response['Error']['Message']})"
    meta_path = plan_files(c)["meta"]
    if meta_path.exists():
        facts["saved_plan"] = json.loads(meta_path.read_text()).get("planned_at")
    print_outputs(facts)
    return facts


@stops_with_one_line("destroy on AWS")
def destroy(c):
    """Destroy everything Terraform created for this project (the bucket too, when Terraform made it)."""
    require_credentials(c)
    ws = workspace(c)
    record = latest_model(c)
    # Destroying reads no model, but the variable is required and validated: any well-formed URI will do.
    model_data_url = (record or {}).get("model_data_url") or "s3://placeholder-bucket/destroy/model.tar.gz"
    try:
        ws.destroy(terraform_variables(c, model_data_url))
    except TerraformError as error:
        raise Exit(str(error))
    for path in plan_files(c).values():
        path.unlink(missing_ok=True)
    print("destroyed: nothing of this project runs on AWS any more")
