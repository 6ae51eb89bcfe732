data "aws_ami" "deep_learning" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = [var.ami_name_pattern]
  }

  filter {
    name   = "architecture"
    values = [var.ami_architecture]
  }

  filter {
    name   = "state"
    values = ["available"]
  }
}

data "aws_subnet" "selected" {
  count = var.subnet_id == null ? 0 : 1

  id = var.subnet_id
}

data "aws_vpc" "default" {
  count = var.subnet_id == null ? 1 : 0

  default = true
}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.deep_learning[0].id
  vpc_id = var.subnet_id != null ? data.aws_subnet.selected[0].vpc_id : data.aws_vpc.default[0].id
  # The invoke task looks the host up by these two tags.
  host_tags = merge(var.tags, {
    Name    = "${var.name_prefix}-training-host"
    Project = var.name_prefix
    Role    = "training-host"
  })
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name_prefix}-training-host-"
  description = "${var.name_prefix} training host: no inbound access (Systems Manager only), HTTPS out"
  vpc_id      = local.vpc_id

  egress {
    description = "HTTPS to the data set, package indexes, S3 and Systems Manager"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.egress_cidr_blocks
  }

  tags = merge(var.tags, { Name = "${var.name_prefix}-training-host" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_135:EBS optimization is not available on t2 instances (the default type) and is always on for current GPU types.
  #checkov:skip=CKV_AWS_126:Detailed (1-minute) monitoring costs extra for a host that lives only for one training run; the training log is the record.
  ami                    = local.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.this.id]
  iam_instance_profile   = var.instance_profile_name
  key_name               = var.key_name

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
    tags                  = local.host_tags
  }

  tags = local.host_tags
}
