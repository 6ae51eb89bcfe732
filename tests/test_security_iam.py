"""Least privilege, read from the Terraform the way a security reviewer reads it (python-hcl2, no provider).

tests/test_terraform_modules.py already holds the Lambda role to exactly InvokeEndpoint on one endpoint plus its
logs, forbids wildcard actions and "*" resources where a narrower one exists, and forbids FullAccess/admin
managed policies; checkov's 0 failed checks are tests/test_terraform_lint.py's. This file adds what a reviewer
also signs off: who may assume each role, the complete list of what each role may do (a new permission fails
here until someone reviews it), and that every resource a role reaches is this project's own.
"""

import re
from pathlib import Path

import hcl2
import pytest

TERRAFORM = Path(__file__).resolve().parent.parent / "terraform"
IAM = TERRAFORM / "modules" / "iam"
LAMBDA = TERRAFORM / "modules" / "lambda"

# role -> (trusted service, policy documents attached to it, every action they may grant)
ROLES = {
    "lambda": ("lambda.amazonaws.com", [(IAM, "lambda")], {
        "sagemaker:InvokeEndpoint", "logs:CreateLogStream", "logs:PutLogEvents"}),
    "sagemaker": ("sagemaker.amazonaws.com", [(IAM, "sagemaker")], {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject",
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
        "ecr:GetAuthorizationToken", "logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams",
        "logs:PutLogEvents", "cloudwatch:PutMetricData", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey",
        "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:CreateNetworkInterface",
        "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"}),
    "ec2_training": ("ec2.amazonaws.com", [(IAM, "ec2_training")], {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "logs:CreateLogStream",
        "logs:DescribeLogStreams", "logs:PutLogEvents", "logs:DescribeLogGroups", "kms:Decrypt", "kms:DescribeKey",
        "kms:GenerateDataKey"}),
}
# The function's optional features (X-Ray, dead-letter target), granted to the Lambda role only when switched on.
LAMBDA_OPTIONAL_ACTIONS = {"xray:PutTelemetryRecords", "xray:PutTraceSegments", "${local.dead_letter_action}"}
MANAGED_POLICIES = {("ec2_training", "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")}

# After resolve(): ${partition}, ${region}, ${account} are this account's; ${aws_registry} is AWS's image registry.
LOGS = r"arn:\$\{partition\}:logs:\$\{region\}:\$\{account\}:log-group:"
# What "the project's own" looks like: one bucket (by prefix), one endpoint, its log groups, its key.
PROJECT_RESOURCES = [
    r"\$\{var\.bucket_arn\}",                                    # ListBucket, narrowed by an s3:prefix condition
    r"\$\{var\.bucket_arn\}/\$\{var\.s3_prefixes\.\w+\}\*",          # the objects under one prefix
    r"arn:\$\{partition\}:sagemaker:\$\{region\}:\$\{account\}:endpoint/\$\{lower\(var\.endpoint_name\)\}",
    LOGS + r"\$\{var\.(lambda|ec2)_log_group_name\}(:\*)?",          # a log group and its streams
    LOGS + r"/aws/sagemaker/Endpoints/\$\{var\.endpoint_name\}(:\*)?",
    r"\$\{statement\.value\}",   # the dynamic statements' for_each: var.kms_key_arn or the dead-letter target
]
# Resources that are not the project's own, each with the reason a reviewer accepts it.
ACCOUNT_WIDE_RESOURCES = {
    "*": "actions without resource-level permissions (test_terraform_modules checks which)",
    LOGS.replace("\\", "") + "/aws/sagemaker/TrainingJobs": "SageMaker logs every training job to this AWS-named group",
    LOGS.replace("\\", "") + "/aws/sagemaker/TrainingJobs:*": "its log streams",
    "arn:${partition}:ecr:${region}:${aws_registry}:repository/pytorch-training":
        "AWS's own PyTorch training image, pulled read-only",
    "arn:${partition}:ecr:${region}:${aws_registry}:repository/pytorch-inference":
        "AWS's own PyTorch inference image, pulled read-only",
    LOGS.replace("\\", "") + "*": "logs:DescribeLogGroups lists groups; the SSM agent looks its group up before writing",
    "arn:${partition}:ec2:${region}:${account}:network-interface/*":
        "opt-in VPC access: SageMaker creates interfaces whose ids are not known in advance",
    "arn:${partition}:ec2:${region}:${account}:subnet/*": "same, the subnets they go in",
    "arn:${partition}:ec2:${region}:${account}:security-group/*": "same, their security groups",
}
DATA_SOURCES = {"${data.aws_partition.current.partition}": "${partition}",
                "${data.aws_region.current.region}": "${region}", "${data.aws_region.current.name}": "${region}",
                "${data.aws_caller_identity.current.account_id}": "${account}",
                "${data.aws_sagemaker_prebuilt_ecr_image.pytorch.registry_id}": "${aws_registry}"}
OBJECTS_LOCAL = '${{for name , prefix in var.s3_prefixes : name => "${var.bucket_arn}/${prefix}*"}}'


_WRAPS = hcl2.loads("a = 1\n")["a"] == [1]   # python-hcl2 8 wraps each attribute value in a one-element list


def value(block, name, default=None):
    """An attribute as written, whichever python-hcl2 major version parsed it."""
    found = block.get(name, default)
    return found[0] if _WRAPS and isinstance(found, list) and len(found) == 1 else found


