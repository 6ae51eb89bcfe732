output "model_package_group_name" {
  description = "Name of the model package group every training run registers its model in."
  value       = aws_sagemaker_model_package_group.this.model_package_group_name
}

output "model_package_group_arn" {
  description = "ARN of the model package group."
  value       = aws_sagemaker_model_package_group.this.arn
}

output "mlflow_tracking_server_arn" {
  description = "ARN of the MLflow tracking server (the tracking URI the sagemaker-mlflow plugin takes), or \"\" when it is off."
  value       = try(aws_sagemaker_mlflow_tracking_server.this[0].arn, "")
}

output "mlflow_tracking_server_url" {
  description = "URL of the MLflow tracking server, or \"\" when it is off."
  value       = try(aws_sagemaker_mlflow_tracking_server.this[0].tracking_server_url, "")
}

output "mlflow_artifact_store_uri" {
  description = "s3:// URI of the tracking server's artifact store (under artifact_prefix of the bucket), or \"\" when it is off."
  value       = local.tracking_server_enabled ? local.artifact_store_uri : ""
}

output "tracking_server_role_arn" {
  description = "ARN of the tracking server's own role, or \"\" when the server is off."
  value       = try(aws_iam_role.tracking_server[0].arn, "")
}
