data "aws_partition" "current" {}

locals {
  tracking_server_enabled = var.mlflow_tracking_server.enabled
  bucket_arn              = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
  artifact_store_uri      = "s3://${var.bucket_name}/${var.artifact_prefix}"
}

# The registry's versions are what `invoke plan` deploys: each one pending until someone approves it.
resource "aws_sagemaker_model_package_group" "this" {
  model_package_group_name        = var.name
  model_package_group_description = var.description
  tags                            = var.tags
}

################################################################################
# Optional SageMaker managed MLflow tracking server (billed by the hour while it exists)
################################################################################

data "aws_iam_policy_document" "tracking_server_trust" {
  count = local.tracking_server_enabled ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "tracking_server" {
  count = local.tracking_server_enabled ? 1 : 0

  name               = "${var.name}-mlflow-tracking-server"
  description        = "MLflow tracking server of ${var.name}: read and write its artifact store under ${local.artifact_store_uri}, nothing else."
  assume_role_policy = data.aws_iam_policy_document.tracking_server_trust[0].json
  tags               = var.tags
}

# Automatic registration into the model registry stays off (the tasks register each version themselves, pending
# approval), so the server needs its artifact store and nothing of SageMaker.
data "aws_iam_policy_document" "tracking_server" {
  count = local.tracking_server_enabled ? 1 : 0

  statement {
    sid       = "LocateBucket"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }

  statement {
    sid       = "ListArtifactStore"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.artifact_prefix, "${var.artifact_prefix}*"]
    }
  }

  statement {
    sid       = "ReadWriteArtifactStore"
    actions   = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = ["${local.bucket_arn}/${var.artifact_prefix}*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "UseProjectKey"
      actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "tracking_server" {
  count = local.tracking_server_enabled ? 1 : 0

  name   = "least-privilege"
  role   = aws_iam_role.tracking_server[0].id
  policy = data.aws_iam_policy_document.tracking_server[0].json
}

resource "aws_sagemaker_mlflow_tracking_server" "this" {
  count = local.tracking_server_enabled ? 1 : 0

  tracking_server_name            = var.name
  artifact_store_uri              = local.artifact_store_uri
  role_arn                        = aws_iam_role.tracking_server[0].arn
  tracking_server_size            = var.mlflow_tracking_server.size
  mlflow_version                  = var.mlflow_tracking_server.mlflow_version
  automatic_model_registration    = false
  weekly_maintenance_window_start = var.mlflow_tracking_server.weekly_maintenance_window_start
  tags                            = var.tags

  # The server checks its role when it starts: the policy must be attached first.
  depends_on = [aws_iam_role_policy.tracking_server]
}
