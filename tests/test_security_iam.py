"""Least privilege: which IAM resources the Terraform declares at all.

What each role may do is planned, not read here: terraform/tests/iam.tftest.hcl holds who may assume each role,
the reviewed list of every statement of each role (actions, the ARNs they reach, conditions), no wildcard action
and "*" only for actions without resource-level permissions; lambda.tftest.hcl holds the function's optional
grants. Those runs see only the resources they name, so this file checks that there are no others: one inline
policy per role, one managed policy, no IAM user. checkov's 0 failed checks are tests/test_terraform_lint.py's.
"""

from pathlib import Path

import hcl2
import pytest

TERRAFORM = Path(__file__).resolve().parent.parent / "terraform"
CONFIGURATIONS = [TERRAFORM, *sorted(path for path in (TERRAFORM / "modules").iterdir() if path.is_dir())]
_WRAPS = hcl2.loads("a = 1\n")["a"] == [1]   # python-hcl2 8 wraps each attribute value in a one-element list

# resource type -> {(configuration, name): the role it attaches to, as written}; anything else is unreviewed.
REVIEWED = {
    "aws_iam_role": {("iam", "sagemaker"): None, ("iam", "lambda"): None, ("iam", "ec2_training"): None,
                     ("model_registry", "tracking_server"): None,
                     ("github_oidc", "plan"): None, ("github_oidc", "apply"): None},
    "aws_iam_role_policy": {("iam", "sagemaker"): "${aws_iam_role.sagemaker.id}",
                            ("iam", "lambda"): "${aws_iam_role.lambda.id}",
                            ("iam", "ec2_training"): "${aws_iam_role.ec2_training.id}",
                            ("lambda", "optional_features"): "${var.role_name}",
                            ("model_registry", "tracking_server"): "${aws_iam_role.tracking_server[0].id}",
                            ("github_oidc", "plan"): "${aws_iam_role.plan.id}",
                            ("github_oidc", "apply_read"): "${aws_iam_role.apply.id}",
                            ("github_oidc", "apply"): "${aws_iam_role.apply.id}"},
    "aws_iam_role_policy_attachment": {("iam", "ec2_training_ssm_core"): "${aws_iam_role.ec2_training.name}"},
    "aws_iam_instance_profile": {("iam", "ec2_training"): "${aws_iam_role.ec2_training.name}"},
    "aws_iam_openid_connect_provider": {("github_oidc", "this"): None},
}


def iam_resources(directory):
    """{(type, name): body} of the aws_iam_* resources declared in one configuration folder."""
    found = {}
    for path in sorted(directory.glob("*.tf")):
        with open(path) as handle:
            for entry in hcl2.load(handle).get("resource", []):
                for kind, named in entry.items():
                    if kind.startswith("aws_iam_"):
                        found.update({(kind, name): body for name, body in named.items()})
    return found


def role_of(body):
    role = body.get("role")
    return role[0] if _WRAPS and isinstance(role, list) and len(role) == 1 else role


@pytest.mark.parametrize("directory", CONFIGURATIONS, ids=lambda path: path.name)
def test_every_iam_resource_is_a_reviewed_one_on_its_reviewed_role(directory):
    declared = {(kind, name): role_of(body) for (kind, name), body in iam_resources(directory).items()}
    reviewed = {(kind, name): role for kind, resources in REVIEWED.items()
                for (configuration, name), role in resources.items() if configuration == directory.name}
    assert declared == reviewed, f"{directory.name}: IAM resources differ from the reviewed ones"
