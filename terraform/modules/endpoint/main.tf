data "aws_region" "current" {}

locals {
  # GPU instance families get the GPU build of the inference image.
  processor = can(regex("^ml\\.(p[0-9]|g[0-9])", var.instance_type)) ? "gpu" : "cpu"
  image     = var.image_uri != null ? var.image_uri : data.aws_sagemaker_prebuilt_ecr_image.pytorch[0].registry_path

  # The PyTorch inference image imports code/inference.py from the unpacked model.tar.gz; the serving settings
  # (threads per worker, request size, response timeout) are in container_environment.json, which the local
  # stack's endpoint runs with too (this module's README says why each is set).
  container_environment = merge(
    jsondecode(file("${path.module}/container_environment.json")),
    { SAGEMAKER_REGION = data.aws_region.current.region },
    var.environment,
  )

  # Names carry a hash of everything SageMaker cannot change in place, so a new model or setting makes a new
  # model and configuration next to the old ones (create_before_destroy) and the endpoint switches over in place.
  model_hash = substr(sha256(jsonencode({
    image                    = local.image
    model_data_url           = var.model_data_url
    environment              = local.container_environment
    role                     = var.execution_role_arn
    enable_network_isolation = var.enable_network_isolation
    vpc_config               = var.vpc_config
  })), 0, 10)
  model_name = "${var.name}-${local.model_hash}"

  # initial_instance_count is left out on purpose: changing it alone must not roll the fleet (see lifecycle below).
  configuration_hash = substr(sha256(jsonencode({
    model                     = local.model_name
    variant_name              = var.variant_name
    instance_type             = var.instance_type
    kms_key_arn               = var.kms_key_arn
    data_capture              = var.data_capture
    startup_health_check_time = var.container_startup_health_check_timeout
  })), 0, 10)
  configuration_name = "${var.name}-${local.configuration_hash}"

  # A new configuration starts with as many instances as the endpoint runs now, so a model update does not
  # shrink a scaled-out endpoint back to initial_instance_count while autoscaling catches up.
  wanted_instance_count = max(var.initial_instance_count, coalesce(var.running_instance_count, 0))
  start_instance_count  = var.max_instance_count == null ? local.wanted_instance_count : min(local.wanted_instance_count, var.max_instance_count)

  alarm_names = {
    errors  = "${var.name}-invocation-5xx-errors"
    latency = "${var.name}-model-latency"
  }
}

data "aws_sagemaker_prebuilt_ecr_image" "pytorch" {
  count = var.image_uri == null ? 1 : 0

  repository_name = "pytorch-inference"
  image_tag       = "${var.framework_version}-${local.processor}-${var.python_version}"
}

resource "aws_sagemaker_model" "this" {
  #checkov:skip=CKV_AWS_370:Network isolation is a variable (enable_network_isolation); it is off by default because {"url": ...} requests need the container to fetch images (through the SSRF-safe fetcher) and code/requirements.txt is installed at start.
  name                     = local.model_name
  execution_role_arn       = var.execution_role_arn
  enable_network_isolation = var.enable_network_isolation

  primary_container {
    image          = local.image
    model_data_url = var.model_data_url
    environment    = local.container_environment
  }

  dynamic "vpc_config" {
    for_each = var.vpc_config == null ? [] : [var.vpc_config]

    content {
      subnets            = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = length(var.model_artifact_s3_prefixes) == 0 || anytrue([for prefix in var.model_artifact_s3_prefixes : startswith(var.model_data_url, prefix)])
      error_message = "model_data_url ${var.model_data_url} is outside the prefixes the execution role may read (${join(", ", var.model_artifact_s3_prefixes)}): upload the model there."
    }
  }
}

resource "aws_sagemaker_endpoint_configuration" "this" {
  #checkov:skip=CKV_AWS_98:Volume encryption with a customer managed key is a variable (kms_key_arn); without one SageMaker encrypts the volume with an AWS managed key, and some instance types (local NVMe) reject a key altogether.
  name        = local.configuration_name
  kms_key_arn = var.kms_key_arn

  production_variants {
    variant_name                                      = var.variant_name
    model_name                                        = aws_sagemaker_model.this.name
    instance_type                                     = var.instance_type
    initial_instance_count                            = local.start_instance_count
    initial_variant_weight                            = 1
    container_startup_health_check_timeout_in_seconds = var.container_startup_health_check_timeout
  }

  dynamic "data_capture_config" {
    for_each = var.data_capture.enabled ? [var.data_capture] : []

    content {
      enable_capture              = true
      destination_s3_uri          = data_capture_config.value.destination_s3_uri
      initial_sampling_percentage = data_capture_config.value.sampling_percentage
      kms_key_id                  = var.kms_key_arn

      capture_options {
        capture_mode = data_capture_config.value.capture_mode
      }

      capture_content_type_header {
        json_content_types = ["application/json"]
      }
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
    # The running count belongs to autoscaling. A change of initial_instance_count alone (not part of the name)
    # is therefore ignored instead of replacing the configuration and rolling the fleet; it takes effect with the
    # next model. A replacement (new model) uses the configured value again: Terraform does not carry ignored
    # values into a replacement.
    ignore_changes = [production_variants[0].initial_instance_count]
  }
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  count = var.blue_green.enabled ? 1 : 0

  alarm_name          = local.alarm_names.errors
  alarm_description   = "Endpoint ${var.name} answers with 5XX errors; a blue/green deployment in progress rolls back."
  namespace           = "AWS/SageMaker"
  metric_name         = "Invocation5XXErrors"
  dimensions          = { EndpointName = var.name, VariantName = var.variant_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = var.blue_green.error_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.blue_green.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "latency" {
  count = var.blue_green.enabled ? 1 : 0

  alarm_name          = local.alarm_names.latency
  alarm_description   = "Average model latency of endpoint ${var.name} above ${var.blue_green.latency_threshold_ms} ms; a blue/green deployment in progress rolls back."
  namespace           = "AWS/SageMaker"
  metric_name         = "ModelLatency"
  dimensions          = { EndpointName = var.name, VariantName = var.variant_name }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 2
  threshold           = var.blue_green.latency_threshold_ms * 1000 # ModelLatency is reported in microseconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.blue_green.alarm_actions
  tags                = var.tags
}

resource "aws_sagemaker_endpoint" "this" {
  name                 = var.name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.this.name

  dynamic "deployment_config" {
    for_each = var.blue_green.enabled ? [var.blue_green] : []

    content {
      blue_green_update_policy {
        maximum_execution_timeout_in_seconds = deployment_config.value.maximum_execution_timeout
        termination_wait_in_seconds          = deployment_config.value.termination_wait

        traffic_routing_configuration {
          type                     = deployment_config.value.traffic_routing
          wait_interval_in_seconds = deployment_config.value.wait_interval

          dynamic "canary_size" {
            for_each = deployment_config.value.traffic_routing == "CANARY" ? [deployment_config.value.canary_percent] : []

            content {
              type  = "CAPACITY_PERCENT"
              value = canary_size.value
            }
          }

          dynamic "linear_step_size" {
            for_each = deployment_config.value.traffic_routing == "LINEAR" ? [deployment_config.value.linear_step_percent] : []

            content {
              type  = "CAPACITY_PERCENT"
              value = linear_step_size.value
            }
          }
        }
      }

      auto_rollback_configuration {
        alarms {
          alarm_name = aws_cloudwatch_metric_alarm.errors[0].alarm_name
        }

        alarms {
          alarm_name = aws_cloudwatch_metric_alarm.latency[0].alarm_name
        }
      }
    }
  }

  tags = var.tags
}
