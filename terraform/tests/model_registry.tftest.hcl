# terraform test (Terraform >= 1.7): the model_registry module on its own, against a mocked AWS provider: the model
# package group always, the MLflow tracking server (and its role) only when it is switched on.

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.tracking_server_trust
  values = {
    json = "tracking_server_trust"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.tracking_server
  values = {
    json = "tracking_server"
  }
}

variables {
  name        = "dog-breeds"
  bucket_name = "dog-breeds-123456789012"
}

run "the_model_package_group_is_named_after_the_deployment_and_the_tracking_server_is_off_by_default" {
  module {
    source = "./modules/model_registry"
  }

  assert {
    condition     = aws_sagemaker_model_package_group.this.model_package_group_name == "dog-breeds" && output.model_package_group_name == "dog-breeds"
    error_message = "The model package group must be named after the deployment (var.name)."
  }

  assert {
    condition = (length(aws_sagemaker_mlflow_tracking_server.this) + length(aws_iam_role.tracking_server) + length(aws_iam_role_policy.tracking_server)
    + length(data.aws_iam_policy_document.tracking_server)) == 0
    error_message = "By default there is no tracking server (it costs money while it exists) and no role for one."
  }

  assert {
    condition     = output.mlflow_tracking_server_arn == "" && output.mlflow_tracking_server_url == "" && output.mlflow_artifact_store_uri == "" && output.tracking_server_role_arn == ""
    error_message = "Without a tracking server its outputs are empty strings (what the training tasks test for)."
  }
}

run "the_tracking_server_keeps_its_artifacts_under_the_mlflow_prefix_of_the_bucket" {
  module {
    source = "./modules/model_registry"
  }

  variables {
    mlflow_tracking_server = { enabled = true }
  }

  assert {
    condition     = aws_sagemaker_mlflow_tracking_server.this[0].artifact_store_uri == "s3://dog-breeds-123456789012/mlflow/" && output.mlflow_artifact_store_uri == "s3://dog-breeds-123456789012/mlflow/"
    error_message = "The artifact store must be the mlflow/ prefix of the project bucket."
  }

  assert {
    condition = alltrue([
      aws_sagemaker_mlflow_tracking_server.this[0].tracking_server_name == "dog-breeds",
      aws_sagemaker_mlflow_tracking_server.this[0].tracking_server_size == "Small",
      aws_sagemaker_mlflow_tracking_server.this[0].automatic_model_registration == false,
      aws_sagemaker_mlflow_tracking_server.this[0].role_arn == aws_iam_role.tracking_server[0].arn,
    ])
    error_message = "A Small server named after the deployment, running as its own role, registering nothing by itself."
  }

  assert {
    condition = alltrue([
      aws_iam_role.tracking_server[0].assume_role_policy == "tracking_server_trust",
      aws_iam_role_policy.tracking_server[0].role == aws_iam_role.tracking_server[0].id,
      aws_iam_role_policy.tracking_server[0].policy == "tracking_server",
    ])
    error_message = "The server's role is trusted by its own document and carries its own policy."
  }

  assert {
    condition     = output.mlflow_tracking_server_arn == aws_sagemaker_mlflow_tracking_server.this[0].arn && output.mlflow_tracking_server_arn != "" && output.mlflow_tracking_server_url == aws_sagemaker_mlflow_tracking_server.this[0].tracking_server_url
    error_message = "The outputs must be the server's ARN and URL."
  }
}

run "the_tracking_server_role_reaches_only_its_artifact_store" {
  command = plan

  module {
    source = "./modules/model_registry"
  }

  variables {
    mlflow_tracking_server = { enabled = true, size = "Medium" }
    kms_key_arn            = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"
  }

  assert {
    condition = [for statement in data.aws_iam_policy_document.tracking_server_trust[0].statement : join(" ", [join(",", statement.actions),
    join(",", flatten([for principal in statement.principals : [for id in principal.identifiers : "${principal.type}:${id}"]]))])] == ["sts:AssumeRole Service:sagemaker.amazonaws.com"]
    error_message = "Only SageMaker may assume the tracking server's role."
  }

  # The reviewed list: a new permission, resource or condition fails here until someone reviews it and adds it.
  assert {
    condition = jsonencode({ for statement in data.aws_iam_policy_document.tracking_server[0].statement : statement.sid => [sort(statement.actions), sort(statement.resources),
      sort([for condition in statement.condition : "${condition.test} ${condition.variable} ${join(",", sort(condition.values))}"])] }) == jsonencode({
      LocateBucket           = [["s3:GetBucketLocation"], ["arn:aws:s3:::dog-breeds-123456789012"], []]
      ListArtifactStore      = [["s3:ListBucket"], ["arn:aws:s3:::dog-breeds-123456789012"], ["StringLike s3:prefix mlflow/,mlflow/*"]]
      ReadWriteArtifactStore = [["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::dog-breeds-123456789012/mlflow/*"], []]
      UseProjectKey          = [["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"], ["arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"], []]
    })
    error_message = "The tracking server's role reaches its artifact store (and the project key) only."
  }

  assert {
    condition     = aws_sagemaker_mlflow_tracking_server.this[0].tracking_server_size == "Medium"
    error_message = "The size is the variable's."
  }
}

run "rejects_a_tracking_server_size_sagemaker_does_not_offer" {
  command = plan

  module {
    source = "./modules/model_registry"
  }

  variables {
    mlflow_tracking_server = { enabled = true, size = "Huge" }
  }

  expect_failures = [var.mlflow_tracking_server]
}
