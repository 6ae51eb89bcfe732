output "endpoint_name" {
  description = "Name of the SageMaker endpoint (what InvokeEndpoint and the function's ENDPOINT_NAME use)."
  value       = aws_sagemaker_endpoint.this.name
}

output "endpoint_arn" {
  description = "ARN of the SageMaker endpoint."
  value       = aws_sagemaker_endpoint.this.arn
}

output "endpoint_configuration_name" {
  description = "Name of the endpoint configuration in service; it changes with the model and the instance settings."
  value       = aws_sagemaker_endpoint_configuration.this.name
}

output "model_name" {
  description = "Name of the SageMaker model; it changes with model_data_url and the image."
  value       = aws_sagemaker_model.this.name
}

output "variant_name" {
  description = "Name of the production variant (the autoscaling resource id needs it)."
  value       = var.variant_name
}

output "image_uri" {
  description = "Inference image the model runs."
  value       = local.image
}

output "start_instance_count" {
  description = "Instances a newly created endpoint configuration starts with: max(initial_instance_count, running_instance_count), capped at max_instance_count."
  value       = local.start_instance_count
}

output "alarm_names" {
  description = "Names of the rollback alarms (empty when blue/green deployment is off)."
  value       = var.blue_green.enabled ? [local.alarm_names.errors, local.alarm_names.latency] : []
}
