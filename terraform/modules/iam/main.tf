data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# The AWS Deep Learning Containers registry differs by region; the data source knows which account holds it.
data "aws_sagemaker_prebuilt_ecr_image" "pytorch" {
  repository_name = "pytorch-inference"
}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.region
  account   = data.aws_caller_identity.current.account_id
  log_arn   = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group"

  # SageMaker ARNs carry the resource name in lower case.
  endpoint_arn = "arn:${local.partition}:sagemaker:${local.region}:${local.account}:endpoint/${lower(var.endpoint_name)}"

  # Known at plan time (the name is an input), like the endpoint's: the policies show the one server they reach.
  tracking_server_enabled = var.mlflow_tracking_server_name != null
  tracking_server_arn     = local.tracking_server_enabled ? "arn:${local.partition}:sagemaker:${local.region}:${local.account}:mlflow-tracking-server/${var.mlflow_tracking_server_name}" : null
  # The MLflow client writes a run's artifacts straight to the server's artifact store, not through the server.
  tracking_prefixes = local.tracking_server_enabled ? [var.s3_prefixes.mlflow] : []

  lambda_log_group_arn   = "${local.log_arn}:${var.lambda_log_group_name}"
  ec2_log_group_arn      = "${local.log_arn}:${var.ec2_log_group_name}"
  training_log_group_arn = "${local.log_arn}:/aws/sagemaker/TrainingJobs"
  endpoint_log_group_arn = "${local.log_arn}:/aws/sagemaker/Endpoints/${var.endpoint_name}"

  ecr_repository_arn_prefix = "arn:${local.partition}:ecr:${local.region}:${data.aws_sagemaker_prebuilt_ecr_image.pytorch.registry_id}:repository"

  objects = { for name, prefix in var.s3_prefixes : name => "${var.bucket_arn}/${prefix}*" }

  # ListBucket is a bucket-level action: it is narrowed to the prefixes with the s3:prefix condition.
  sagemaker_list_prefixes = concat([for name in ["data", "models", "output", "checkpoints", "code"] : var.s3_prefixes[name]], local.tracking_prefixes)
  ec2_list_prefixes       = concat([var.s3_prefixes.data, var.s3_prefixes.models], local.tracking_prefixes)

  # What an MLflow client does for a training run: find or create its experiment, create and update the run, log
  # params, metrics, tags, inputs and models. Nothing that deletes, renames or registers.
  tracking_actions = [
    "sagemaker-mlflow:CreateExperiment",
    "sagemaker-mlflow:CreateRun",
    "sagemaker-mlflow:FinalizeLoggedModel",
    "sagemaker-mlflow:GetExperiment",
    "sagemaker-mlflow:GetExperimentByName",
    "sagemaker-mlflow:GetLoggedModel",
    "sagemaker-mlflow:GetMetricHistory",
    "sagemaker-mlflow:GetRun",
    "sagemaker-mlflow:ListArtifacts",
    "sagemaker-mlflow:ListLoggedModelArtifacts",
    "sagemaker-mlflow:LogBatch",
    "sagemaker-mlflow:LogInputs",
    "sagemaker-mlflow:LogLoggedModelParams",
    "sagemaker-mlflow:LogMetric",
    "sagemaker-mlflow:LogModel",
    "sagemaker-mlflow:LogOutputs",
    "sagemaker-mlflow:LogParam",
    "sagemaker-mlflow:SearchExperiments",
    "sagemaker-mlflow:SearchRuns",
    "sagemaker-mlflow:SetExperimentTag",
    "sagemaker-mlflow:SetLoggedModelTags",
    "sagemaker-mlflow:SetTag",
    "sagemaker-mlflow:UpdateRun",
  ]
}

################################################################################
# SageMaker execution role: training jobs, tuning jobs and the endpoint's model
################################################################################

