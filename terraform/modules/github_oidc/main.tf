data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.region
  account   = data.aws_caller_identity.current.account_id

  # GitHub's OIDC issuer; its tokens carry aud (who may use them) and sub (which repository, event and ref).
  issuer       = "token.actions.githubusercontent.com"
  provider_arn = var.oidc_provider_arn != null ? var.oidc_provider_arn : aws_iam_openid_connect_provider.this[0].arn

  # pull_request: every pull request of the repository; the apply branch: workflow_dispatch plans there.
  plan_subjects = ["repo:${var.repository}:pull_request", "repo:${var.repository}:ref:refs/heads/${var.apply_branch}"]
  # A job that declares a GitHub environment gets sub = repo:X:environment:<name> (not the ref), so only the apply
  # job, gated by the environment's required reviewers and branch rule, gets the apply role; other main workflows
  # (a dispatched plan installing packages) do not.
  apply_subjects = ["repo:${var.repository}:environment:${var.apply_environment}"]

  # What this project's Terraform manages, by name: everything is named <name_prefix>...
  sagemaker_arn = "arn:${local.partition}:sagemaker:${local.region}:${local.account}"
  project_arns = {
    roles            = "arn:${local.partition}:iam::${local.account}:role/${var.name_prefix}-*"
    github_roles     = "arn:${local.partition}:iam::${local.account}:role/${var.name_prefix}-github-*"
    instance_profile = "arn:${local.partition}:iam::${local.account}:instance-profile/${var.name_prefix}-*"
    bucket           = var.bucket_arn
    sagemaker = [
      "${local.sagemaker_arn}:model/${var.name_prefix}-*",
      "${local.sagemaker_arn}:endpoint-config/${var.name_prefix}-*",
      "${local.sagemaker_arn}:endpoint/${var.name_prefix}",
      "${local.sagemaker_arn}:model-package-group/${var.name_prefix}",
      "${local.sagemaker_arn}:model-package/${var.name_prefix}/*",
      "${local.sagemaker_arn}:mlflow-tracking-server/${var.name_prefix}",
    ]
    function = "arn:${local.partition}:lambda:${local.region}:${local.account}:function:${var.name_prefix}"
    log_groups = [
      "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.name_prefix}",
      "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.name_prefix}:*",
      "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/${var.name_prefix}/*",
    ]
    alarms = "arn:${local.partition}:cloudwatch:${local.region}:${local.account}:alarm:${var.name_prefix}-*"
  }

  state_bucket_arn = "arn:${local.partition}:s3:::${var.state.bucket}"
  # The backend's region (aws.state_region) may differ from the deployment's.
  state_region   = coalesce(var.state.region, local.region)
  lock_table_arn = var.state.lock_table == null ? null : "arn:${local.partition}:dynamodb:${local.state_region}:${local.account}:table/${var.state.lock_table}"
}

# One per account: `oidc_provider_arn` uses an existing one instead. AWS trusts GitHub's issuer by its TLS
# certificate authority, so no thumbprint is pinned.
resource "aws_iam_openid_connect_provider" "this" {
  count = var.oidc_provider_arn == null ? 1 : 0

  url            = "https://${local.issuer}"
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

################################################################################
# Trust: which workflow runs may assume each role
################################################################################

data "aws_iam_policy_document" "plan_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = local.plan_subjects
    }
  }
}

data "aws_iam_policy_document" "apply_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = local.apply_subjects
    }
  }
}

################################################################################
# What `invoke plan` needs: read the state (and take its lock), read what the configuration manages
################################################################################

