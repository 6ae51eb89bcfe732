# terraform test (Terraform >= 1.7): the root configuration planned and applied against a mocked AWS provider.
# Needs the hashicorp/aws provider installed (terraform init); no AWS account or credentials.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
      arn        = "arn:aws:iam::123456789012:user/test"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition  = "aws"
      dns_suffix = "amazonaws.com"
    }
  }

  mock_data "aws_region" {
    defaults = {
      region = "us-east-1"
    }
  }

  mock_data "aws_sagemaker_prebuilt_ecr_image" {
    defaults = {
      registry_id   = "763104351884"
      registry_path = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_data "aws_ami" {
    defaults = {
      id = "ami-0123456789abcdef0"
    }
  }

  mock_data "aws_vpc" {
    defaults = {
      id = "vpc-0123456789abcdef0"
    }
  }
}

variables {
  model_data_url      = "s3://dog-breeds-123456789012/models/v1/model.tar.gz"
  lambda_package_path = "tests/fixtures/function.zip"
}

run "defaults" {
  assert {
    condition     = module.autoscaling[0].aws_appautoscaling_target.this.min_capacity == 1 && module.autoscaling[0].aws_appautoscaling_target.this.max_capacity == 2
    error_message = "Autoscaling must default to 1-2 instances."
  }

  assert {
    condition     = module.autoscaling[0].aws_appautoscaling_target.this.resource_id == "endpoint/dog-breeds/variant/AllTraffic"
    error_message = "The scalable target must be the endpoint's variant."
  }

  assert {
    condition = alltrue([
      module.autoscaling[0].aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].target_value == 5,
      module.autoscaling[0].aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].scale_in_cooldown == 30,
      module.autoscaling[0].aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].scale_out_cooldown == 30,
      module.autoscaling[0].aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "SageMakerVariantInvocationsPerInstance",
    ])
    error_message = "Target tracking must keep 5 invocations per instance with 30 s cooldowns."
  }

  assert {
    condition     = module.endpoint.aws_sagemaker_endpoint_configuration.this.production_variants[0].instance_type == "ml.m5.large" && module.endpoint.aws_sagemaker_endpoint_configuration.this.production_variants[0].initial_instance_count == 1
    error_message = "The endpoint must default to one ml.m5.large."
  }

  assert {
    condition     = module.endpoint.aws_sagemaker_model.this.primary_container[0].model_data_url == var.model_data_url
    error_message = "The model must serve model_data_url."
  }

  assert {
    condition     = module.lambda.aws_lambda_function.this.reserved_concurrent_executions == 10
    error_message = "The function must reserve a concurrency of 10."
  }

  assert {
    condition     = module.lambda.aws_lambda_function.this.environment[0].variables["ENDPOINT_NAME"] == output.endpoint_name
    error_message = "The function must call this endpoint."
  }

  assert {
    condition     = module.lambda.aws_lambda_function.this.handler == "lambda_function.lambda_handler"
    error_message = "The handler must be lambda_function.lambda_handler."
  }

  assert {
    condition     = module.lambda.aws_lambda_function.this.source_code_hash == filebase64sha256("tests/fixtures/function.zip")
    error_message = "The function must be deployed with the hash of its package."
  }

  assert {
    condition     = length(module.lambda.aws_lambda_function_url.this) == 0 && length(module.lambda.aws_iam_role_policy.optional_features) == 0
    error_message = "No function URL and no extra permissions by default."
  }

  assert {
    condition     = length(module.ec2_training_host) == 0 && output.training_host_id == null
    error_message = "The EC2 training host must be off by default."
  }

  assert {
    condition     = output.bucket_name == "dog-breeds-123456789012" && module.storage.aws_s3_bucket.this[0].bucket == "dog-breeds-123456789012"
    error_message = "The bucket must be <name_prefix>-<account id>."
  }

  assert {
    condition     = length(module.endpoint.aws_cloudwatch_metric_alarm.errors) == 0 && length(module.endpoint.aws_sagemaker_endpoint.this.deployment_config) == 0
    error_message = "Blue/green deployment must be off by default."
  }
}

