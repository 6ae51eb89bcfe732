"""The Terraform code read the way a platform reviewer reads it (python-hcl2, no provider, no AWS).

Each test is one thing a reviewer checks before approving: the module layout, documented inputs and outputs, the
autoscaling and concurrency defaults, least-privilege policies, and a hardened training host.
"""

import functools
import re
from pathlib import Path

import hcl2
import pytest

TERRAFORM = Path(__file__).resolve().parent.parent / "terraform"
MODULES = ("storage", "iam", "endpoint", "autoscaling", "lambda", "ec2_training_host")
MODULE_DIRS = [TERRAFORM / "modules" / name for name in MODULES]
ALL_DIRS = [TERRAFORM] + MODULE_DIRS

# Actions AWS only accepts with Resource "*" (no resource-level permissions).
ACTIONS_WITHOUT_RESOURCE_LEVEL = {
    "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
}

# python-hcl2 8 wraps every attribute value in a one-element list; 7 did not.
_WRAPS = hcl2.loads("a = 1\n")["a"] == [1]


def attr(block, name, default=None):
    """An attribute's value as written, whichever python-hcl2 major version parsed it."""
    if name not in block:
        return default
    value = block[name]
    return value[0] if _WRAPS and isinstance(value, list) and len(value) == 1 else value


@functools.lru_cache(maxsize=None)
def parse(path):
    """A file parsed once per session (python-hcl2 is slow); callers only add keys, never change values."""
    with open(path) as handle:
        return hcl2.load(handle)


def blocks(directory, kind):
    """{name: body} of every `variable`/`output` block, or {(type, name): body} of `resource`/`data` blocks.

    Each body also carries `__source__`: the block's text as written, for expressions a reviewer reads literally.
    """
    found = {}
    for path in sorted(directory.glob("*.tf")):
        lines = path.read_text().splitlines()
        for entry in parse(path).get(kind, []):
            for key, body in entry.items():
                named = body.items() if kind in ("resource", "data") else [(None, body)]
                for name, inner in named:
                    if "__start_line__" in inner:  # python-hcl2 records lines for most blocks, not for outputs
                        inner["__source__"] = "\n".join(lines[inner["__start_line__"] - 1:inner["__end_line__"]])
                    found[(key, name) if name else key] = inner
    return found


def flat(text):
    """Source text with runs of whitespace collapsed, so alignment does not matter to a comparison."""
    return re.sub(r"\s+", " ", text)


def local_source(directory):
    """The text of the module's locals blocks."""
    main = (directory / "main.tf").read_text()
    return flat(" ".join(re.findall(r"^locals \{\n(.*?)^\}", main, re.M | re.S)))


def policy_documents():
    """(module, document name, body) of every aws_iam_policy_document in the configuration."""
    for directory in ALL_DIRS:
        for (kind, name), body in blocks(directory, "data").items():
            if kind == "aws_iam_policy_document":
                yield directory.name, name, body


def statements(document):
    """Every statement of a policy document, including the content of dynamic "statement" blocks."""
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        for label, body in dynamic.items():
            if label == "statement":
                found += body.get("content", [])
    return found


def as_list(value):
    return value if isinstance(value, list) else [value]


def optional_defaults(variable):
    """{attribute: default} of the optional(type, default) attributes of an object variable, as written."""
    return {name: default.strip().strip('"') for name, default in
            re.findall(r"(\w+)\s*=\s*optional\(\w+,\s*([^()]+?)\)", variable["__source__"])}


def validation_regex(variable, subject):
    """The regular expression of the `can(regex(...))` validation of a variable."""
    for validation in variable.get("validation", []):
        match = re.search(r'can\(regex\("(.+?)",\s*' + re.escape(subject) + r"\)\)", attr(validation, "condition"))
        if match:
            return match.group(1).encode().decode("unicode_escape")
    raise AssertionError(f"no regex validation of {subject}")


@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda path: path.name)
def test_every_module_has_the_four_files_and_a_readme(directory):
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (directory / name).is_file(), f"{directory.name} lacks {name}"


def test_the_root_configuration_ships_an_example_of_its_variables():
    example = (TERRAFORM / "terraform.tfvars.example").read_text()
    variables = blocks(TERRAFORM, "variable")
    assert "model_data_url" in example
    assert set(re.findall(r"^(?:# )?(\w+) *=", example, re.M)) <= set(variables)


