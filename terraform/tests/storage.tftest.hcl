# terraform test (Terraform >= 1.7): the storage module on its own, against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
}

variables {
  name               = "dog-breeds-123456789012"
  ec2_log_group_name = "/dog-breeds/ec2-training"
}

run "creates_the_bucket_and_the_training_log_group" {
  module {
    source = "./modules/storage"
  }

  assert {
    condition     = aws_s3_bucket.this[0].bucket == "dog-breeds-123456789012" && output.bucket_arn == "arn:aws:s3:::dog-breeds-123456789012"
    error_message = "The bucket must carry the name it is given."
  }

  assert {
    condition     = aws_s3_bucket_versioning.this[0].versioning_configuration[0].status == "Enabled" && aws_s3_bucket_public_access_block.this[0].restrict_public_buckets
    error_message = "The bucket must be versioned and closed to the public."
  }

  assert {
    condition     = aws_cloudwatch_log_group.ec2_training.name == "/dog-breeds/ec2-training" && aws_cloudwatch_log_group.ec2_training.retention_in_days == 365
    error_message = "The EC2 training host's log group lives here, kept for a year."
  }
}

run "an_existing_bucket_is_left_alone_but_the_log_group_is_still_made" {
  command = plan

  module {
    source = "./modules/storage"
  }

  variables {
    create = false
  }

  assert {
    condition     = length(aws_s3_bucket.this) == 0 && !output.bucket_created && output.bucket_name == "dog-breeds-123456789012"
    error_message = "With create = false no bucket is made and the existing one is passed through."
  }

  assert {
    condition     = aws_cloudwatch_log_group.ec2_training.name == "/dog-breeds/ec2-training"
    error_message = "The training log group does not depend on who owns the bucket."
  }
}

run "refuses_a_retention_cloudwatch_does_not_offer" {
  command = plan

  module {
    source = "./modules/storage"
  }

  variables {
    ec2_log_retention_days = 42
  }

  expect_failures = [var.ec2_log_retention_days]
}
