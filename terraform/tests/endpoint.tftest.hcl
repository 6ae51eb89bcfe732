# terraform test (Terraform >= 1.7): the endpoint module on its own, against a mocked AWS provider.

mock_provider "aws" {
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
}

variables {
  name                       = "dog-breeds"
  model_data_url             = "s3://dog-breeds-123456789012/models/v1/model.tar.gz"
  model_artifact_s3_prefixes = ["s3://dog-breeds-123456789012/models/", "s3://dog-breeds-123456789012/output/"]
  execution_role_arn         = "arn:aws:iam::123456789012:role/dog-breeds-sagemaker-execution"
}

run "serves_the_model_with_the_pytorch_image" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  assert {
    condition     = aws_sagemaker_model.this.primary_container[0].environment["SAGEMAKER_PROGRAM"] == "inference.py"
    error_message = "The container must run code/inference.py from the model archive."
  }

  assert {
    condition     = data.aws_sagemaker_prebuilt_ecr_image.pytorch[0].image_tag == "2.6.0-cpu-py312"
    error_message = "A CPU instance must get the CPU build of the inference image."
  }

  assert {
    condition     = startswith(aws_sagemaker_endpoint_configuration.this.name, "dog-breeds-") && startswith(aws_sagemaker_model.this.name, "dog-breeds-")
    error_message = "Model and configuration names must be the endpoint name plus a hash."
  }
}

run "gpu_instance_gets_the_gpu_image" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    instance_type = "ml.g4dn.xlarge"
  }

  assert {
    condition     = data.aws_sagemaker_prebuilt_ecr_image.pytorch[0].image_tag == "2.6.0-gpu-py312"
    error_message = "A GPU instance must get the GPU build of the inference image."
  }
}

run "refuses_a_model_the_role_cannot_read" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    model_data_url = "s3://someone-elses-bucket/models/model.tar.gz"
  }

  expect_failures = [aws_sagemaker_model.this]
}

run "one_ml_m5_large_serving_the_model_without_blue_green" {
  module {
    source = "./modules/endpoint"
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.production_variants[0].instance_type == "ml.m5.large" && aws_sagemaker_endpoint_configuration.this.production_variants[0].initial_instance_count == 1
    error_message = "The endpoint must default to one ml.m5.large."
  }

  assert {
    condition     = aws_sagemaker_model.this.primary_container[0].model_data_url == var.model_data_url
    error_message = "The model must serve model_data_url."
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.errors) == 0 && length(aws_sagemaker_endpoint.this.deployment_config) == 0 && length(output.alarm_names) == 0
    error_message = "Blue/green deployment must be off by default."
  }
}

run "scaled_out_endpoint_starts_a_new_configuration_at_its_size" {
  command = plan
  # A state of its own: the mocked provider never replaces the configuration the runs above made (it knows no
  # ForceNew), and an update in place keeps the ignored initial_instance_count.
  state_key = "scaled_out"

  module {
    source = "./modules/endpoint"
  }

  variables {
    running_instance_count = 5
    max_instance_count     = 4
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.production_variants[0].initial_instance_count == 4 && output.start_instance_count == 4
    error_message = "A new configuration starts at the running count, capped at max_instance_count."
  }
}

run "blue_green_with_rollback_alarms" {
  module {
    source = "./modules/endpoint"
  }

  variables {
    blue_green = { enabled = true, traffic_routing = "CANARY", canary_percent = 25 }
  }

  assert {
    condition     = length(aws_sagemaker_endpoint.this.deployment_config[0].auto_rollback_configuration[0].alarms) == 2
    error_message = "Both rollback alarms must guard the deployment."
  }

  assert {
    condition     = aws_sagemaker_endpoint.this.deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].canary_size[0].value == 25
    error_message = "The canary must take the configured share of capacity."
  }
}

# AWS documents that MaximumExecutionTimeoutInSeconds "should be larger than the total waiting time specified in
# TerminationWaitInSeconds and WaitIntervalInSeconds". Each value below is within its own bounds, and the
# documented sum is not: 3600 s + 3600 s is not below the 7200 s timeout.
run "refuses_a_timeout_no_longer_than_the_documented_waits" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    blue_green = { enabled = true, wait_interval = 3600, termination_wait = 3600, maximum_execution_timeout = 7200 }
  }

  expect_failures = [var.blue_green]
}

# The project's stricter reading: the deployment waits wait_interval after each traffic shift. The documented sum
# (3600 s + 3600 s) is below the 10800 s timeout, but a canary's real waits (2 x 3600 s, plus 3600 s) are not.
run "refuses_a_timeout_shorter_than_the_waits" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    blue_green = { enabled = true, traffic_routing = "CANARY", wait_interval = 3600, termination_wait = 3600, maximum_execution_timeout = 10800 }
  }

  expect_failures = [var.blue_green]
}

run "refuses_linear_steps_whose_waits_outlast_the_timeout" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    # 100 / 10 = 10 shifts of 600 s each, plus 600 s: 6600 s > 3600 s (the documented sum is only 1200 s).
    blue_green = { enabled = true, traffic_routing = "LINEAR", linear_step_percent = 10, wait_interval = 600, termination_wait = 600 }
  }

  expect_failures = [var.blue_green]
}

run "accepts_a_timeout_longer_than_the_waits" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    blue_green = { enabled = true, traffic_routing = "LINEAR", linear_step_percent = 10, wait_interval = 600, termination_wait = 600, maximum_execution_timeout = 7200 }
  }

  assert {
    condition     = aws_sagemaker_endpoint.this.deployment_config[0].blue_green_update_policy[0].maximum_execution_timeout_in_seconds == 7200
    error_message = "A timeout longer than all the waits is accepted as it is."
  }
}
