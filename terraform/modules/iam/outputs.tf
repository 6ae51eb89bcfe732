output "sagemaker_role_arn" {
  description = "ARN of the SageMaker execution role (training jobs, tuning jobs, the endpoint's model)."
  value       = aws_iam_role.sagemaker.arn

  # Whoever uses the role waits until its permissions are attached, not just until the role exists.
  depends_on = [aws_iam_role_policy.sagemaker]
}

output "sagemaker_role_name" {
  description = "Name of the SageMaker execution role."
  value       = aws_iam_role.sagemaker.name
}

output "lambda_role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.lambda.arn

  # Whoever uses the role waits until its permissions are attached, not just until the role exists.
  depends_on = [aws_iam_role_policy.lambda]
}

output "lambda_role_name" {
  description = "Name of the function's execution role (the lambda module attaches its optional X-Ray and dead-letter permissions to it)."
  value       = aws_iam_role.lambda.name
}

output "ec2_role_arn" {
  description = "ARN of the EC2 training host's role."
  value       = aws_iam_role.ec2_training.arn
}

output "ec2_instance_profile_name" {
  description = "Name of the EC2 training host's instance profile."
  value       = aws_iam_instance_profile.ec2_training.name

  # Whoever uses the role waits until its permissions are attached, not just until the role exists.
  depends_on = [aws_iam_role_policy.ec2_training, aws_iam_role_policy_attachment.ec2_training_ssm_core]
}

output "ec2_instance_profile_arn" {
  description = "ARN of the EC2 training host's instance profile."
  value       = aws_iam_instance_profile.ec2_training.arn
}

output "endpoint_arn" {
  description = "ARN of the endpoint the Lambda role may invoke (computed from its name, so it is known before the endpoint exists)."
  value       = local.endpoint_arn
}

output "mlflow_tracking_server_arn" {
  description = "ARN of the MLflow tracking server the training roles may log to (computed from its name), or null when there is none."
  value       = local.tracking_server_arn
}
