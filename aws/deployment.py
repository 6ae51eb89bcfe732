"""Deploying to AWS: a Terraform plan saved for review, then exactly that plan applied.

`plan(c)` writes build/terraform/{plan.tfplan, plan.json, plan.md, plan-meta.json}. plan-meta.json pins what the
plan was made from: a digest of the configuration (every file of the Terraform directory, and the function's
package) and the state's lineage and serial. `deploy(c)` refuses a plan whose configuration or state moved on since
(Terraform 1.0 itself applies such a plan without complaint), applies it, waits for the endpoint to be InService
and sends one prediction through the function. The model is the newest approved version of the model registry
(aws/model_registry.py), the one aws.model_version pins, or --model-uri; the plan pins the version's ARN, and
deploy refuses it once that version is no longer approved. The Terraform root itself is aws/terraform_root.py.
"""

import json
import re
from datetime import datetime, timezone

import botocore.exceptions
from invoke.exceptions import Exit

from aws import model_registry, plan_review
from aws.session import (REPO_ROOT, aws_settings, boto_session, client, poll_until, require_credentials,
                         stops_with_one_line)
from aws.terraform import TerraformError
from aws.terraform_root import (PLACEHOLDER_MODEL_URL, config_digest, deployed_outputs, lambda_package, plan_files,
                                running_instance_count, state_version, terraform_variables, workspace)
from stack_common.function_client import aws_lambda_client, format_predictions
from stack_common.function_zip import build_function_zip
from stack_common.smoke_test import SmokeTestFailed, run_smoke_test, smoke_event

# What terraform/ accepts as model_data_url (its variable validation): s3://<bucket>/<key>/model.tar.gz.
MODEL_URI_PATTERN = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/(.+/)?model\.tar\.gz$")


def check_model_uri(uri):
    if not MODEL_URI_PATTERN.match(uri or ""):
        raise Exit(f"not a model archive URI: {uri!r} (expected s3://<bucket>/<key>/model.tar.gz)")
    return uri


def model_to_deploy(c, model_uri=None):
    """(model_data_url, the registered version or None): --model-uri wins, else the approval gate decides."""
    if model_uri:
        return check_model_uri(model_uri), None
    version = model_registry.version_to_deploy(c)
    return check_model_uri(version.model_uri), version

@stops_with_one_line("invoke plan")
def plan(c, model_uri=None):
    """Plan the deployment of a model, save the plan for review and print its summary; returns the summary."""
    identity = require_credentials(c)
    model_data_url, version = model_to_deploy(c, model_uri)
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
    lineage, serial = state_version(ws)
    files["json"].write_text(json.dumps(plan_json, indent=2) + "\n")
    title = f"Terraform plan: {variables['name_prefix']} in {identity.region} (account {identity.account})"
    review = plan_review.summarize(plan_json, title, model_data_url,
                                   model_version=version, registry=model_registry.group_name(c))
    review += "\nApply exactly this plan with `invoke deploy --target aws`.\n"
    files["review"].write_text(review)
    meta = {"config_digest": config_digest(c), "state_lineage": lineage, "state_serial": serial,
            "model_data_url": model_data_url, "model_package_arn": version.reference if version else None,
            "account": identity.account, "region": identity.region,
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
    lineage, serial = state_version(ws)
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

    timeout_s = timeout_s or aws_settings(c).endpoint_wait_minutes * 60
    poll_s = poll_s if poll_s is not None else aws_settings(c).poll_seconds
    return poll_until(read_status, label=f"endpoint {endpoint_name}", done=lambda status: status == "InService",
                      timeout_s=timeout_s, poll_s=poll_s,
                      timeout_message=lambda status: f"endpoint {endpoint_name} still {status} after "
                                                     f"{timeout_s / 60:.0f} min: check it with "
                                                     "`invoke status --target aws`")


def smoke_test(c, function):
    """One prediction through the function, as `invoke predict` makes it: the image at aws.smoke_test_url when set
    (the endpoint must be able to fetch it), else a small generated JPEG inline; Exit unless it answers 200."""
    try:
        answer, _seconds = run_smoke_test(aws_lambda_client(boto_session(c)), function,
                                          smoke_event(aws_settings(c).smoke_test_url))
    except SmokeTestFailed as error:
        raise Exit(str(error)) from None
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
    if meta.get("model_package_arn"):        # rejected since the review: the reviewed approval no longer holds
        version = model_registry.still_approved(c, meta["model_package_arn"])
        print(f"model version {version.number} of {model_registry.group_name(c)}: still Approved", flush=True)
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


def function_name(c):
    """The deployed function's name (the Terraform output), for `invoke predict --target aws`."""
    require_credentials(c)
    return deployed_outputs(c)["function_name"]


@stops_with_one_line("AWS status")
def status(c):
    """Print what runs on AWS: the endpoint, its instances and the model it serves, the function; returns the facts."""
    require_credentials(c)
    outputs = deployed_outputs(c)
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
    try:
        ws.destroy(terraform_variables(c, PLACEHOLDER_MODEL_URL))
    except TerraformError as error:
        raise Exit(str(error))
    for path in plan_files(c).values():
        path.unlink(missing_ok=True)