run "new_model_gets_new_configuration" {
  variables {
    model_data_url = "s3://dog-breeds-123456789012/output/job-2/output/model.tar.gz"
  }

  assert {
    condition     = output.endpoint_configuration_name != run.defaults.endpoint_configuration_name && output.model_name != run.defaults.model_name
    error_message = "A new model must get a new model and endpoint configuration."
  }

  assert {
    condition     = output.endpoint_name == run.defaults.endpoint_name
    error_message = "The endpoint itself must be updated in place, not renamed."
  }
}

run "initial_count_alone_does_not_roll_the_fleet" {
  variables {
    model_data_url = "s3://dog-breeds-123456789012/output/job-2/output/model.tar.gz"
    endpoint       = { initial_instance_count = 2 }
  }

  assert {
    condition     = output.endpoint_configuration_name == run.new_model_gets_new_configuration.endpoint_configuration_name
    error_message = "Changing only initial_instance_count must not replace the endpoint configuration."
  }
}

run "scaled_out_endpoint_keeps_its_size_on_a_new_model" {
  variables {
    model_data_url                  = "s3://dog-breeds-123456789012/models/v3/model.tar.gz"
    endpoint_running_instance_count = 5
  }

  assert {
    condition     = module.endpoint.aws_sagemaker_endpoint_configuration.this.production_variants[0].initial_instance_count == 2
    error_message = "The new fleet must start at the running size, capped at autoscaling's max_capacity (2)."
  }
}

run "ec2_training_host" {
  variables {
    enable_ec2_training_host = true
  }

  assert {
    condition     = module.ec2_training_host[0].aws_instance.this.metadata_options[0].http_tokens == "required"
    error_message = "The host must require IMDSv2."
  }

  assert {
    condition     = module.ec2_training_host[0].aws_instance.this.root_block_device[0].encrypted == true
    error_message = "The host's root volume must be encrypted."
  }

  assert {
    condition     = module.ec2_training_host[0].aws_instance.this.tags["Project"] == "dog-breeds" && module.ec2_training_host[0].aws_instance.this.tags["Role"] == "training-host"
    error_message = "The host must carry the tags invoke finds it by."
  }

  assert {
    condition     = module.ec2_training_host[0].aws_instance.this.instance_type == "t2.medium"
    error_message = "The host defaults to t2.medium."
  }

  assert {
    condition     = output.training_host_id == module.ec2_training_host[0].aws_instance.this.id
    error_message = "training_host_id must name the host."
  }
}

run "blue_green_with_rollback_alarms" {
  variables {
    endpoint = { blue_green = { enabled = true, traffic_routing = "CANARY", canary_percent = 25 } }
  }

  assert {
    condition     = length(module.endpoint.aws_sagemaker_endpoint.this.deployment_config[0].auto_rollback_configuration[0].alarms) == 2
    error_message = "Both rollback alarms must guard the deployment."
  }

  assert {
    condition     = module.endpoint.aws_sagemaker_endpoint.this.deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].canary_size[0].value == 25
    error_message = "The canary must take the configured share of capacity."
  }
}

run "function_url_requires_iam" {
  variables {
    function = { function_url = true }
  }

  assert {
    condition     = module.lambda.aws_lambda_function_url.this[0].authorization_type == "AWS_IAM"
    error_message = "A function URL must require AWS_IAM authorization."
  }
}

run "rejects_a_model_url_that_is_not_an_s3_archive" {
  command = plan

  variables {
    model_data_url = "https://example.com/model.tar.gz"
  }

  expect_failures = [var.model_data_url]
}

run "rejects_min_capacity_above_max" {
  command = plan

  variables {
    autoscaling = { min_capacity = 3, max_capacity = 2 }
  }

  expect_failures = [var.autoscaling]
}

run "rejects_an_existing_bucket_without_a_name" {
  command = plan

  variables {
    bucket = { create = false }
  }

  expect_failures = [var.bucket]
}