data "aws_iam_policy_document" "read" {
  #checkov:skip=CKV_AWS_356:The "*" statement holds only List/Describe calls that have no resource-level permissions (EC2, Application Auto Scaling, SageMaker List*, CloudWatch Logs DescribeLogGroups); everything else is scoped to the project's ARNs.
  statement {
    sid       = "ReadState"
    actions   = ["s3:GetObject"]
    resources = ["${local.state_bucket_arn}/${var.state.key}"]
  }

  statement {
    sid       = "ListState"
    actions   = ["s3:ListBucket"]
    resources = [local.state_bucket_arn]

    condition {
      test     = "StringEquals"
      variable = "s3:prefix"
      values   = [var.state.key]
    }
  }

  dynamic "statement" {
    for_each = local.lock_table_arn == null ? [] : [local.lock_table_arn]

    content {
      # terraform plan takes the state lock too.
      sid       = "LockState"
      actions   = ["dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem"]
      resources = [statement.value]
    }
  }

  statement {
    sid = "ReadProjectRoles"
    actions = [
      "iam:GetInstanceProfile", "iam:GetOpenIDConnectProvider", "iam:GetRole", "iam:GetRolePolicy",
      "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole", "iam:ListRolePolicies",
    ]
    resources = [local.project_arns.roles, local.project_arns.instance_profile, local.provider_arn]
  }

  statement {
    # The refresh of aws_s3_bucket reads every part of its configuration; objects are not read.
    sid = "ReadProjectBucketConfiguration"
    actions = [
      "s3:GetAccelerateConfiguration", "s3:GetBucket*", "s3:GetEncryptionConfiguration",
      "s3:GetLifecycleConfiguration", "s3:GetReplicationConfiguration",
    ]
    resources = [local.project_arns.bucket]
  }

  statement {
    sid       = "ReadProjectSageMaker"
    actions   = ["sagemaker:Describe*", "sagemaker:ListTags"]
    resources = local.project_arns.sagemaker
  }

  statement {
    sid       = "ReadProjectFunction"
    actions   = ["lambda:Get*", "lambda:ListTags", "lambda:ListVersionsByFunction"]
    resources = [local.project_arns.function]
  }

  statement {
    sid       = "ReadProjectLogsAndAlarms"
    actions   = ["cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource", "logs:ListTagsForResource", "logs:ListTagsLogGroup"]
    resources = concat(local.project_arns.log_groups, [local.project_arns.alarms])
  }

  statement {
    sid = "DescribeWithoutResourceLevelPermissions"
    actions = [
      "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies",
      "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
      "ec2:DescribeVpcs", "logs:DescribeLogGroups", "sagemaker:ListModelPackages",
    ]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "DescribeProjectKey"
      actions   = ["kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role" "plan" {
  name                 = "${var.name_prefix}-github-plan"
  description          = "GitHub Actions of ${var.repository}: pull requests plan ${var.name_prefix} (read-only)."
  assume_role_policy   = data.aws_iam_policy_document.plan_trust.json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "plan" {
  name   = "terraform-plan"
  role   = aws_iam_role.plan.id
  policy = data.aws_iam_policy_document.read.json
}

################################################################################
# What `invoke deploy --target aws` needs on top: write the state, change what the configuration manages
################################################################################

data "aws_iam_policy_document" "apply" {
  #checkov:skip=CKV_AWS_111:The one write on "*" is Application Auto Scaling's (no resource-level permissions for its register/put calls); every other write names the project's resources.
  #checkov:skip=CKV_AWS_356:The "*" statement is Application Auto Scaling's, whose register/put calls take no resource ARN; its service-linked role is narrowed by iam:AWSServiceName.
  #checkov:skip=CKV_AWS_286:iam:PassRole is limited to the project's own roles (<name_prefix>-*) and to the services that use them (iam:PassedToService).
  #checkov:skip=CKV_AWS_287:Managing the project's roles (<name_prefix>-*) is what applying its Terraform is; attachments are limited to the one managed policy it uses.
  #checkov:skip=CKV_AWS_288:Reading objects is limited to the state file; the model archives are read by SageMaker with its own role.
  #checkov:skip=CKV_AWS_289:Permissions management is limited to the project's roles and instance profiles by ARN, and managed-policy attachment by iam:PolicyARN.
  #checkov:skip=CKV_AWS_290:Every write is scoped to the project's resources by name (<name_prefix>...) except Application Auto Scaling's, which has no resource-level permissions.
  statement {
    sid       = "WriteState"
    actions   = ["s3:PutObject"]
    resources = ["${local.state_bucket_arn}/${var.state.key}"]
  }

  statement {
    sid = "ManageProjectRoles"
    actions = [
      "iam:AddRoleToInstanceProfile", "iam:CreateInstanceProfile", "iam:CreateRole", "iam:DeleteInstanceProfile",
      "iam:DeleteRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:PutRolePolicy",
      "iam:RemoveRoleFromInstanceProfile", "iam:TagInstanceProfile", "iam:TagRole", "iam:UntagRole",
      "iam:UpdateAssumeRolePolicy", "iam:UpdateRole", "iam:UpdateRoleDescription",
    ]
    resources = [local.project_arns.roles, local.project_arns.instance_profile]
  }

  # <name_prefix>-* includes this module's own roles: without this, the apply role could rewrite its own policy or
  # trust (or the plan role's) and grant itself anything. They change only by hand (docs/pull-request-review.md).
  statement {
    sid    = "NeverChangeTheGitHubRoles"
    effect = "Deny"
    actions = [
      "iam:AttachRolePolicy", "iam:CreateRole", "iam:DeleteRole", "iam:DeleteRolePermissionsBoundary",
      "iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy",
      "iam:TagRole", "iam:UntagRole", "iam:UpdateAssumeRolePolicy", "iam:UpdateRole", "iam:UpdateRoleDescription",
    ]
    resources = [local.project_arns.github_roles]
  }

  statement {
    sid       = "AttachOnlyTheSsmInstancePolicy"
    actions   = ["iam:AttachRolePolicy"]
    resources = [local.project_arns.roles]

    condition {
      test     = "ArnEquals"
      variable = "iam:PolicyARN"
      values   = ["arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    }
  }

  statement {
    sid       = "PassProjectRoles"
    actions   = ["iam:PassRole"]
    resources = [local.project_arns.roles]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com", "lambda.amazonaws.com", "sagemaker.amazonaws.com"]
    }
  }

  statement {
    sid       = "TagTheOidcProvider"
    actions   = ["iam:TagOpenIDConnectProvider", "iam:UntagOpenIDConnectProvider"]
    resources = [local.provider_arn]
  }

  statement {
    sid = "ManageProjectBucket"
    actions = [
      "s3:CreateBucket", "s3:PutBucketLogging", "s3:PutBucketOwnershipControls", "s3:PutBucketPolicy",
      "s3:PutBucketPublicAccessBlock", "s3:PutBucketTagging", "s3:PutBucketVersioning", "s3:PutEncryptionConfiguration",
      "s3:PutLifecycleConfiguration",
    ]
    resources = [local.project_arns.bucket]
  }

  statement {
    sid = "ManageProjectSageMaker"
    actions = [
      "sagemaker:AddTags", "sagemaker:CreateEndpoint", "sagemaker:CreateEndpointConfig",
      "sagemaker:CreateMlflowTrackingServer", "sagemaker:CreateModel", "sagemaker:CreateModelPackageGroup",
      "sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteMlflowTrackingServer",
      "sagemaker:DeleteModel", "sagemaker:DeleteTags", "sagemaker:UpdateEndpoint",
      "sagemaker:UpdateEndpointWeightsAndCapacities", "sagemaker:UpdateMlflowTrackingServer",
    ]
    resources = local.project_arns.sagemaker
  }

  statement {
    # deploy's smoke test sends one prediction through the function.
    sid = "ManageProjectFunction"
    actions = [
      "lambda:CreateFunction", "lambda:CreateFunctionUrlConfig", "lambda:DeleteFunction", "lambda:DeleteFunctionConcurrency",
      "lambda:DeleteFunctionUrlConfig", "lambda:InvokeFunction", "lambda:PutFunctionConcurrency", "lambda:TagResource",
      "lambda:UntagResource", "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration",
      "lambda:UpdateFunctionUrlConfig",
    ]
    resources = [local.project_arns.function]
  }

  statement {
    sid = "ManageProjectLogsAndAlarms"
    actions = [
      "cloudwatch:DeleteAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:TagResource", "logs:AssociateKmsKey",
      "logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:DeleteRetentionPolicy", "logs:DisassociateKmsKey",
      "logs:PutRetentionPolicy", "logs:TagResource", "logs:UntagResource",
    ]
    resources = concat(local.project_arns.log_groups, [local.project_arns.alarms])
  }

  statement {
    sid = "ManageEndpointAutoscaling"
    actions = [
      "application-autoscaling:DeleteScalingPolicy", "application-autoscaling:DeregisterScalableTarget",
      "application-autoscaling:PutScalingPolicy", "application-autoscaling:RegisterScalableTarget",
      "application-autoscaling:TagResource",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "CreateAutoscalingServiceRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/*"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["sagemaker.application-autoscaling.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      # The endpoint's encrypted volume and the function's environment take grants on the key.
      sid       = "UseProjectKey"
      actions   = ["kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role" "apply" {
  name                 = "${var.name_prefix}-github-apply"
  description          = "GitHub Actions of ${var.repository}: the ${var.apply_environment} environment applies the reviewed plan of ${var.name_prefix}."
  assume_role_policy   = data.aws_iam_policy_document.apply_trust.json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "apply_read" {
  name   = "terraform-plan"
  role   = aws_iam_role.apply.id
  policy = data.aws_iam_policy_document.read.json
}

resource "aws_iam_role_policy" "apply" {
  name   = "terraform-apply"
  role   = aws_iam_role.apply.id
  policy = data.aws_iam_policy_document.apply.json
}
