"""The SageMaker Model Registry (moto): `invoke models`, `invoke approve` and the approval gate of `invoke plan`,
with the real terraform binary on the provider-less stand-in of terraform/."""

import json
import re

import boto3
import pytest
from invoke.exceptions import Exit

from aws import deployment, terraform_root
from aws_testlib import (  # noqa: F401 (fixtures)
                         BUCKET, REGION, aws_credentials, create_model_package_group, make_context, moto_account,
                         register_version, registered_versions, stand_in_terraform)

CALLER = "arn:aws:sts::123456789012:user/moto"     # moto's caller identity
FIRST = f"s3://{BUCKET}/output/dog-breeds-1/output/model.tar.gz"
SECOND = f"s3://{BUCKET}/output/dog-breeds-2/output/model.tar.gz"


@pytest.fixture
def registry(moto_account, tmp_path):
    create_model_package_group()
    return make_context(tmp_path, terraform_dir=str(stand_in_terraform(tmp_path)), bucket=BUCKET)


def test_models_lists_versions_newest_first_with_metrics_data_source_and_approval(registry, capsys):
    import tasks

    register_version(registry, FIRST, metrics={"valid_accuracy": 0.5, "valid_loss": 1.5})
    register_version(registry, SECOND, source="EC2 training host i-0abc")
    tasks.approve(registry, "1", reason="baseline for the demo", target="aws")
    capsys.readouterr()

    listed = tasks.models(registry, target="aws")

    assert [(v.number, v.status) for v in listed] == [(2, "PendingManualApproval"), (1, "Approved")]
    printed = capsys.readouterr().out
    assert printed.index("   2  PendingManualApproval") < printed.index("   1  Approved")
    assert "valid accuracy 0.8125 loss 0.6100, test accuracy 0.7900 loss 0.6600" in printed
    assert "valid accuracy 0.5000 loss 1.5000" in printed
    assert f"data: s3://{BUCKET}/data/dogImages/ (fingerprint 0a1b2c3d4e5f6a7b)" in printed
    assert "source: EC2 training host i-0abc" in printed
    assert re.search(rf"approved by {re.escape(CALLER)} at \S+: baseline for the demo", printed)


def test_approve_and_reject_record_who_and_why(registry, capsys):
    import tasks

    register_version(registry, FIRST)
    capsys.readouterr()
    tasks.approve(registry, "1", reason="valid accuracy above the bar", target="aws")
    assert capsys.readouterr().out.strip() == (f"version 1 of dog-breeds: PendingManualApproval -> Approved by "
                                              f"{CALLER} (valid accuracy above the bar)")
    [version] = registered_versions()
    assert version["ModelApprovalStatus"] == "Approved"
    assert version["ApprovalDescription"] == "valid accuracy above the bar"
    assert version["CustomerMetadataProperties"]["approved_by"] == CALLER
    assert version["CustomerMetadataProperties"]["valid_accuracy"] == "0.8125"      # the metrics stay

    tasks.approve(registry, "1", reject=True, reason="fails on puppies", target="aws")
    [version] = registered_versions()
    assert version["ModelApprovalStatus"] == "Rejected"
    assert version["ApprovalDescription"] == "fails on puppies"


@pytest.mark.parametrize("steps, message", [
    ([("1", False)], r"^version 1 is already Approved \(approved by .*\): nothing to change$"),
    ([], r"^no version 7 in model package group dog-breeds \(versions: 1\): `invoke models` lists them$"),
    ([("1", True)], r"^version 1 is already Rejected \(rejected by .*\): nothing to change$"),
])
def test_approving_twice_or_a_version_that_does_not_exist_stops_with_one_line(registry, steps, message):
    from aws import commands

    register_version(registry, FIRST)
    for number, reject in steps:
        commands.approve(registry, number, reject=reject)
    with pytest.raises(Exit, match=message):
        commands.approve(registry, "7" if not steps else steps[-1][0], reject=bool(steps and steps[-1][1]))