@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda path: path.name)
def test_every_variable_has_a_type_and_a_description_and_every_output_a_description(directory):
    for name, variable in blocks(directory, "variable").items():
        assert attr(variable, "type"), f"{directory.name}: variable {name} has no type"
        assert len(attr(variable, "description", "")) > 15, f"{directory.name}: variable {name} is not described"
        assert "any" not in re.findall(r"\w+", attr(variable, "type")), f"{directory.name}: variable {name} is `any`"
    for name, output in blocks(directory, "output").items():
        assert len(attr(output, "description", "")) > 15, f"{directory.name}: output {name} is not described"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda path: path.name)
def test_every_readme_documents_every_input_and_output(directory):
    readme = (directory / "README.md").read_text()
    assert "## Inputs" in readme and "## Outputs" in readme
    for name in list(blocks(directory, "variable")) + list(blocks(directory, "output")):
        assert re.search(rf"^\|\s*`?{name}`?\s*\|", readme, re.M), f"{directory.name}/README.md misses {name}"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda path: path.name)
def test_versions_pin_terraform_1_5_and_the_current_aws_provider_major(directory):
    terraform = parse(directory / "versions.tf")["terraform"][0]
    assert attr(terraform, "required_version") == ">= 1.5"
    aws = attr(attr(terraform, "required_providers"), "aws")
    assert aws["source"] == "hashicorp/aws"
    assert re.fullmatch(r">= [56]\.\d+(\.\d+)?, < 7\.0", aws["version"]), aws["version"]


def test_module_outputs_are_named_thing_attribute():
    for directory in MODULE_DIRS:
        for name in blocks(directory, "output"):
            assert "_" in name, f"{directory.name}: output {name} is not <thing>_<attribute>"


def test_each_module_names_its_main_resource_this():
    main = {"storage": "aws_s3_bucket", "endpoint": "aws_sagemaker_endpoint", "autoscaling": "aws_appautoscaling_target",
            "lambda": "aws_lambda_function", "ec2_training_host": "aws_instance"}
    for module, resource_type in main.items():
        assert (resource_type, "this") in blocks(TERRAFORM / "modules" / module, "resource")


def test_autoscaling_defaults_are_1_to_2_instances_at_5_invocations_with_30_s_cooldowns():
    variables = blocks(TERRAFORM / "modules" / "autoscaling", "variable")
    expected = {"min_capacity": 1, "max_capacity": 2, "target_invocations_per_instance": 5,
                "scale_in_cooldown": 30, "scale_out_cooldown": 30}
    assert {name: attr(variables[name], "default") for name in expected} == expected
    for name in expected:
        assert variables[name].get("validation"), f"autoscaling variable {name} is not validated"
    root = optional_defaults(blocks(TERRAFORM, "variable")["autoscaling"])
    assert {name: int(root[name]) for name in expected} == expected
    policy = blocks(TERRAFORM / "modules" / "autoscaling", "resource")[("aws_appautoscaling_policy", "this")]
    tracking = attr(policy, "target_tracking_scaling_policy_configuration")
    metric = attr(tracking, "predefined_metric_specification")
    assert attr(metric, "predefined_metric_type") == "SageMakerVariantInvocationsPerInstance"
    target = blocks(TERRAFORM / "modules" / "autoscaling", "resource")[("aws_appautoscaling_target", "this")]
    assert attr(target, "scalable_dimension") == "sagemaker:variant:DesiredInstanceCount"


def test_the_function_reserves_a_concurrency_of_10_by_default():
    variables = blocks(TERRAFORM / "modules" / "lambda", "variable")
    assert attr(variables["reserved_concurrency"], "default") == 10
    root = optional_defaults(blocks(TERRAFORM, "variable")["function"])
    assert root["reserved_concurrency"] == "10"
    function = blocks(TERRAFORM / "modules" / "lambda", "resource")[("aws_lambda_function", "this")]
    assert attr(function, "reserved_concurrent_executions") == "${var.reserved_concurrency}"


def test_the_function_is_the_lambda_handler_with_its_endpoint_in_the_environment():
    function = blocks(TERRAFORM / "modules" / "lambda", "resource")[("aws_lambda_function", "this")]
    assert attr(blocks(TERRAFORM / "modules" / "lambda", "variable")["handler"], "default") == \
        "lambda_function.lambda_handler"
    source = flat(function["__source__"])
    assert "ENDPOINT_NAME = var.endpoint_name" in source and "LOG_LEVEL = var.log_level" in source
    assert "source_code_hash = fileexists(var.package_path) ? filebase64sha256(var.package_path) : null" in source


