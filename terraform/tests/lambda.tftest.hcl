# terraform test (Terraform >= 1.7): the lambda module on its own, against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
}

variables {
  function_name = "dog-breeds"
  role_arn      = "arn:aws:iam::123456789012:role/dog-breeds-lambda"
  role_name     = "dog-breeds-lambda"
  package_path  = "tests/fixtures/function.zip"
  endpoint_name = "dog-breeds"
}

run "calls_the_endpoint_with_a_reserved_concurrency_of_10" {
  module {
    source = "./modules/lambda"
  }

  assert {
    condition     = aws_lambda_function.this.reserved_concurrent_executions == 10
    error_message = "The function must reserve a concurrency of 10."
  }

  assert {
    condition     = aws_lambda_function.this.environment[0].variables == tomap({ ENDPOINT_NAME = "dog-breeds", LOG_LEVEL = "INFO" })
    error_message = "The function's environment holds only its endpoint's name and its log level."
  }

  assert {
    condition     = aws_lambda_function.this.handler == "lambda_function.lambda_handler"
    error_message = "The handler must be lambda_function.lambda_handler."
  }

  assert {
    condition     = aws_lambda_function.this.source_code_hash == filebase64sha256("tests/fixtures/function.zip")
    error_message = "The function must be deployed with the hash of its package."
  }

  assert {
    condition     = length(aws_lambda_function_url.this) == 0 && length(aws_iam_role_policy.optional_features) == 0 && output.function_url == null
    error_message = "No function URL and no extra permissions by default."
  }

  assert {
    condition     = aws_lambda_function.this.logging_config[0].log_group == aws_cloudwatch_log_group.this.name && aws_cloudwatch_log_group.this.name == "/aws/lambda/dog-breeds"
    error_message = "The function must log to its own log group."
  }
}

run "extra_environment_cannot_redirect_the_function" {
  command = plan

  module {
    source = "./modules/lambda"
  }

  variables {
    environment = { ENDPOINT_NAME = "someone-elses-endpoint", LOG_LEVEL = "DEBUG", EXTRA = "1" }
    log_level   = "WARNING"
  }

  assert {
    condition     = aws_lambda_function.this.environment[0].variables == tomap({ ENDPOINT_NAME = "dog-breeds", LOG_LEVEL = "WARNING", EXTRA = "1" })
    error_message = "ENDPOINT_NAME and LOG_LEVEL always come from their own variables."
  }
}

run "tracing_and_a_dead_letter_queue_add_only_their_own_permissions" {
  command = plan

  module {
    source = "./modules/lambda"
  }

  variables {
    tracing_enabled        = true
    dead_letter_target_arn = "arn:aws:sqs:us-east-1:123456789012:dog-breeds-dlq"
  }

  assert {
    condition     = length(aws_iam_role_policy.optional_features) == 1 && aws_iam_role_policy.optional_features[0].role == "dog-breeds-lambda" && aws_lambda_function.this.tracing_config[0].mode == "Active"
    error_message = "Tracing must be active, with its permissions in the one optional policy."
  }

  assert {
    condition = toset(flatten([for statement in data.aws_iam_policy_document.optional_features[0].statement : [
      for pair in setproduct(statement.actions, statement.resources) : join(" on ", pair)
      ]])) == toset([
      "xray:PutTraceSegments on *",
      "xray:PutTelemetryRecords on *",
      "sqs:SendMessage on arn:aws:sqs:us-east-1:123456789012:dog-breeds-dlq",
    ])
    error_message = "X-Ray's two actions (no resource-level permissions) and sending to this one queue, nothing else."
  }
}

run "a_function_url_requires_iam" {
  module {
    source = "./modules/lambda"
  }

  variables {
    create_function_url = true
  }

  assert {
    condition     = aws_lambda_function_url.this[0].authorization_type == "AWS_IAM"
    error_message = "A function URL must require AWS_IAM authorization."
  }
}

run "refuses_a_package_that_does_not_exist" {
  command = plan

  module {
    source = "./modules/lambda"
  }

  variables {
    package_path = "tests/fixtures/missing.zip"
  }

  expect_failures = [aws_lambda_function.this]
}
