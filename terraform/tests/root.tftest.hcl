# terraform test (Terraform >= 1.7): the root configuration planned and applied against a mocked AWS provider.
# Terraform shows a run only the root's outputs, so these runs check how the root wires its modules together;
# what each module makes of its inputs is checked in <module>.tftest.hcl next to this file.

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
    condition     = output.bucket_name == "dog-breeds-123456789012"
    error_message = "The bucket must be <name_prefix>-<account id>."
  }

  assert {
    condition     = output.endpoint_name == "dog-breeds" && output.function_name == "dog-breeds" && output.endpoint_variant_name == "AllTraffic"
    error_message = "The endpoint and the function are named after name_prefix; the variant is AllTraffic."
  }

  assert {
    condition     = output.model_data_url == var.model_data_url && startswith(output.model_name, "dog-breeds-")
    error_message = "The model must serve model_data_url."
  }

  assert {
    condition     = output.endpoint_start_instance_count == 1
    error_message = "The endpoint must start with one instance."
  }

  assert {
    condition     = output.autoscaling_policy_name == "dog-breeds-invocations-per-instance"
    error_message = "Autoscaling must be on by default."
  }

  assert {
    condition     = var.autoscaling == { enabled = true, min_capacity = 1, max_capacity = 2, target_invocations_per_instance = 5, scale_in_cooldown = 30, scale_out_cooldown = 30 }
    error_message = "Autoscaling defaults to 1 to 2 instances at 5 invocations per instance, with 30 s cooldowns."
  }

  assert {
    condition     = var.function.reserved_concurrency == 10 && !var.function.tracing && !var.function.function_url && var.function.dead_letter_target_arn == null
    error_message = "The function reserves a concurrency of 10, with no tracing, function URL or dead-letter target (so no extra permissions)."
  }

  assert {
    condition     = output.function_url == null
    error_message = "No function URL by default."
  }

  assert {
    condition     = output.training_host_id == null
    error_message = "The EC2 training host must be off by default."
  }

  assert {
    condition     = output.ec2_log_group_name == "/dog-breeds/ec2-training" && output.s3_uris.models == "s3://dog-breeds-123456789012/models/"
    error_message = "The training host's log group and the bucket's prefixes are named after name_prefix."
  }

  assert {
    condition     = output.model_package_group_name == "dog-breeds" && output.mlflow_tracking_server_arn == "" && output.mlflow_tracking_server_url == ""
    error_message = "The model package group is named name_prefix; the MLflow tracking server is off by default (its outputs empty)."
  }

  assert {
    condition     = output.github_plan_role_arn == "" && output.github_apply_role_arn == ""
    error_message = "No GitHub OIDC roles unless github.repository is set."
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
    condition     = output.endpoint_start_instance_count == 2
    error_message = "The new fleet must start at the running size, capped at autoscaling's max_capacity (2)."
  }
}

run "autoscaling_off_leaves_the_count_uncapped" {
  command = plan

  variables {
    autoscaling                     = { enabled = false }
    endpoint_running_instance_count = 5
  }

  assert {
    condition     = output.autoscaling_policy_name == null && output.endpoint_start_instance_count == 5
    error_message = "Without autoscaling there is no policy and no max_capacity to cap the starting count."
  }
}

# What `invoke ec2-train` does: apply aws.ec2_targets with the host on, then again with it off.
run "ec2_training_host_on" {
  variables {
    enable_ec2_training_host = true
  }

  plan_options {
    target = [module.storage, module.iam, module.ec2_training_host]
  }

  assert {
    condition     = output.training_host_id != null && output.ec2_log_group_arn != null
    error_message = "The host and its log group must exist while the host is on."
  }
}

run "ec2_training_host_torn_down_keeps_its_logs" {
  variables {
    enable_ec2_training_host = false
  }

  plan_options {
    target = [module.storage, module.iam, module.ec2_training_host]
  }

  assert {
    condition     = output.training_host_id == null
    error_message = "The teardown must remove the host."
  }

  assert {
    condition     = output.ec2_log_group_arn == run.ec2_training_host_on.ec2_log_group_arn
    error_message = "The teardown must keep the host's log group (the same one, not a new one)."
  }
}

# What the first AWS task does before any model exists (aws.bootstrap_targets): the registry comes with the bucket
# and the roles, so the first training job can register its model.
run "the_bootstrap_targets_create_the_model_registry_without_a_model" {
  variables {
    model_data_url         = "s3://dog-breeds-123456789012/bootstrap/placeholder/model.tar.gz"
    mlflow_tracking_server = { enabled = true }
  }

  plan_options {
    target = [module.storage, module.iam, module.model_registry]
  }

  assert {
    condition     = output.model_package_group_name == "dog-breeds" && output.mlflow_tracking_server_arn != "" && output.mlflow_tracking_server_url != ""
    error_message = "The targeted apply must create the model package group and, when enabled, the tracking server."
  }

  assert {
    condition     = output.s3_uris.mlflow == "s3://dog-breeds-123456789012/mlflow/"
    error_message = "The tracking server's artifact store prefix is part of the bucket's prefixes."
  }
}

run "rejects_a_tracking_server_size_sagemaker_does_not_offer" {
  command = plan

  variables {
    mlflow_tracking_server = { enabled = true, size = "XLarge" }
  }

  expect_failures = [var.mlflow_tracking_server]
}

run "a_github_repository_gets_its_plan_and_apply_roles" {
  variables {
    github = { repository = "octo-org/dog-breeds", state_bucket = "octo-terraform-state", state_key = "dog-breeds/terraform.tfstate" }
  }

  assert {
    condition     = output.github_plan_role_arn != "" && output.github_apply_role_arn != "" && output.github_plan_role_arn != output.github_apply_role_arn
    error_message = "With github.repository the plan and apply roles exist, and they are two roles."
  }
}

run "rejects_a_github_repository_without_the_s3_backend" {
  command = plan

  variables {
    github = { repository = "octo-org/dog-breeds" }
  }

  expect_failures = [var.github]
}

run "rejects_a_model_url_that_is_not_an_s3_archive" {
  command = plan

  variables {
    model_data_url = "https://example.com/model.tar.gz"
  }

  expect_failures = [var.model_data_url]
}

run "rejects_a_model_url_with_text_after_the_archive_name" {
  command = plan

  variables {
    model_data_url = "s3://dog-breeds-123456789012/models/model.tar.gz.bak"
  }

  expect_failures = [var.model_data_url]
}

run "rejects_a_model_url_without_a_bucket" {
  command = plan

  variables {
    model_data_url = "s3:///models/model.tar.gz"
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