def test_the_lambda_role_may_only_invoke_this_endpoint_and_write_its_own_logs():
    iam = TERRAFORM / "modules" / "iam"
    data, resources = blocks(iam, "data"), blocks(iam, "resource")
    document = data[("aws_iam_policy_document", "lambda")]
    assert not document.get("dynamic"), "the Lambda policy must not grow optional statements"
    granted = {(action, resource) for statement in statements(document)
               for action in as_list(attr(statement, "actions")) for resource in as_list(attr(statement, "resources"))}
    assert granted == {("sagemaker:InvokeEndpoint", "${local.endpoint_arn}"),
                       ("logs:CreateLogStream", "${local.lambda_log_group_arn}:*"),
                       ("logs:PutLogEvents", "${local.lambda_log_group_arn}:*")}
    local_values = local_source(iam)
    assert re.search(r'endpoint_arn = "arn:\S+:sagemaker:\S+:endpoint/\$\{lower\(var\.endpoint_name\)\}"', local_values)
    assert 'lambda_log_group_arn = "${local.log_arn}:${var.lambda_log_group_name}"' in local_values
    # Exactly one policy on the role, and no managed policy attached to it.
    on_lambda_role = [key for key, body in resources.items()
                      if key[0].startswith("aws_iam_role_policy") and "aws_iam_role.lambda" in attr(body, "role")]
    assert on_lambda_role == [("aws_iam_role_policy", "lambda")]


def test_the_functions_optional_permissions_exist_only_when_their_feature_is_on():
    resources = blocks(TERRAFORM / "modules" / "lambda", "resource")
    assert attr(resources[("aws_iam_role_policy", "optional_features")], "count") == \
        "${local.needs_extra_permissions ? 1 : 0}"
    assert "needs_extra_permissions = var.tracing_enabled || var.dead_letter_target_arn != null" in \
        local_source(TERRAFORM / "modules" / "lambda")
    root_function = optional_defaults(blocks(TERRAFORM, "variable")["function"])
    assert root_function["tracing"] == "false" and root_function["function_url"] == "false"


def test_no_policy_allows_a_wildcard_action_or_a_wildcard_resource_where_a_narrower_one_exists():
    checked = 0
    for module, name, document in policy_documents():
        for statement in statements(document):
            if attr(statement, "effect", "Allow") != "Allow":
                continue  # the storage module's TLS-only Deny must cover s3:*
            actions = as_list(attr(statement, "actions"))
            for action in actions:
                checked += 1
                assert "*" not in action, f"{module}/{name} allows wildcard action {action}"
            if "*" in as_list(attr(statement, "resources")):
                assert set(actions) <= ACTIONS_WITHOUT_RESOURCE_LEVEL, \
                    f"{module}/{name} grants {actions} on * although they support narrower resources"
    assert checked > 20


def test_no_aws_managed_full_access_or_admin_policy_is_attached():
    for directory in ALL_DIRS:
        for (kind, name), body in blocks(directory, "resource").items():
            if kind in ("aws_iam_role_policy_attachment", "aws_iam_policy_attachment"):
                arn = attr(body, "policy_arn")
                assert not re.search(r"FullAccess|AdministratorAccess|PowerUser", arn), f"{name} attaches {arn}"


def test_the_sagemaker_role_reaches_the_bucket_only_through_its_prefixes():
    document = blocks(TERRAFORM / "modules" / "iam", "data")[("aws_iam_policy_document", "sagemaker")]
    for statement in statements(document):
        actions = as_list(attr(statement, "actions"))
        if any(action.startswith("s3:") for action in actions):
            resources = as_list(attr(statement, "resources"))
            if actions == ["s3:ListBucket"]:
                assert attr(attr(statement, "condition"), "variable") == "s3:prefix"
            else:
                assert all(resource.startswith("${local.objects.") for resource in resources), resources


