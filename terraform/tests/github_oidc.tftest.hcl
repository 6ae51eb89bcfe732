# terraform test (Terraform >= 1.7): the github_oidc module on its own, against a mocked AWS provider: who may assume
# the plan and the apply role (GitHub's token claims), and what each may do.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_region" {
    defaults = {
      region = "us-east-1"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    }
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.plan_trust
  values = {
    json = "plan_trust"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.apply_trust
  values = {
    json = "apply_trust"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.read
  values = {
    json = "read"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.apply
  values = {
    json = "apply"
  }
}

variables {
  name_prefix = "dog-breeds"
  repository  = "octo-org/dog-breeds"
  bucket_arn  = "arn:aws:s3:::dog-breeds-123456789012"
  state       = { bucket = "octo-terraform-state", key = "dog-breeds/terraform.tfstate", lock_table = "terraform-locks" }
}

run "pull_requests_of_the_repository_and_its_main_branch_may_assume_the_plan_role_and_only_the_production_environment_the_apply_role" {
  module {
    source = "./modules/github_oidc"
  }

  # Each trust statement as one line: effect, action, principal, then every condition.
  assert {
    condition = [for statement in data.aws_iam_policy_document.plan_trust.statement : join(" ", concat(
      [coalesce(statement.effect, "Allow"), join(",", statement.actions)],
      flatten([for principal in statement.principals : [for id in principal.identifiers : "${principal.type}:${id}"]]),
      sort([for condition in statement.condition : "${condition.test} ${condition.variable} ${join(",", sort(condition.values))}"])
      ))] == [join(" ", [
      "Allow sts:AssumeRoleWithWebIdentity Federated:arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
      "StringEquals token.actions.githubusercontent.com:aud sts.amazonaws.com",
      "StringEquals token.actions.githubusercontent.com:sub repo:octo-org/dog-breeds:pull_request,repo:octo-org/dog-breeds:ref:refs/heads/main",
    ])]
    error_message = "Only GitHub tokens for sts.amazonaws.com from this repository's pull requests (or its main branch) may assume the plan role."
  }

  assert {
    condition = [for statement in data.aws_iam_policy_document.apply_trust.statement : join(" ", concat(
      [coalesce(statement.effect, "Allow"), join(",", statement.actions)],
      flatten([for principal in statement.principals : [for id in principal.identifiers : "${principal.type}:${id}"]]),
      sort([for condition in statement.condition : "${condition.test} ${condition.variable} ${join(",", sort(condition.values))}"])
      ))] == [join(" ", [
      "Allow sts:AssumeRoleWithWebIdentity Federated:arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
      "StringEquals token.actions.githubusercontent.com:aud sts.amazonaws.com",
      "StringEquals token.actions.githubusercontent.com:sub repo:octo-org/dog-breeds:environment:production",
    ])]
    error_message = "Only GitHub tokens for sts.amazonaws.com from jobs in this repository's production environment may assume the apply role: no pull request, no other workflow on main."
  }

  assert {
    condition = alltrue([
      aws_iam_role.plan.assume_role_policy == "plan_trust", aws_iam_role.apply.assume_role_policy == "apply_trust",
      aws_iam_role_policy.plan.role == aws_iam_role.plan.id && aws_iam_role_policy.plan.policy == "read",
      aws_iam_role_policy.apply_read.role == aws_iam_role.apply.id && aws_iam_role_policy.apply_read.policy == "read",
      aws_iam_role_policy.apply.role == aws_iam_role.apply.id && aws_iam_role_policy.apply.policy == "apply",
    ])
    error_message = "The plan role carries the read policy only; the apply role the read and the apply policies."
  }

  assert {
    condition = alltrue([
      aws_iam_openid_connect_provider.this[0].url == "https://token.actions.githubusercontent.com",
      aws_iam_openid_connect_provider.this[0].client_id_list == toset(["sts.amazonaws.com"]),
      output.plan_role_arn == aws_iam_role.plan.arn, output.apply_role_arn == aws_iam_role.apply.arn,
      aws_iam_role.plan.name == "dog-breeds-github-plan", aws_iam_role.apply.name == "dog-breeds-github-apply",
    ])
    error_message = "GitHub's issuer is trusted for the STS audience only; the roles are <name_prefix>-github-plan/-apply."
  }
}

run "an_existing_oidc_provider_is_trusted_and_not_created_again" {
  command = plan

  module {
    source = "./modules/github_oidc"
  }

  variables {
    oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    apply_branch      = "release"
    apply_environment = "prod-eu"
  }

  assert {
    condition = length(aws_iam_openid_connect_provider.this) == 0 && output.oidc_provider_arn == var.oidc_provider_arn && alltrue(flatten([
      for document in [data.aws_iam_policy_document.plan_trust, data.aws_iam_policy_document.apply_trust] : [
        for statement in document.statement : [for principal in statement.principals : principal.identifiers == toset([var.oidc_provider_arn])]
    ]]))
    error_message = "With oidc_provider_arn the account's provider is trusted and no second one is created."
  }

  assert {
    condition = flatten([for statement in data.aws_iam_policy_document.apply_trust.statement : [
      for condition in statement.condition : tolist(condition.values) if endswith(condition.variable, ":sub")
    ]]) == ["repo:octo-org/dog-breeds:environment:prod-eu"]
    error_message = "The apply role follows apply_environment."
  }
}

run "the_plan_role_reads_and_writes_nothing_but_the_state_lock" {
  command = plan

  module {
    source = "./modules/github_oidc"
  }

  assert {
    condition = alltrue(flatten([for statement in data.aws_iam_policy_document.read.statement : [
      for action in statement.actions : can(regex("^[a-z0-9-]+:(Get|List|Describe)", action))
      || (contains(["dynamodb:PutItem", "dynamodb:DeleteItem"], action) && statement.resources == toset(["arn:aws:dynamodb:us-east-1:123456789012:table/terraform-locks"]))
    ]]))
    error_message = "The plan role may only read (Get/List/Describe), and write nothing but the state lock."
  }

  assert {
    condition     = flatten([for statement in data.aws_iam_policy_document.read.statement : tolist(statement.resources) if contains(statement.actions, "s3:GetObject")]) == ["arn:aws:s3:::octo-terraform-state/dog-breeds/terraform.tfstate"]
    error_message = "The only objects the plan role may read are the state's: not the data set, not the models."
  }

  assert {
    condition = alltrue(flatten([for statement in data.aws_iam_policy_document.read.statement : [
      for action in statement.actions : !strcontains(action, "*")
    ] if contains(statement.resources, "*")])) && alltrue(flatten([for statement in data.aws_iam_policy_document.read.statement : [for action in statement.actions : action != "*" && !endswith(action, ":*")]]))
    error_message = "No wildcard service actions; action patterns only on the project's own ARNs."
  }
}

run "the_apply_role_changes_only_what_the_project_names" {
  command = plan

  module {
    source = "./modules/github_oidc"
  }

  assert {
    condition = alltrue(flatten([for statement in data.aws_iam_policy_document.apply.statement : [
      for resource in statement.resources : strcontains(resource, "dog-breeds") || resource == "arn:aws:s3:::octo-terraform-state/dog-breeds/terraform.tfstate"
      || resource == "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
      || resource == "arn:aws:iam::123456789012:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/*"
    ] if statement.sid != "ManageEndpointAutoscaling"]))
    error_message = "Every write of the apply role names the project's resources (<name_prefix>...), the state, or the autoscaling service role."
  }

  assert {
    condition = alltrue(flatten([for statement in data.aws_iam_policy_document.apply.statement : [
      for action in statement.actions : !strcontains(action, "*")
    ]])) && alltrue(flatten([for statement in data.aws_iam_policy_document.apply.statement : [for action in statement.actions : startswith(action, "application-autoscaling:")] if contains(statement.resources, "*")]))
    error_message = "The apply role's actions are named one by one, and \"*\" is Application Auto Scaling's only (no resource-level permissions)."
  }

  assert {
    condition = ([for statement in data.aws_iam_policy_document.apply.statement : [for condition in statement.condition : "${condition.variable} ${join(",", sort(condition.values))}"]
      if contains(statement.actions, "iam:PassRole")] == [["iam:PassedToService ec2.amazonaws.com,lambda.amazonaws.com,sagemaker.amazonaws.com"]]
      && [for statement in data.aws_iam_policy_document.apply.statement : [for condition in statement.condition : "${condition.variable} ${join(",", condition.values)}"]
    if contains(statement.actions, "iam:AttachRolePolicy") && coalesce(statement.effect, "Allow") == "Allow"] == [["iam:PolicyARN arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]])
    error_message = "The project's roles pass only to the services that run them, and the one managed policy they may attach is SSM's instance core."
  }
}

run "the_apply_role_may_never_change_the_github_roles_themselves" {
  command = plan

  module {
    source = "./modules/github_oidc"
  }

  # ManageProjectRoles allows dog-breeds-*, which matches dog-breeds-github-apply: without the Deny the apply role
  # could put itself a policy granting *:*, or let any workflow assume it.
  assert {
    condition = anytrue([for statement in data.aws_iam_policy_document.apply.statement :
      statement.effect == "Deny" && statement.resources == toset(["arn:aws:iam::123456789012:role/dog-breeds-github-*"])
      && length(setsubtract(["iam:AttachRolePolicy", "iam:CreateRole", "iam:DeleteRolePolicy", "iam:PutRolePermissionsBoundary",
      "iam:PutRolePolicy", "iam:UpdateAssumeRolePolicy"], statement.actions)) == 0
    ])
    error_message = "The apply role is explicitly denied creating, changing the policies of and the trust of the <name_prefix>-github-* roles."
  }
}

run "the_state_lock_is_in_the_backend_region_not_the_deployment_region" {
  command = plan

  module {
    source = "./modules/github_oidc"
  }

  variables {
    state = { bucket = "octo-terraform-state", key = "dog-breeds/terraform.tfstate", lock_table = "terraform-locks", region = "eu-west-1" }
  }

  assert {
    condition     = flatten([for statement in data.aws_iam_policy_document.read.statement : tolist(statement.resources) if statement.sid == "LockState"]) == ["arn:aws:dynamodb:eu-west-1:123456789012:table/terraform-locks"]
    error_message = "The lock table's ARN names the backend's region (aws.state_region), where the S3 backend takes the lock."
  }
}

run "rejects_a_repository_that_is_not_owner_slash_name" {
  command = plan

  module {
    source = "./modules/github_oidc"
  }

  variables {
    repository = "octo-org/*"
  }

  expect_failures = [var.repository]
}
