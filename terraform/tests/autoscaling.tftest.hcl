# terraform test (Terraform >= 1.7): the autoscaling module on its own, against a mocked AWS provider.

mock_provider "aws" {}

variables {
  endpoint_name = "dog-breeds"
}

run "scales_the_variant_between_1_and_2_instances_at_5_invocations" {
  module {
    source = "./modules/autoscaling"
  }

  assert {
    condition     = aws_appautoscaling_target.this.min_capacity == 1 && aws_appautoscaling_target.this.max_capacity == 2
    error_message = "Autoscaling must default to 1-2 instances."
  }

  assert {
    condition     = aws_appautoscaling_target.this.resource_id == "endpoint/dog-breeds/variant/AllTraffic" && output.target_resource_id == aws_appautoscaling_target.this.resource_id
    error_message = "The scalable target must be the endpoint's variant."
  }

  assert {
    condition = alltrue([
      aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].target_value == 5,
      aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].scale_in_cooldown == 30,
      aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].scale_out_cooldown == 30,
      aws_appautoscaling_policy.this.target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "SageMakerVariantInvocationsPerInstance",
    ])
    error_message = "Target tracking must keep 5 invocations per instance with 30 s cooldowns."
  }
}

run "refuses_min_capacity_above_max" {
  command = plan

  module {
    source = "./modules/autoscaling"
  }

  variables {
    min_capacity = 3
    max_capacity = 2
  }

  expect_failures = [aws_appautoscaling_target.this]
}
