"""The Markdown review of a saved Terraform plan: what `invoke plan` prints and writes next to the plan.

A reviewer reads the top first, so what costs downtime or widens access is called out there: the endpoint being
replaced or destroyed, any IAM change, a bucket being destroyed. Then the model: the registered version, its
metrics, its data and who approved it. Below it, the counts and one row per resource.
"""

from stack_common.model_versions import approval_text, data_text, metrics_text

ENDPOINT_TYPES = {"aws_sagemaker_endpoint"}
IAM_TYPES = {"aws_iam_policy", "aws_iam_role_policy", "aws_iam_role_policy_attachment", "aws_iam_role",
             "aws_iam_instance_profile", "aws_iam_user_policy", "aws_iam_group_policy",
             "aws_iam_policy_attachment", "aws_lambda_permission", "aws_s3_bucket_policy"}
STORAGE_TYPES = {"aws_s3_bucket"}
KINDS = ("add", "change", "replace", "destroy")


def change_kind(actions):
    """Terraform's action list for one resource -> add, change, replace, destroy, or None (no-op, read)."""
    actions = list(actions)
    if "delete" in actions and "create" in actions:
        return "replace"
    if actions == ["create"]:
        return "add"
    if actions == ["update"]:
        return "change"
    if actions == ["delete"]:
        return "destroy"
    return None


def planned_changes(plan):
    """[(kind, address, type)] for every managed resource the plan touches, in the plan's order."""
    changes = []
    for resource in plan.get("resource_changes", []):
        if resource.get("mode", "managed") != "managed":
            continue
        kind = change_kind(resource.get("change", {}).get("actions", []))
        if kind:
            changes.append((kind, resource["address"], resource.get("type", "")))
    return changes


def attention_items(changes):
    items = []
    for kind, address, rtype in changes:
        if rtype in ENDPOINT_TYPES and kind in ("replace", "destroy"):
            items.append(f"The endpoint `{address}` will be **{'replaced' if kind == 'replace' else 'destroyed'}**: "
                         "predictions fail until a new one is InService.")
        elif rtype in IAM_TYPES:
            items.append(f"IAM change ({kind}): `{address}`: check who gains or loses which permission.")
        elif rtype in STORAGE_TYPES and kind in ("replace", "destroy"):
            items.append(f"The bucket `{address}` will be **{kind}ed**: its data, models included, goes with it.")
    return items


def model_lines(model_data_url, version=None, registry=""):
    """What the plan deploys: the registered version, its metrics, data, source and approval, or a bare URI."""
    lines = [f"Model: `{model_data_url}`", ""]
    if version is None:
        return lines + ["Not chosen through the model registry (`--model-uri`): no approval recorded.", ""]
    rows = {"Version": f"{version.number} of model package group `{registry}` (`{version.reference}`)",
            "Metrics": metrics_text(version.metrics), "Data": data_text(version),
            "Source": version.source or "unknown", "MLflow run": version.mlflow_run_id or "none recorded",
            "Approval": approval_text(version)}
    return lines + ["| Model version | |", "| --- | --- |"] + [
        f"| {name} | {text.replace('|', chr(92) + '|')} |" for name, text in rows.items()] + [""]


def summarize(plan, title, model_data_url=None, model_version=None, registry=""):
    """The review text (Markdown) of a plan as `terraform show -json` gives it; `model_version` (a ModelVersion) is
    the registered version it deploys."""
    changes = planned_changes(plan)
    counts = {kind: sum(1 for k, _, _ in changes if k == kind) for kind in KINDS}
    lines = [f"# {title}", ""]
    attention = attention_items(changes)
    if attention:
        lines += ["## Needs attention", ""] + [f"- {item}" for item in attention] + [""]
    if model_data_url:
        lines += model_lines(model_data_url, model_version, registry)
    lines += [f"Plan: {counts['add']} to add, {counts['change']} to change, {counts['replace']} to replace, "
              f"{counts['destroy']} to destroy.", ""]
    if changes:
        lines += ["| Action | Resource |", "| --- | --- |"]
        lines += [f"| {kind} | `{address}` |" for kind, address, _ in changes]
        lines.append("")
    outputs = {name: change for name, change in plan.get("output_changes", {}).items()
               if change.get("actions") not in (["no-op"], None)}
    if outputs:
        lines += ["Outputs that change: " + ", ".join(f"`{name}`" for name in sorted(outputs)), ""]
    if not changes and not outputs:
        lines += ["Nothing to change: the infrastructure already matches the configuration.", ""]
    return "\n".join(lines)
