"""`invoke plan` and `invoke deploy --target aws`: the real terraform binary on a provider-less stand-in of
terraform/ (same variables and outputs), and moto for the endpoint and the function those outputs name."""

import base64
import io
import json
import zipfile

import boto3
import pytest
from invoke.exceptions import Exit
from moto.moto_api._internal.models import moto_api_backend

from aws import deployment, plan_review, terraform_root
from aws.session import aws_settings, boto_session
from aws_testlib import (  # noqa: F401 (fixtures)
                              BUCKET, REGION, RequestRecorder, aws_credentials, create_model_package_group,
                              create_role, make_context, moto_account, pinned_workspace, register_version,
                              stand_in_terraform, state_outputs)

MODEL = f"s3://{BUCKET}/output/dog-breeds-1/output/model.tar.gz"
ACCOUNT = "123456789012"  # moto's


def deployed_resources(prefix="dog-breeds"):
    """What the real Terraform configuration would have created, in moto: endpoint and function."""
    role = create_role(f"{prefix}-deployed")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(ModelName=f"{prefix}-model", ExecutionRoleArn=role,
                           PrimaryContainer={"Image": "pytorch-inference", "ModelDataUrl": MODEL})
    sagemaker.create_endpoint_config(EndpointConfigName=f"{prefix}-config", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": f"{prefix}-model", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    sagemaker.create_endpoint(EndpointName=f"{prefix}-endpoint", EndpointConfigName=f"{prefix}-config")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return {}\n")
    boto3.client("lambda", region_name=REGION).create_function(
        FunctionName=f"{prefix}-predict", Runtime="python3.12", Role=role, Handler="lambda_function.lambda_handler",
        Code={"ZipFile": package.getvalue()})


