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
