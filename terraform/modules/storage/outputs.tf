output "bucket_name" {
  description = "Name of the data and model bucket (created here or the existing one)."
  value       = local.bucket_name
}

output "bucket_arn" {
  description = "ARN of the data and model bucket."
  value       = local.bucket_arn
}

output "bucket_created" {
  description = "True when this module created (and manages) the bucket, false when it uses an existing one."
  value       = var.create
}

output "ec2_log_group_name" {
  description = "Name of the EC2 training host's log group (kept when the host is destroyed)."
  value       = aws_cloudwatch_log_group.ec2_training.name
}

output "ec2_log_group_arn" {
  description = "ARN of the EC2 training host's log group."
  value       = aws_cloudwatch_log_group.ec2_training.arn
}