def test_a_version_that_is_no_number_stops_with_one_line(registry):
    from aws import commands

    with pytest.raises(Exit, match=r"^not a version number: 'latest' \(a positive integer"):
        commands.approve(registry, "latest")


def test_plan_without_an_approved_version_refuses_in_one_line_and_writes_no_plan(registry):
    register_version(registry, FIRST)          # pending
    with pytest.raises(Exit) as refused:
        deployment.plan(registry)
    assert refused.value.message == ("no approved model version in dog-breeds: `invoke models`, then "
                                     "`invoke approve N`")
    assert not any(path.exists() for path in terraform_root.plan_files(registry).values())


def test_plan_deploys_the_newest_approved_version_and_its_review_names_it(registry):
    register_version(registry, FIRST, approve=True, reason="first good one")
    second = register_version(registry, SECOND, approve=True, reason="better on test",
                              source="SageMaker training job dog-breeds-2")
    register_version(registry, f"s3://{BUCKET}/output/dog-breeds-3/output/model.tar.gz")    # newer, pending

    review = deployment.plan(registry)

    files = terraform_root.plan_files(registry)
    assert json.loads(files["json"].read_text())["variables"]["model_data_url"]["value"] == SECOND
    assert json.loads(files["meta"].read_text())["model_package_arn"] == second
    assert f"| Version | 2 of model package group `dog-breeds` (`{second}`) |" in review
    assert "| Metrics | valid accuracy 0.8125 loss 0.6100, test accuracy 0.7900 loss 0.6600 |" in review
    assert f"| Data | s3://{BUCKET}/data/dogImages/ (fingerprint 0a1b2c3d4e5f6a7b) |" in review
    assert "| Source | SageMaker training job dog-breeds-2 |" in review
    assert re.search(rf"\| Approval \| approved by {re.escape(CALLER)} at \S+: better on test \|", review)
    assert files["review"].read_text() == review


def test_model_uri_wins_over_the_registry_and_the_review_says_so(registry):
    register_version(registry, FIRST, approve=True)
    review = deployment.plan(registry, model_uri=SECOND)
    files = terraform_root.plan_files(registry)
    assert json.loads(files["json"].read_text())["variables"]["model_data_url"]["value"] == SECOND
    assert json.loads(files["meta"].read_text())["model_package_arn"] is None
    assert "Not chosen through the model registry (`--model-uri`): no approval recorded." in review


def test_the_pin_deploys_that_version_and_only_when_it_is_approved(registry):
    first = register_version(registry, FIRST, approve=True)
    register_version(registry, SECOND, approve=True)
    register_version(registry, f"s3://{BUCKET}/output/dog-breeds-3/output/model.tar.gz")

    registry.config.aws.model_version = 3
    with pytest.raises(Exit, match=r"^aws.model_version pins version 3, which is PendingManualApproval, not "
                                   r"Approved: `invoke approve 3 --target aws`, or pin an approved one$"):
        deployment.plan(registry)
    registry.config.aws.model_version = 9
    with pytest.raises(Exit, match=r"^aws.model_version pins version 9, which model package group dog-breeds "
                                   r"does not have"):
        deployment.plan(registry)

    registry.config.aws.model_version = 1
    deployment.plan(registry)
    meta = json.loads(terraform_root.plan_files(registry)["meta"].read_text())
    assert (meta["model_data_url"], meta["model_package_arn"]) == (FIRST, first)


def test_deploy_refuses_a_plan_whose_version_was_rejected_after_the_review(registry):
    from aws import commands

    register_version(registry, FIRST, approve=True)
    deployment.plan(registry)
    commands.approve(registry, "1", reject=True, reason="found a bug")
    with pytest.raises(Exit, match=r"^model version 1 is Rejected since the plan was made \(rejected by .*: "
                                   r"found a bug\): run `invoke plan` again$"):
        deployment.deploy(registry)


def test_destroy_needs_no_model_version(registry):
    deployment.destroy(registry)          # nothing registered, nothing deployed: terraform destroys nothing
    assert boto3.client("sagemaker", region_name=REGION).list_model_packages(
        ModelPackageGroupName="dog-breeds")["ModelPackageSummaryList"] == []