data "aws_iam_policy_document" "sagemaker_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "sagemaker" {
  name               = "${var.name_prefix}-sagemaker-execution"
  description        = "SageMaker training jobs and endpoint of ${var.name_prefix}: read data and models, write outputs, checkpoints and logs."
  assume_role_policy = data.aws_iam_policy_document.sagemaker_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "sagemaker" {
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for prefix in local.sagemaker_list_prefixes : [prefix, "${prefix}*"]])
    }
  }

  statement {
    sid     = "ReadDataCodeAndModels"
    actions = ["s3:GetObject"]
    resources = [
      local.objects.data,
      local.objects.code,
      local.objects.models,
      local.objects.output,
      local.objects.checkpoints,
    ]
  }

  statement {
    sid     = "WriteOutputsCheckpointsAndCapture"
    actions = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [
      local.objects.output,
      local.objects.checkpoints,
      local.objects.data_capture,
    ]
  }

  statement {
    sid       = "PruneCheckpoints"
    actions   = ["s3:DeleteObject"]
    resources = [local.objects.checkpoints]
  }

  statement {
    # The prebuilt PyTorch images that training (pytorch-training) and the endpoint (pytorch-inference) run.
    sid     = "PullFrameworkImages"
    actions = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [
      "${local.ecr_repository_arn_prefix}/pytorch-training",
      "${local.ecr_repository_arn_prefix}/pytorch-inference",
    ]
  }

  statement {
    # ecr:GetAuthorizationToken has no resource-level permissions: AWS only accepts "*" here.
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid     = "OwnLogs"
    actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [
      local.training_log_group_arn,
      "${local.training_log_group_arn}:*",
      local.endpoint_log_group_arn,
      "${local.endpoint_log_group_arn}:*",
    ]
  }

  statement {
    # PutMetricData has no resource-level permissions; the namespace condition is how it is narrowed.
    sid       = "OwnMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringLike"
      variable = "cloudwatch:namespace"
      values   = ["/aws/sagemaker/*"]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "UseProjectKey"
      actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.tracking_server_enabled ? [local.tracking_server_arn] : []

    content {
      sid       = "LogToTrackingServer"
      actions   = local.tracking_actions
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.tracking_server_enabled ? [local.objects.mlflow] : []

    content {
      sid       = "WriteTrackingArtifacts"
      actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.enable_sagemaker_vpc_access ? ["describe"] : []

    content {
      # Describe calls have no resource-level permissions.
      sid = "DescribeVpc"
      actions = [
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
      ]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_sagemaker_vpc_access ? ["manage"] : []

    content {
      sid = "ManageJobNetworkInterfaces"
      actions = [
        "ec2:CreateNetworkInterface",
        "ec2:CreateNetworkInterfacePermission",
        "ec2:DeleteNetworkInterface",
        "ec2:DeleteNetworkInterfacePermission",
      ]
      resources = [
        "arn:${local.partition}:ec2:${local.region}:${local.account}:network-interface/*",
        "arn:${local.partition}:ec2:${local.region}:${local.account}:subnet/*",
        "arn:${local.partition}:ec2:${local.region}:${local.account}:security-group/*",
      ]
    }
  }
}

resource "aws_iam_role_policy" "sagemaker" {
  name   = "least-privilege"
  role   = aws_iam_role.sagemaker.id
  policy = data.aws_iam_policy_document.sagemaker.json
}

################################################################################
# Lambda role: invoke this one endpoint, write this one log group. Nothing else.
################################################################################

data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda" {
  name               = "${var.name_prefix}-lambda"
  description        = "Function of ${var.name_prefix}: invoke endpoint ${var.endpoint_name} and write its own logs, nothing else."
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "lambda" {
  statement {
    sid       = "InvokeThisEndpoint"
    actions   = ["sagemaker:InvokeEndpoint"]
    resources = [local.endpoint_arn]
  }

  statement {
    sid       = "WriteOwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.lambda_log_group_arn}:*"]
  }
}

resource "aws_iam_role_policy" "lambda" {
  name   = "least-privilege"
  role   = aws_iam_role.lambda.id
  policy = data.aws_iam_policy_document.lambda.json
}

################################################################################
# EC2 training host: Systems Manager, data and model prefixes, its own logs
################################################################################

data "aws_iam_policy_document" "ec2_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ec2_training" {
  name               = "${var.name_prefix}-ec2-training"
  description        = "EC2 training host of ${var.name_prefix}: Systems Manager, read/write data and models, write its logs."
  assume_role_policy = data.aws_iam_policy_document.ec2_trust.json
  tags               = var.tags
}

# Systems Manager's own minimal policy for managed instances (session and run command); not a FullAccess policy.
resource "aws_iam_role_policy_attachment" "ec2_training_ssm_core" {
  role       = aws_iam_role.ec2_training.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "ec2_training" {
  statement {
    sid       = "ListDataAndModels"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for prefix in local.ec2_list_prefixes : [prefix, "${prefix}*"]])
    }
  }

  statement {
    sid       = "ReadWriteDataAndModels"
    actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    resources = [local.objects.data, local.objects.models]
  }

  statement {
    sid       = "WriteOwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [local.ec2_log_group_arn, "${local.ec2_log_group_arn}:*"]
  }

  statement {
    # The SSM agent looks its output log group up before writing; listing needs the account's log-group ARN space.
    sid       = "FindOwnLogGroup"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["${local.log_arn}:*"]
  }

  dynamic "statement" {
    for_each = local.tracking_server_enabled ? [local.tracking_server_arn] : []

    content {
      sid       = "LogToTrackingServer"
      actions   = local.tracking_actions
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.tracking_server_enabled ? [local.objects.mlflow] : []

    content {
      sid       = "WriteTrackingArtifacts"
      actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
      resources = [statement.value]
    }
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

resource "aws_iam_role_policy" "ec2_training" {
  name   = "least-privilege"
  role   = aws_iam_role.ec2_training.id
  policy = data.aws_iam_policy_document.ec2_training.json
}

# Exists whether or not the host is enabled: it costs nothing and lets `invoke ec2-train` start a host at any time.
resource "aws_iam_instance_profile" "ec2_training" {
  name = "${var.name_prefix}-ec2-training"
  role = aws_iam_role.ec2_training.name
  tags = var.tags
}
