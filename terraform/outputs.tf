output "endpoint_name" {
  description = "Name of the SageMaker endpoint."
  value       = module.endpoint.endpoint_name
}

output "endpoint_arn" {
  description = "ARN of the SageMaker endpoint."
  value       = module.endpoint.endpoint_arn
}

output "endpoint_configuration_name" {
  description = "Name of the endpoint configuration in service (changes with the model and the instance settings)."
  value       = module.endpoint.endpoint_configuration_name
}

output "endpoint_variant_name" {
  description = "Name of the endpoint's production variant (DescribeEndpoint reports its instance counts under this name)."
  value       = module.endpoint.variant_name
}

output "endpoint_start_instance_count" {
  description = "Instances a new endpoint configuration starts with: the running count when known (endpoint_running_instance_count), else endpoint.initial_instance_count, capped at autoscaling's max_capacity."
  value       = module.endpoint.start_instance_count
}

output "model_name" {
  description = "Name of the SageMaker model being served."
  value       = module.endpoint.model_name
}

output "model_data_url" {
  description = "S3 URI of the model archive being served."
  value       = var.model_data_url
}

output "function_name" {
  description = "Name of the Lambda function (what `invoke predict` calls)."
  value       = module.lambda.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function."
  value       = module.lambda.function_arn
}

output "function_url" {
  description = "URL of the function (AWS_IAM authorization), or null when function.function_url is false."
  value       = module.lambda.function_url
}

output "sagemaker_role_arn" {
  description = "ARN of the SageMaker execution role for training jobs, tuning jobs and the endpoint."
  value       = module.iam.sagemaker_role_arn
}

output "lambda_role_arn" {
  description = "ARN of the function's execution role."
  value       = module.iam.lambda_role_arn
}

output "ec2_instance_profile_name" {
  description = "Name of the EC2 training host's instance profile."
  value       = module.iam.ec2_instance_profile_name
}

output "bucket_name" {
  description = "Name of the data and model bucket."
  value       = module.storage.bucket_name
}

output "s3_uris" {
  description = "s3:// URIs of the bucket's prefixes (data, models, checkpoints, output, code, data_capture, mlflow), each ending in '/'."
  value       = local.s3_uri
}

output "training_host_id" {
  description = "Instance ID of the EC2 training host, or null when enable_ec2_training_host is false."
  value       = try(module.ec2_training_host[0].instance_id, null)
}

output "ec2_log_group_name" {
  description = "Log group for the output of commands run on the training host (the storage module's: it outlives the host)."
  value       = module.storage.ec2_log_group_name
}

output "ec2_log_group_arn" {
  description = "ARN of the training host's log group."
  value       = module.storage.ec2_log_group_arn
}

output "autoscaling_policy_name" {
  description = "Name of the endpoint's target-tracking policy, or null when autoscaling is off."
  value       = try(module.autoscaling[0].policy_name, null)
}

output "model_package_group_name" {
  description = "Name of the SageMaker model package group: every training run registers its model there, pending approval."
  value       = module.model_registry.model_package_group_name
}

output "mlflow_tracking_server_arn" {
  description = "ARN of the SageMaker managed MLflow tracking server (the jobs' tracking URI), or \"\" when mlflow_tracking_server.enabled is false."
  value       = module.model_registry.mlflow_tracking_server_arn
}

output "mlflow_tracking_server_url" {
  description = "URL of the MLflow tracking server, or \"\" when mlflow_tracking_server.enabled is false."
  value       = module.model_registry.mlflow_tracking_server_url
}

output "github_plan_role_arn" {
  description = "ARN of the role pull requests assume to plan (repository variable AWS_PLAN_ROLE_ARN), or \"\" when github.repository is not set."
  value       = try(module.github_oidc[0].plan_role_arn, "")
}

output "github_apply_role_arn" {
  description = "ARN of the role the apply branch assumes to apply the reviewed plan (repository variable AWS_APPLY_ROLE_ARN), or \"\" when github.repository is not set."
  value       = try(module.github_oidc[0].apply_role_arn, "")
}
