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
MODULES = ("storage", "iam", "endpoint", "autoscaling", "lambda", "ec2_training_host", "model_registry", "github_oidc")
MODULE_DIRS = [TERRAFORM / "modules" / name for name in MODULES]
ALL_DIRS = [TERRAFORM] + MODULE_DIRS
# An output's value that is one reference (possibly in try(..., null)): var.x, local.x, [data.]aws_type.name.attribute.
OUTPUT_REFERENCE = re.compile(r"\$\{(?:try\()?(?P<reference>[\w.]+?)(?:, *(?:null|None)\))?\}")

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
    """{name: body} of every `variable`/`output`/`module` block, or {(type, name): body} of `resource`/`data`."""
    found = {}
    for path in sorted(directory.glob("*.tf")):
        for entry in parse(path).get(kind, []):
            for key, body in entry.items():
                named = body.items() if kind in ("resource", "data") else [(None, body)]
                for name, inner in named:
                    found[(key, name) if name else key] = inner
    return found


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


def words(name):
    return name.split("_")


def reference_of(value):
    """{type, name[, attribute]} of an expression that is one reference, else None."""
    match = OUTPUT_REFERENCE.fullmatch(re.sub(r"\[\d+\]", "", value))
    parts = match["reference"].removeprefix("data.").split(".") if match else []
    if len(parts) == 2 and parts[0] in ("var", "local"):
        return {"type": parts[0], "name": parts[1]}
    if len(parts) == 3 and parts[0].startswith("aws_"):
        return dict(zip(("type", "name", "attribute"), parts))
    return None


def output_naming_problems(directory):
    """Outputs of a module not named `<thing>_<attribute>` (terraform-aws-modules): the attribute is the last word
    of the attribute it exposes, and the thing is a word of what holds it: the resource's type or name; for a
    variable, a local or any other expression, a resource or data source of the module or the variable or local."""
    things = {word for kind in ("resource", "data") for resource_type, name in blocks(directory, kind)
              for word in words(resource_type.removeprefix("aws_")) + words(name)}
    problems = []
    for name, output in blocks(directory, "output").items():
        value = str(attr(output, "value"))
        reference = reference_of(value)
        *thing, attribute = words(name)
        if not thing or not re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", name):
            problems.append(f"output {name} is not <thing>_<attribute>")
        elif reference and reference["type"] in ("var", "local"):
            if not set(thing) & (set(words(reference["name"])) | things):
                problems.append(f"output {name}: {'_'.join(thing)} does not name {reference['type']}.{reference['name']}")
        elif reference:
            if attribute != words(reference["attribute"])[-1]:
                problems.append(f"output {name} exposes {reference['attribute']}, not its {attribute}")
            if not set(thing) & set(words(reference["type"].removeprefix("aws_")) + words(reference["name"])):
                problems.append(f"output {name}: {'_'.join(thing)} does not name {reference['type']}.{reference['name']}")
        elif not set(thing) & things:
            problems.append(f"output {name}: {'_'.join(thing)} names no resource of the module")
    return problems


@pytest.mark.parametrize("directory", MODULE_DIRS, ids=lambda path: path.name)
def test_module_outputs_are_named_thing_attribute(directory):
    assert output_naming_problems(directory) == []


def test_the_output_name_check_refuses_names_that_do_not_say_what_they_expose(tmp_path):
    (tmp_path / "main.tf").write_text('resource "aws_s3_bucket" "this" {\n  bucket = var.name\n}\n')
    outputs = {"arn": "aws_s3_bucket.this.arn", "bucket_id": "aws_s3_bucket.this.arn",
               "queue_arn": "aws_s3_bucket.this.arn", "first_name": "var.name",
               "role_names": '[for name in ["a"] : upper(name)]', "BucketArn": "aws_s3_bucket.this.arn",
               "bucket_arn": "aws_s3_bucket.this.arn", "bucket_domain_name": "try(aws_s3_bucket.this.bucket_domain_name, null)"}
    (tmp_path / "outputs.tf").write_text("".join(f'output "{name}" {{\n  value = {value}\n}}\n\n'
                                                 for name, value in outputs.items()))
    assert output_naming_problems(tmp_path) == [
        "output arn is not <thing>_<attribute>",
        "output bucket_id exposes arn, not its id",
        "output queue_arn: queue does not name aws_s3_bucket.this",
        "output first_name: first does not name var.name",
        "output role_names: role names no resource of the module",
        "output BucketArn is not <thing>_<attribute>",
    ]


def test_each_module_names_its_main_resource_this():
    main = {"storage": "aws_s3_bucket", "endpoint": "aws_sagemaker_endpoint", "autoscaling": "aws_appautoscaling_target",
            "lambda": "aws_lambda_function", "ec2_training_host": "aws_instance",
            "model_registry": "aws_sagemaker_model_package_group", "github_oidc": "aws_iam_openid_connect_provider"}
    for module, resource_type in main.items():
        assert (resource_type, "this") in blocks(TERRAFORM / "modules" / module, "resource")


def test_a_new_model_and_configuration_are_created_before_the_old_ones_go():
    # A mocked provider plans no replacements (it knows no ForceNew), so the order of one is read from the lifecycle.
    # That a new model gets new ones, and that a new initial count alone does not, is planned in root.tftest.hcl.
    resources = blocks(TERRAFORM / "modules" / "endpoint", "resource")
    for key in (("aws_sagemaker_model", "this"), ("aws_sagemaker_endpoint_configuration", "this")):
        assert attr(attr(resources[key], "lifecycle"), "create_before_destroy") is True, key


def test_model_data_url_has_no_default():
    # Which URLs its validation accepts is planned in root.tftest.hcl.
    assert "default" not in blocks(TERRAFORM, "variable")["model_data_url"]


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
