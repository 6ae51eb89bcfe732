variable "name_prefix" {
  description = "Project name: the host is tagged Project = <name_prefix> and Role = training-host, which is how `invoke ec2-train` finds it."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type. t2.medium (2 vCPU, 4 GiB, no GPU) is the default; for a GPU use g4dn.xlarge (T4) or g5.xlarge (A10G), which the Deep Learning AMI's drivers support."
  type        = string
  default     = "t2.medium"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as t2.medium or g4dn.xlarge."
  }
}

variable "ami_id" {
  description = "AMI to boot. Null: the newest AMI owned by Amazon whose name matches ami_name_pattern."
  type        = string
  default     = null
}

variable "ami_name_pattern" {
  description = "Name pattern of the AWS Deep Learning AMI looked up when ami_id is null (PyTorch, drivers and the SSM agent preinstalled)."
  type        = string
  default     = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.* (Ubuntu 22.04) *"
}

variable "ami_architecture" {
  description = "CPU architecture of the looked-up AMI: x86_64 (t2, g4dn, g5) or arm64 (Graviton types)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.ami_architecture)
    error_message = "ami_architecture must be x86_64 or arm64."
  }
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume in GiB (30-16384): at least the AMI's own snapshot (check it with `aws ec2 describe-images`) plus about 10 GiB for dogImages (1.1 GB zip and its unzipped copy), the feature cache and checkpoints."
  type        = number
  default     = 150

  validation {
    condition     = var.root_volume_size_gb >= 30 && var.root_volume_size_gb <= 16384
    error_message = "root_volume_size_gb must be between 30 and 16384."
  }
}

variable "instance_profile_name" {
  description = "Instance profile of the host (the iam module's EC2 training profile)."
  type        = string
}

variable "subnet_id" {
  description = "Subnet to start the host in; it needs a route to the internet (public IP or NAT) or VPC endpoints for SSM and S3. Null: a default subnet of the region's default VPC."
  type        = string
  default     = null
}

variable "egress_cidr_blocks" {
  description = "Where the host may open HTTPS (443) connections: the data set download, package indexes, S3 and Systems Manager. Nothing else leaves the host and nothing may come in."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "key_name" {
  description = "EC2 key pair for emergencies. Null (default): none; use `aws ssm start-session`. The security group allows no inbound traffic either way."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "ARN of a customer managed KMS key for the root volume. Null: the account's default EBS key."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
