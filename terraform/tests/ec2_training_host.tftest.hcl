# terraform test (Terraform >= 1.7): the ec2_training_host module on its own, against a mocked AWS provider.

mock_provider "aws" {
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
  name_prefix           = "dog-breeds"
  instance_profile_name = "dog-breeds-ec2-training"
}

run "a_locked_down_host_invoke_can_find" {
  module {
    source = "./modules/ec2_training_host"
  }

  assert {
    condition     = aws_instance.this.metadata_options[0].http_tokens == "required"
    error_message = "The host must require IMDSv2."
  }

  assert {
    condition     = aws_instance.this.root_block_device[0].encrypted == true
    error_message = "The host's root volume must be encrypted."
  }

  assert {
    condition     = aws_instance.this.tags["Project"] == "dog-breeds" && aws_instance.this.tags["Role"] == "training-host"
    error_message = "The host must carry the tags invoke finds it by."
  }

  assert {
    condition     = aws_instance.this.instance_type == "t2.medium" && aws_instance.this.ami == "ami-0123456789abcdef0"
    error_message = "The host defaults to t2.medium on the looked-up Deep Learning AMI."
  }

  assert {
    condition     = output.instance_id == aws_instance.this.id
    error_message = "instance_id must name the host."
  }

  assert {
    condition     = length(aws_security_group.this.ingress) == 0 && aws_security_group.this.vpc_id == "vpc-0123456789abcdef0"
    error_message = "The host accepts no inbound traffic, in the default VPC."
  }

  assert {
    condition     = [for rule in aws_security_group.this.egress : [rule.from_port, rule.to_port, rule.protocol]] == [[443, 443, "tcp"]]
    error_message = "The host may only open HTTPS connections."
  }
}
