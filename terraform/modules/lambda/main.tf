locals {
  log_group_name = coalesce(var.log_group_name, "/aws/lambda/${var.function_name}")
  dead_letter    = var.dead_letter_target_arn == null ? [] : [var.dead_letter_target_arn]
  dead_letter_action = var.dead_letter_target_arn == null ? null : (
    can(regex("^arn:aws[a-z-]*:sqs:", var.dead_letter_target_arn)) ? "sqs:SendMessage" : "sns:Publish"
  )
  needs_extra_permissions = var.tracing_enabled || var.dead_letter_target_arn != null
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:A customer managed key is a variable (kms_key_arn); without one CloudWatch Logs encrypts the group with its own keys. The function logs request ids, status codes and timings, never payloads.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "optional_features" {
  count = local.needs_extra_permissions ? 1 : 0

  dynamic "statement" {
    for_each = var.tracing_enabled ? ["xray"] : []

    content {
      # X-Ray's write actions have no resource-level permissions: AWS only accepts "*".
      sid       = "WriteTraces"
      actions   = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = local.dead_letter

    content {
      sid       = "SendToDeadLetterTarget"
      actions   = [local.dead_letter_action]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "optional_features" {
  count = local.needs_extra_permissions ? 1 : 0

  name   = "optional-features"
  role   = var.role_name
  policy = data.aws_iam_policy_document.optional_features[0].json
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:The function only calls the public SageMaker Runtime API with IAM auth; a VPC would add a NAT or interface endpoint and nothing to protect.
  #checkov:skip=CKV_AWS_173:The environment holds only the endpoint name and a log level, nothing secret; a customer managed key is a variable (kms_key_arn) and Lambda encrypts with its own key otherwise.
  #checkov:skip=CKV_AWS_50:X-Ray tracing is a variable (tracing_enabled), off by default so that the role holds only InvokeEndpoint and its logs.
  #checkov:skip=CKV_AWS_116:A dead-letter queue only receives failed asynchronous invocations; the function is called synchronously and returns its errors. It is a variable (dead_letter_target_arn) for asynchronous use.
  #checkov:skip=CKV_AWS_272:Code signing is a variable (code_signing_config_arn); the zip is built reproducibly from the reviewed repository and its hash is in the plan.
  function_name                  = var.function_name
  description                    = "Classifies the image at a URL with SageMaker endpoint ${var.endpoint_name}."
  role                           = var.role_arn
  handler                        = var.handler
  runtime                        = var.runtime
  architectures                  = [var.architecture]
  filename                       = var.package_path
  source_code_hash               = fileexists(var.package_path) ? filebase64sha256(var.package_path) : null
  timeout                        = var.timeout
  memory_size                    = var.memory_size
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = var.kms_key_arn
  code_signing_config_arn        = var.code_signing_config_arn

  environment {
    variables = merge(var.environment, {
      ENDPOINT_NAME = var.endpoint_name
      LOG_LEVEL     = var.log_level
    })
  }

  tracing_config {
    mode = var.tracing_enabled ? "Active" : "PassThrough"
  }

  dynamic "dead_letter_config" {
    for_each = local.dead_letter

    content {
      target_arn = dead_letter_config.value
    }
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.this.name
  }

  tags = var.tags

  # The optional permissions must exist before Lambda checks them when the function is created.
  depends_on = [aws_iam_role_policy.optional_features]

  lifecycle {
    precondition {
      condition     = fileexists(var.package_path)
      error_message = "The function package ${var.package_path} does not exist: build it first (invoke deploy builds build/function.zip)."
    }
  }
}

resource "aws_lambda_function_url" "this" {
  count = var.create_function_url ? 1 : 0

  function_name = aws_lambda_function.this.function_name
  # Never NONE: callers sign their requests and need lambda:InvokeFunctionUrl on this function.
  authorization_type = "AWS_IAM"
}
