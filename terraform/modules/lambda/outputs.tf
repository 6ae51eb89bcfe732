output "function_name" {
  description = "Name of the function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the function."
  value       = aws_lambda_function.this.arn
}

output "function_source_code_hash" {
  description = "Base64 SHA-256 of the deployed zip; it changes only when the code does."
  value       = aws_lambda_function.this.source_code_hash
}

output "function_url" {
  description = "URL of the function (AWS_IAM authorization), or null when create_function_url is false."
  value       = try(aws_lambda_function_url.this[0].function_url, null)
}

output "log_group_name" {
  description = "Name of the function's CloudWatch log group."
  value       = aws_cloudwatch_log_group.this.name
}