def test_the_training_host_requires_imdsv2_encrypts_its_disk_and_accepts_no_inbound_traffic():
    directory = TERRAFORM / "modules" / "ec2_training_host"
    resources, variables = blocks(directory, "resource"), blocks(directory, "variable")
    instance = resources[("aws_instance", "this")]
    assert attr(attr(instance, "metadata_options"), "http_tokens") == "required"
    assert attr(attr(instance, "root_block_device"), "encrypted") is True
    assert attr(variables["key_name"], "default") is None
    assert attr(variables["instance_type"], "default") == "t2.medium"
    group = resources[("aws_security_group", "this")]
    assert "ingress" not in group
    assert not any(kind.endswith("ingress_rule") or kind == "aws_security_group_rule" for kind, _ in resources)
    assert [(attr(rule, "from_port"), attr(rule, "to_port")) for rule in group["egress"]] == [(443, 443)]


def test_the_training_host_carries_the_tags_invoke_finds_it_by():
    main = (TERRAFORM / "modules" / "ec2_training_host" / "main.tf").read_text()
    tags = re.search(r"host_tags = merge\(var\.tags, \{(.*?)\}\)", main, re.S).group(1)
    assert re.search(r'Project\s*=\s*var\.name_prefix', tags) and re.search(r'Role\s*=\s*"training-host"', tags)
    assert attr(blocks(TERRAFORM, "module")["ec2_training_host"], "count") == \
        "${var.enable_ec2_training_host ? 1 : 0}"
    assert attr(blocks(TERRAFORM, "variable")["enable_ec2_training_host"], "default") is False


def test_a_function_url_can_only_ever_require_iam_authorization():
    for directory in ALL_DIRS:
        for (kind, name), body in blocks(directory, "resource").items():
            if kind == "aws_lambda_function_url":
                assert attr(body, "authorization_type") == "AWS_IAM"


def test_a_new_model_gets_a_new_configuration_before_the_old_one_goes():
    resources = blocks(TERRAFORM / "modules" / "endpoint", "resource")
    for key in (("aws_sagemaker_model", "this"), ("aws_sagemaker_endpoint_configuration", "this")):
        assert attr(attr(resources[key], "lifecycle"), "create_before_destroy") is True
    configuration = resources[("aws_sagemaker_endpoint_configuration", "this")]
    assert attr(configuration, "name") == "${local.configuration_name}"
    main = (TERRAFORM / "modules" / "endpoint" / "main.tf").read_text()
    hashed = re.search(r"configuration_hash = substr\(sha256\(jsonencode\(\{(.*?)\}\)\)", main, re.S).group(1)
    assert "model = local.model_name" in re.sub(r"\s+", " ", hashed) and "instance_type" in hashed
    assert "initial_instance_count" not in hashed
    model_hashed = re.search(r"model_hash = substr\(sha256\(jsonencode\(\{(.*?)\}\)\)", main, re.S).group(1)
    assert "model_data_url" in model_hashed
    # Autoscaling owns the running count: a change of the initial count alone must not roll the fleet.
    assert attr(attr(configuration, "lifecycle"), "ignore_changes") == \
        ["${production_variants[0].initial_instance_count}"]


def test_model_data_url_is_required_and_must_be_an_s3_model_archive():
    variable = blocks(TERRAFORM, "variable")["model_data_url"]
    assert "default" not in variable
    pattern = re.compile(validation_regex(variable, "var.model_data_url"))
    for good in ("s3://dog-breeds-123456789012/models/v1/model.tar.gz",
                 "s3://my.bucket/output/job-1/output/model.tar.gz"):
        assert pattern.search(good), good
    for bad in ("https://example.com/model.tar.gz", "s3://bucket/model.zip", "s3://B/models/model.tar.gz",
                "s3:///model.tar.gz", "/tmp/model.tar.gz", "s3://bucket/models/model.tar.gz.bak"):
        assert not pattern.search(bad), bad


def test_every_checkov_skip_is_inline_with_its_reason():
    skips = []
    for path in TERRAFORM.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                skips.append(line)
                assert re.search(r"#checkov:skip=CKV2?_AWS_\d+:.{40,}", line), f"{path.name}: {line.strip()}"
    assert skips


def test_optional_parts_are_switched_by_count_for_each_or_dynamic_never_commented_out():
    for path in TERRAFORM.rglob("*.tf"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.match(r"\s*(#|//)\s*(resource|data|module|dynamic)\s+\"", line), \
                f"{path.relative_to(TERRAFORM)}:{number} has commented-out code"