def as_list(item):
    return item if isinstance(item, list) else [item]


def parsed(directory):
    with open(directory / "main.tf") as handle:
        return hcl2.load(handle)


def named_blocks(directory, kind, type_name):
    return {name: body for entry in parsed(directory).get(kind, []) for kind_name, named in entry.items()
            if kind_name == type_name for name, body in named.items()}


def statements(document):
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        found += dynamic.get("statement", {}).get("content", [])
    return found


def local_values(directory):
    return {name: value(entry, name) for entry in parsed(directory).get("locals", []) for name in entry
            if not name.startswith("__")}


def resolve(expression, locals_):
    """Substitute ${local.x} references (repeatedly) so a resource reads as the ARN it becomes."""
    def substitute(match):
        name, key = match.group(1), match.group(2)
        if name == "objects" and key:   # objects = {for name, prefix in var.s3_prefixes : name => "<bucket>/<prefix>*"}
            assert locals_["objects"] == OBJECTS_LOCAL, locals_["objects"]
            return f"${{var.bucket_arn}}/${{var.s3_prefixes.{key}}}*"
        return locals_[name] if isinstance(locals_.get(name), str) and not key else match.group(0)

    for _ in range(5):
        expression = re.sub(r"\$\{local\.(\w+)(?:\.(\w+))?\}", substitute, expression)
    for written, short in DATA_SOURCES.items():
        expression = expression.replace(written, short)
    return expression


def granted(directory, document_name):
    """(action, resource as an ARN expression) pairs of one policy document, dynamic statements included."""
    document = named_blocks(directory, "data", "aws_iam_policy_document")[document_name]
    locals_ = local_values(directory)
    pairs = set()
    for statement in statements(document):
        assert value(statement, "effect", "Allow") == "Allow", f"{document_name}: only Allow statements expected"
        resources = [resolve(resource, locals_) for resource in as_list(value(statement, "resources"))]
        for action in as_list(value(statement, "actions")):
            pairs.update((action, resource) for resource in resources)
    return pairs


@pytest.mark.parametrize("role", ROLES)
def test_each_role_can_be_assumed_only_by_its_own_service(role):
    service = ROLES[role][0]
    roles = named_blocks(IAM, "resource", "aws_iam_role")
    trust_name = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}",
                              value(roles[role], "assume_role_policy")).group(1)
    trust = named_blocks(IAM, "data", "aws_iam_policy_document")[trust_name]
    [statement] = statements(trust)
    assert value(statement, "actions") == ["sts:AssumeRole"]
    assert value(statement, "effect", "Allow") == "Allow"
    [principal] = statement["principals"]
    assert (value(principal, "type"), value(principal, "identifiers")) == ("Service", [service])


@pytest.mark.parametrize("role", ROLES)
def test_every_permission_of_a_role_is_on_its_reviewed_list(role):
    _, documents, allowed = ROLES[role]
    actions = {action for directory, name in documents for action, _ in granted(directory, name)}
    assert actions <= allowed, f"{role} role gained unreviewed permissions: {sorted(actions - allowed)}"
    policies = named_blocks(IAM, "resource", "aws_iam_role_policy")
    attached = {name for name, body in policies.items() if value(body, "role") == f"${{aws_iam_role.{role}.id}}"}
    assert attached == {name for _, name in documents}


def test_the_functions_optional_features_add_only_tracing_and_its_dead_letter_target():
    pairs = granted(LAMBDA, "optional_features")
    assert {action for action, _ in pairs} <= LAMBDA_OPTIONAL_ACTIONS
    assert {resource for action, resource in pairs if not action.startswith("xray:")} == {"${statement.value}"}
    assert named_blocks(LAMBDA, "resource", "aws_iam_role_policy")["optional_features"]["role"] == ["${var.role_name}"]


def test_the_only_managed_policy_is_systems_managers_core_on_the_training_host():
    attachments = named_blocks(IAM, "resource", "aws_iam_role_policy_attachment")
    found = {(re.fullmatch(r"\$\{aws_iam_role\.(\w+)\.name\}", value(body, "role")).group(1), value(body, "policy_arn"))
             for body in attachments.values()}
    assert found == MANAGED_POLICIES
    for directory in [TERRAFORM, *(TERRAFORM / "modules").iterdir()]:
        text = "".join(path.read_text() for path in directory.glob("*.tf"))
        assert "aws_iam_policy_attachment" not in text and "aws_iam_user" not in text
        if directory != IAM:
            assert "aws_iam_role_policy_attachment" not in text, directory


@pytest.mark.parametrize("document", ["lambda", "sagemaker", "ec2_training"])
def test_every_resource_a_role_reaches_is_the_projects_own_or_a_reviewed_exception(document):
    for action, resource in sorted(granted(IAM, document)):
        assert (any(re.fullmatch(pattern, resource) for pattern in PROJECT_RESOURCES)
                or resource in ACCOUNT_WIDE_RESOURCES), f"{document}: {action} on {resource} is not the project's own"


def test_the_lambda_role_reaches_one_endpoint_arn_built_from_its_name():
    [(action, resource)] = [pair for pair in granted(IAM, "lambda") if pair[0].startswith("sagemaker:")]
    assert action == "sagemaker:InvokeEndpoint"
    assert resource == "arn:${partition}:sagemaker:${region}:${account}:endpoint/${lower(var.endpoint_name)}"
