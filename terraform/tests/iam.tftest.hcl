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

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.sagemaker_trust
  values = {
    json = "sagemaker_trust"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.sagemaker
  values = {
    json = "sagemaker"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.lambda_trust
  values = {
    json = "lambda_trust"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.lambda
  values = {
    json = "lambda"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.ec2_trust
  values = {
    json = "ec2_trust"
  }
}

# Each document renders as its own name, so a role or policy carrying the wrong document shows.
override_data {
  target = data.aws_iam_policy_document.ec2_training
  values = {
    json = "ec2_training"
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
    condition     = output.endpoint_arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dog-breeds"
    error_message = "The endpoint ARN is built from its name, in lower case."
  }
}

run "each_role_is_assumed_only_by_its_own_service_and_carries_its_own_policy" {
  module {
    source = "./modules/iam"
  }

  assert {
    condition = alltrue([for role, trust in {
      "sagemaker.amazonaws.com" = data.aws_iam_policy_document.sagemaker_trust,
      "lambda.amazonaws.com"    = data.aws_iam_policy_document.lambda_trust,
      "ec2.amazonaws.com"       = data.aws_iam_policy_document.ec2_trust,
      } : [for statement in trust.statement : join(" ", [coalesce(statement.effect, "Allow"), join(",", statement.actions), "by",
      join(",", flatten([for principal in statement.principals : [for id in principal.identifiers : "${principal.type}:${id}"]]))])
      ] == ["Allow sts:AssumeRole by Service:${role}"]
    ])
    error_message = "Each trust policy lets exactly one service assume its role."
  }

  assert {
    condition = alltrue([
      aws_iam_role.sagemaker.assume_role_policy == "sagemaker_trust", aws_iam_role.lambda.assume_role_policy == "lambda_trust",
      aws_iam_role.ec2_training.assume_role_policy == "ec2_trust",
      aws_iam_role_policy.sagemaker.role == aws_iam_role.sagemaker.id && aws_iam_role_policy.sagemaker.policy == "sagemaker",
      aws_iam_role_policy.lambda.role == aws_iam_role.lambda.id && aws_iam_role_policy.lambda.policy == "lambda",
      aws_iam_role_policy.ec2_training.role == aws_iam_role.ec2_training.id && aws_iam_role_policy.ec2_training.policy == "ec2_training",
      aws_iam_role_policy_attachment.ec2_training_ssm_core.role == aws_iam_role.ec2_training.name,
      aws_iam_instance_profile.ec2_training.role == aws_iam_role.ec2_training.name,
    ])
    error_message = "Each role is trusted by its own document and carries its own policy."
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

# With every optional statement on (the project key, VPC access, the MLflow tracking server), no statement of a role grants a wildcard action, and "*" resources go only to
# the actions that AWS accepts nothing narrower for.
run "no_role_allows_a_wildcard_action_or_a_wildcard_resource_where_a_narrower_one_exists" {
  command = plan

  module {
    source = "./modules/iam"
  }

  variables {
    kms_key_arn                 = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"
    enable_sagemaker_vpc_access = true
    mlflow_tracking_server_name = "dog-breeds"
  }

  # The reviewed list: every statement of the two larger roles, its actions, the ARNs it reaches and its conditions.
  # A new permission, resource or condition fails here until someone reviews it and adds it.
  assert {
    condition = jsonencode({ for statement in data.aws_iam_policy_document.sagemaker.statement : statement.sid => [sort(statement.actions), sort(statement.resources),
      sort([for condition in statement.condition : "${condition.test} ${condition.variable} ${join(",", sort(condition.values))}"])] }) == jsonencode({
      ListOwnPrefixes                   = [["s3:ListBucket"], ["arn:aws:s3:::dog-breeds-123456789012"], ["StringLike s3:prefix checkpoints/,checkpoints/*,code/,code/*,data/,data/*,mlflow/,mlflow/*,models/,models/*,output/,output/*"]]
      ReadDataCodeAndModels             = [["s3:GetObject"], ["arn:aws:s3:::dog-breeds-123456789012/checkpoints/*", "arn:aws:s3:::dog-breeds-123456789012/code/*", "arn:aws:s3:::dog-breeds-123456789012/data/*", "arn:aws:s3:::dog-breeds-123456789012/models/*", "arn:aws:s3:::dog-breeds-123456789012/output/*"], []]
      WriteOutputsCheckpointsAndCapture = [["s3:AbortMultipartUpload", "s3:PutObject"], ["arn:aws:s3:::dog-breeds-123456789012/checkpoints/*", "arn:aws:s3:::dog-breeds-123456789012/data-capture/*", "arn:aws:s3:::dog-breeds-123456789012/output/*"], []]
      PruneCheckpoints                  = [["s3:DeleteObject"], ["arn:aws:s3:::dog-breeds-123456789012/checkpoints/*"], []]
      PullFrameworkImages               = [["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], ["arn:aws:ecr:us-east-1:763104351884:repository/pytorch-inference", "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-training"], []]
      EcrLogin                          = [["ecr:GetAuthorizationToken"], ["*"], []]
      OwnLogs                           = [["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"], ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/Dog-Breeds", "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/Dog-Breeds:*", "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/TrainingJobs", "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/TrainingJobs:*"], []]
      OwnMetrics                        = [["cloudwatch:PutMetricData"], ["*"], ["StringLike cloudwatch:namespace /aws/sagemaker/*"]]
      LogToTrackingServer               = [["sagemaker-mlflow:CreateExperiment", "sagemaker-mlflow:CreateRun", "sagemaker-mlflow:FinalizeLoggedModel", "sagemaker-mlflow:GetExperiment", "sagemaker-mlflow:GetExperimentByName", "sagemaker-mlflow:GetLoggedModel", "sagemaker-mlflow:GetMetricHistory", "sagemaker-mlflow:GetRun", "sagemaker-mlflow:ListArtifacts", "sagemaker-mlflow:ListLoggedModelArtifacts", "sagemaker-mlflow:LogBatch", "sagemaker-mlflow:LogInputs", "sagemaker-mlflow:LogLoggedModelParams", "sagemaker-mlflow:LogMetric", "sagemaker-mlflow:LogModel", "sagemaker-mlflow:LogOutputs", "sagemaker-mlflow:LogParam", "sagemaker-mlflow:SearchExperiments", "sagemaker-mlflow:SearchRuns", "sagemaker-mlflow:SetExperimentTag", "sagemaker-mlflow:SetLoggedModelTags", "sagemaker-mlflow:SetTag", "sagemaker-mlflow:UpdateRun"], ["arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/dog-breeds"], []]
      WriteTrackingArtifacts            = [["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::dog-breeds-123456789012/mlflow/*"], []]
      UseProjectKey                     = [["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"], ["arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"], []]
      DescribeVpc                       = [["ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"], ["*"], []]
      ManageJobNetworkInterfaces        = [["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"], ["arn:aws:ec2:us-east-1:123456789012:network-interface/*", "arn:aws:ec2:us-east-1:123456789012:security-group/*", "arn:aws:ec2:us-east-1:123456789012:subnet/*"], []]
    })
    error_message = "The SageMaker role's grants differ from the reviewed list."
  }

  assert {
    condition = jsonencode({ for statement in data.aws_iam_policy_document.ec2_training.statement : statement.sid => [sort(statement.actions), sort(statement.resources),
      sort([for condition in statement.condition : "${condition.test} ${condition.variable} ${join(",", sort(condition.values))}"])] }) == jsonencode({
      ListDataAndModels      = [["s3:ListBucket"], ["arn:aws:s3:::dog-breeds-123456789012"], ["StringLike s3:prefix data/,data/*,mlflow/,mlflow/*,models/,models/*"]]
      ReadWriteDataAndModels = [["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::dog-breeds-123456789012/data/*", "arn:aws:s3:::dog-breeds-123456789012/models/*"], []]
      WriteOwnLogGroup       = [["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"], ["arn:aws:logs:us-east-1:123456789012:log-group:/dog-breeds/ec2-training", "arn:aws:logs:us-east-1:123456789012:log-group:/dog-breeds/ec2-training:*"], []]
      FindOwnLogGroup        = [["logs:DescribeLogGroups"], ["arn:aws:logs:us-east-1:123456789012:log-group:*"], []]
      LogToTrackingServer    = [["sagemaker-mlflow:CreateExperiment", "sagemaker-mlflow:CreateRun", "sagemaker-mlflow:FinalizeLoggedModel", "sagemaker-mlflow:GetExperiment", "sagemaker-mlflow:GetExperimentByName", "sagemaker-mlflow:GetLoggedModel", "sagemaker-mlflow:GetMetricHistory", "sagemaker-mlflow:GetRun", "sagemaker-mlflow:ListArtifacts", "sagemaker-mlflow:ListLoggedModelArtifacts", "sagemaker-mlflow:LogBatch", "sagemaker-mlflow:LogInputs", "sagemaker-mlflow:LogLoggedModelParams", "sagemaker-mlflow:LogMetric", "sagemaker-mlflow:LogModel", "sagemaker-mlflow:LogOutputs", "sagemaker-mlflow:LogParam", "sagemaker-mlflow:SearchExperiments", "sagemaker-mlflow:SearchRuns", "sagemaker-mlflow:SetExperimentTag", "sagemaker-mlflow:SetLoggedModelTags", "sagemaker-mlflow:SetTag", "sagemaker-mlflow:UpdateRun"], ["arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/dog-breeds"], []]
      WriteTrackingArtifacts = [["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::dog-breeds-123456789012/mlflow/*"], []]
      UseProjectKey          = [["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"], ["arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"], []]
    })
    error_message = "The EC2 training host role's grants differ from the reviewed list."
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

run "without_a_tracking_server_no_role_may_reach_mlflow_or_its_artifacts" {
  command = plan

  module {
    source = "./modules/iam"
  }

  assert {
    condition = length(flatten([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.lambda, data.aws_iam_policy_document.ec2_training] : [
      for statement in document.statement : [
        for grant in flatten([tolist(statement.actions), tolist(statement.resources), [for condition in statement.condition : tolist(condition.values)]]) : grant
        if startswith(grant, "sagemaker-mlflow:") || strcontains(grant, "mlflow")
      ]
    ]])) == 0 && output.mlflow_tracking_server_arn == null
    error_message = "With the tracking server off (the default) no role may call MLflow or reach the mlflow/ prefix."
  }
}

run "with_a_tracking_server_the_training_roles_log_to_that_server_only" {
  command = plan

  module {
    source = "./modules/iam"
  }

  variables {
    mlflow_tracking_server_name = "dog-breeds"
  }

  assert {
    condition = alltrue([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.ec2_training] :
      toset(flatten([for statement in document.statement : statement.resources if anytrue([for action in statement.actions : startswith(action, "sagemaker-mlflow:")])]))
      == toset(["arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/dog-breeds"])
    ]) && output.mlflow_tracking_server_arn == "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/dog-breeds"
    error_message = "The SageMaker and EC2 training roles may call MLflow on this one tracking server's ARN and nowhere else."
  }

  assert {
    condition = alltrue(flatten([for document in [data.aws_iam_policy_document.sagemaker, data.aws_iam_policy_document.ec2_training] : [
      for statement in document.statement : [for action in statement.actions : !can(regex("^sagemaker-mlflow:(Delete|Rename|Restore|Transition|CreateRegistered|CreateModelVersion|AccessUI)", action))]
    ]]))
    error_message = "A training run logs; it deletes, restores, renames and registers nothing in MLflow."
  }

  assert {
    condition = length([for statement in data.aws_iam_policy_document.lambda.statement : statement
    if anytrue([for action in statement.actions : startswith(action, "sagemaker-mlflow:")])]) == 0
    error_message = "The Lambda role never reaches the tracking server."
  }
}
