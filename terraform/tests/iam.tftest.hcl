# terraform test (Terraform >= 1.7): the iam module on its own, against a mocked AWS provider. The policy
# documents are data sources: their statements are planned from the configuration as written, so these runs check
# what each role is granted, with the ARNs the module builds.

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

  mock_data "aws_sagemaker_prebuilt_ecr_image" {
    defaults = {
      registry_id = "763104351884"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
}

variables {
  name_prefix           = "dog-breeds"
  bucket_arn            = "arn:aws:s3:::dog-breeds-123456789012"
  endpoint_name         = "Dog-Breeds"
  lambda_log_group_name = "/aws/lambda/dog-breeds"
  ec2_log_group_name    = "/dog-breeds/ec2-training"
}

run "the_lambda_role_may_only_invoke_this_endpoint_and_write_its_own_logs" {
  command = plan

  module {
    source = "./modules/iam"
  }

  assert {
    condition = toset(flatten([for statement in data.aws_iam_policy_document.lambda.statement : [
      for pair in setproduct(statement.actions, statement.resources) : join(" on ", pair)
      ]])) == toset([
      "sagemaker:InvokeEndpoint on arn:aws:sagemaker:us-east-1:123456789012:endpoint/dog-breeds",
      "logs:CreateLogStream on arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/dog-breeds:*",
      "logs:PutLogEvents on arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/dog-breeds:*",
    ])
    error_message = "The Lambda role may invoke its endpoint (SageMaker ARNs are lower case) and write its log group, nothing else."
  }

  assert {
    condition     = aws_iam_role_policy.lambda.policy == data.aws_iam_policy_document.lambda.json && output.endpoint_arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dog-breeds"
    error_message = "The Lambda role's one inline policy is that document."
  }
}

run "the_sagemaker_and_ec2_roles_reach_the_bucket_only_through_their_prefixes" {
  command = plan

  module {
    source = "./modules/iam"
  }

  assert {
    condition = alltrue(flatten([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.ec2_training] : [
      for statement in document.statement : [
        for resource in statement.resources : can(regex("^arn:aws:s3:::dog-breeds-123456789012/(data|models|output|checkpoints|code|data-capture)/\\*$", resource))
      ] if anytrue([for action in statement.actions : startswith(action, "s3:") && action != "s3:ListBucket"])
    ]]))
    error_message = "Object actions must be limited to the project's prefixes (<bucket>/<prefix>/*)."
  }

  assert {
    condition = alltrue(flatten([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.ec2_training] : [
      for statement in document.statement : [for condition in statement.condition : condition.variable == "s3:prefix"]
      if contains(statement.actions, "s3:ListBucket")
    ]])) && length([for statement in data.aws_iam_policy_document.ec2_training.statement : statement if contains(statement.actions, "s3:ListBucket")]) == 1
    error_message = "ListBucket must be narrowed to the prefixes by the s3:prefix condition."
  }

  assert {
    condition = toset(flatten([for statement in data.aws_iam_policy_document.ec2_training.statement : [
      for resource in statement.resources : resource if startswith(resource, "arn:aws:s3:::dog-breeds-123456789012/")
      ]])) == toset([
      "arn:aws:s3:::dog-breeds-123456789012/data/*",
      "arn:aws:s3:::dog-breeds-123456789012/models/*",
    ])
    error_message = "The training host reads and writes data/ and models/ only."
  }
}

# With every optional statement on, no statement of a role grants a wildcard action, and "*" resources go only to
# the actions that AWS accepts nothing narrower for.
run "no_role_allows_a_wildcard_action_or_a_wildcard_resource_where_a_narrower_one_exists" {
  command = plan

  module {
    source = "./modules/iam"
  }

  variables {
    kms_key_arn                 = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"
    enable_sagemaker_vpc_access = true
  }

  assert {
    condition     = length(data.aws_iam_policy_document.sagemaker.statement) == 11 && length(data.aws_iam_policy_document.ec2_training.statement) == 5
    error_message = "The KMS and VPC statements must be on in this run."
  }

  assert {
    condition = alltrue(flatten([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.lambda, data.aws_iam_policy_document.ec2_training] : [
      for statement in document.statement : [for action in statement.actions : !strcontains(action, "*")]
    ]]))
    error_message = "No statement may allow a wildcard action."
  }

  assert {
    condition = alltrue(flatten([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.lambda, data.aws_iam_policy_document.ec2_training] : [
      for statement in document.statement : length(setsubtract(statement.actions, [
        "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
      ])) == 0 if contains(statement.resources, "*")
    ]]))
    error_message = "Only actions without resource-level permissions may be granted on \"*\"."
  }

  assert {
    condition     = aws_iam_role_policy_attachment.ec2_training_ssm_core.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "The one managed policy is Systems Manager's minimal instance policy, not a FullAccess or admin policy."
  }
}