def function_answers(status, body):
    moto_api_backend.set_lambda_simple_result(
        json.dumps({"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}),
        account_id=ACCOUNT, region=REGION)


PREDICTIONS = {"predictions": [{"class_name": "Affenpinscher", "probability": 0.91}], "model_version": "abc123"}


@pytest.fixture
def project(moto_account, tmp_path):
    terraform_dir = stand_in_terraform(tmp_path)
    c = make_context(tmp_path, terraform_dir=str(terraform_dir), bucket=BUCKET)
    create_model_package_group()
    register_version(c, MODEL, approve=True, reason="best so far", source="SageMaker training job dog-breeds-1")
    return c, terraform_dir


def test_plan_saves_plan_json_and_review_for_the_approved_model(project, capsys, tmp_path):
    c, _ = project
    review = deployment.plan(c)
    files = terraform_root.plan_files(c)
    assert zipfile.ZipFile(tmp_path / "function.zip").namelist() == ["lambda_function.py"]   # built for the plan
    assert files["plan"].stat().st_size > 0
    assert json.loads(files["json"].read_text())["variables"]["model_data_url"]["value"] == MODEL
    assert files["review"].read_text() == review
    assert f"Model: `{MODEL}`" in review
    assert "| Source | SageMaker training job dog-breeds-1 |" in review
    assert review in capsys.readouterr().out


def test_plan_takes_the_model_from_the_flag_over_the_approved_version(project):
    c, _ = project
    other = f"s3://{BUCKET}/ec2/run-2/model.tar.gz"
    deployment.plan(c, model_uri=other)
    assert json.loads(terraform_root.plan_files(c)["json"].read_text())["variables"]["model_data_url"]["value"] == other


def test_plan_without_any_model_says_how_to_get_one(moto_account, tmp_path):
    c = make_context(tmp_path, terraform_dir=str(stand_in_terraform(tmp_path)))
    with pytest.raises(Exit, match=r"^no approved model version in dog-breeds: `invoke models`, then "
                                   r"`invoke approve N`$"):
        deployment.plan(c)
    with pytest.raises(Exit, match="not a model archive URI: 'https://example.com/model.tar.gz'"):
        deployment.plan(c, model_uri="https://example.com/model.tar.gz")


def test_deploy_applies_the_reviewed_plan_waits_for_the_endpoint_and_predicts_through_the_function(project, capsys):
    c, terraform_dir = project
    deployment.plan(c)
    deployed_resources()
    function_answers(200, PREDICTIONS)
    requests = RequestRecorder(boto_session(c))

    outputs = deployment.deploy(c)

    assert outputs["endpoint_name"] == "dog-breeds-endpoint"
    assert state_outputs(terraform_dir) == outputs          # the plan's changes are in the state now
    assert requests.of("DescribeEndpoint")[-1]["EndpointName"] == "dog-breeds-endpoint"
    event = json.loads(requests.of("Invoke")[0]["Payload"])
    assert requests.of("Invoke")[0]["FunctionName"] == "dog-breeds-predict"
    assert base64.b64decode(event["image"])[:2] == b"\xff\xd8"   # a JPEG, sent inline like `invoke predict --image`
    printed = capsys.readouterr().out
    assert "endpoint dog-breeds-endpoint: InService" in printed
    assert "Affenpinscher" in printed
    assert "function_name" in printed and "dog-breeds-predict" in printed

    with pytest.raises(Exit, match="older than the Terraform state"):   # a plan is applied once
        deployment.deploy(c)


def test_a_plan_older_than_the_configuration_is_refused(project):
    c, terraform_dir = project
    deployment.plan(c)
    with (terraform_dir / "main.tf").open("a") as config:
        config.write('\noutput "added_after_review" {\n  value = "surprise"\n}\n')
    with pytest.raises(Exit, match=r"the saved plan \(.*\) is older than the Terraform configuration"):
        deployment.deploy(c)
    assert state_outputs(terraform_dir) == {}               # nothing was applied


def test_a_plan_older_than_the_function_package_is_refused(project, tmp_path):
    c, terraform_dir = project
    deployment.plan(c)
    (tmp_path / "function.zip").write_bytes(b"another package")
    with pytest.raises(Exit, match="older than the Terraform configuration or the function package"):
        deployment.deploy(c)
    assert state_outputs(terraform_dir) == {}


def test_a_plan_older_than_the_state_is_refused(project, tmp_path):
    c, terraform_dir = project
    deployment.plan(c)
    someone_else = pinned_workspace(terraform_dir)                        # another deploy lands after our review
    someone_else.plan(tmp_path / "theirs.tfplan", terraform_root.terraform_variables(c, f"s3://{BUCKET}/x/model.tar.gz"))
    someone_else.apply(tmp_path / "theirs.tfplan")
    with pytest.raises(Exit, match=r"older than the Terraform state \(serial 0 then, \d+ now\)"):
        deployment.deploy(c)
    assert state_outputs(terraform_dir)["model_data_url"] == f"s3://{BUCKET}/x/model.tar.gz"


def test_deploy_without_a_saved_plan_says_to_plan_first(project):
    c, _ = project
    with pytest.raises(Exit, match=r"no saved plan: run `invoke plan`"):
        deployment.deploy(c)


def test_a_failing_smoke_test_fails_the_deploy_with_the_functions_answer(project):
    c, _ = project
    deployment.plan(c)
    deployed_resources()
    function_answers(502, {"error": "ModelError", "message": "the endpoint failed"})
    with pytest.raises(Exit, match="smoke test failed: 502 ModelError: the endpoint failed"):
        deployment.deploy(c)


def test_the_tasks_plan_deploy_predict_status_and_destroy_on_the_aws_target(project, capsys):
    import tasks

    c, terraform_dir = project
    tasks.plan(c)
    deployed_resources()
    function_answers(200, PREDICTIONS)
    tasks.deploy(c, target="aws")

    function_answers(200, PREDICTIONS)
    assert tasks.predict(c, url="https://example.com/dog.jpg", top_k=1, target="aws") == PREDICTIONS

    facts = tasks.status(c, target="aws")
    assert facts["endpoint_status"] == "InService"
    assert facts["model_data_url"] == MODEL
    assert facts["instances"] == "AllTraffic: 1"
    assert "InService" in capsys.readouterr().out

    tasks.destroy(c, target="aws")
    assert state_outputs(terraform_dir) == {}
    assert not terraform_root.plan_files(c)["plan"].exists()
    with pytest.raises(Exit, match="nothing deployed on AWS"):
        tasks.status(c, target="aws")


def test_an_s3_state_bucket_needs_a_backend_block(project):
    c, terraform_dir = project
    c.config.aws.state_bucket = "my-terraform-state"
    with pytest.raises(Exit, match=r'declares no `backend "s3" \{\}`'):
        deployment.plan(c)
    c.config.aws.state_bucket = ""
    assert terraform_root.backend_config(c) == {}


def test_the_s3_backend_settings_become_backend_config(tmp_path):
    c = make_context(tmp_path, state_bucket="tf-state", state_lock_table="tf-locks", name_prefix="dogs")
    assert terraform_root.backend_config(c) == {"bucket": "tf-state", "key": "dogs/terraform.tfstate", "region": REGION,
                                            "encrypt": "true", "dynamodb_table": "tf-locks"}


def test_the_github_roles_get_the_s3_backend_and_the_repository_from_terraform_variables(tmp_path):
    c = make_context(tmp_path, state_bucket="tf-state", state_lock_table="tf-locks", name_prefix="dogs",
                     state_region="eu-west-1", terraform_variables={"github": {"repository": "octo-org/dogs"}})
    assert terraform_root.terraform_variables(c, f"s3://{BUCKET}/x/model.tar.gz")["github"] == {
        "repository": "octo-org/dogs", "state_bucket": "tf-state", "state_key": "dogs/terraform.tfstate",
        "state_lock_table": "tf-locks", "state_region": "eu-west-1"}


def resource(address, actions, rtype):
    return {"address": address, "mode": "managed", "type": rtype, "change": {"actions": actions}}


def test_the_review_calls_out_endpoint_replacement_and_iam_changes_at_the_top():
    plan = {"resource_changes": [
        resource("module.endpoint.aws_sagemaker_model.this", ["create"], "aws_sagemaker_model"),
        resource("module.endpoint.aws_sagemaker_endpoint_configuration.this", ["create", "delete"],
                 "aws_sagemaker_endpoint_configuration"),
        resource("module.endpoint.aws_sagemaker_endpoint.this", ["delete", "create"], "aws_sagemaker_endpoint"),
        resource("module.iam.aws_iam_role_policy.lambda", ["update"], "aws_iam_role_policy"),
        resource("module.storage.aws_s3_bucket.this", ["no-op"], "aws_s3_bucket"),
        resource("module.ec2.aws_instance.this", ["delete"], "aws_instance"),
        {"address": "data.aws_iam_policy_document.x", "mode": "data", "type": "aws_iam_policy_document",
         "change": {"actions": ["read"]}},
    ]}
    review = plan_review.summarize(plan, "Plan", MODEL)
    attention, rest = review.split("Plan: ")
    assert "`module.endpoint.aws_sagemaker_endpoint.this` will be **replaced**" in attention
    assert "IAM change (change): `module.iam.aws_iam_role_policy.lambda`" in attention
    assert "aws_sagemaker_endpoint_configuration" not in attention
    assert rest.startswith("1 to add, 1 to change, 2 to replace, 1 to destroy.")
    assert "| destroy | `module.ec2.aws_instance.this` |" in rest
    assert "aws_s3_bucket" not in review and "data.aws_iam_policy_document" not in review


def test_a_plan_that_changes_nothing_says_so():
    review = plan_review.summarize({"resource_changes": [resource("a.b", ["no-op"], "aws_s3_bucket")]}, "Plan")
    assert "Needs attention" not in review
    assert "Plan: 0 to add, 0 to change, 0 to replace, 0 to destroy." in review
    assert "Nothing to change" in review


def test_a_new_plan_starts_the_new_fleet_at_the_size_autoscaling_chose(project):
    c, _ = project
    deployment.plan(c)
    deployed_resources()
    function_answers(200, PREDICTIONS)
    deployment.deploy(c)
    boto3.client("sagemaker", region_name=REGION).update_endpoint_weights_and_capacities(
        EndpointName="dog-breeds-endpoint",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}])

    deployment.plan(c, model_uri=f"s3://{BUCKET}/output/dog-breeds-2/output/model.tar.gz")
    planned = json.loads(terraform_root.plan_files(c)["json"].read_text())["variables"]
    assert planned["endpoint_running_instance_count"]["value"] == 2
    assert planned["endpoint"]["value"] == {"instance_type": aws_settings(c).endpoint_instance_type}
    assert planned["bucket"]["value"] == {"create": False, "name": BUCKET}


def test_waiting_prints_each_status_once_and_stops_at_the_timeout(capsys):
    from invoke.exceptions import Exit

    from aws.session import poll_until

    answers = iter([("Creating", None), ("Creating", None), ("Updating", None), ("InService", {"ok": 1})])
    assert poll_until(lambda: next(answers), label="endpoint e", done=lambda s: s == "InService", timeout_s=60,
                      poll_s=0, timeout_message=str) == {"ok": 1}
    printed = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["endpoint e: Creating", "endpoint e: Updating", "endpoint e: InService"]

    with pytest.raises(Exit, match="^still Creating$"):
        poll_until(lambda: ("Creating", None), label="endpoint e", done=lambda s: s == "InService", timeout_s=0.05,
                   poll_s=0.01, timeout_message=lambda status: f"still {status}")
