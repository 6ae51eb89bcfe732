output "target_resource_id" {
  description = "Application Auto Scaling resource id of the scaled variant (endpoint/<name>/variant/<variant>)."
  value       = aws_appautoscaling_target.this.resource_id
}

output "policy_arn" {
  description = "ARN of the target-tracking scaling policy."
  value       = aws_appautoscaling_policy.this.arn
}

output "policy_name" {
  description = "Name of the target-tracking scaling policy."
  value       = aws_appautoscaling_policy.this.name
}
