variable "create" {
  description = "Create the bucket (true) or use the existing bucket named by `name` (false). An existing bucket is left exactly as it is: none of the settings below are applied to it."
  type        = bool
  default     = true
}

variable "name" {
  description = "Bucket name (3-63 characters: lowercase letters, digits, dots, hyphens). Required when `create` is false."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.name))
    error_message = "The bucket name must be 3-63 characters of lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the bucket while it still holds objects (data set, models). Leave false outside throw-away accounts."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "ARN of a customer managed KMS key for the bucket's default encryption and the EC2 training log group. Null: the AWS managed key aws/s3 (SSE-KMS either way) and CloudWatch Logs' own keys."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>) or null."
  }
}

variable "prefixes" {
  description = "Key prefixes (each ending in '/') the lifecycle rules act on: models/ and output/ hold model artifacts, checkpoints/ holds spot-training checkpoints."
  type = object({
    models      = optional(string, "models/")
    output      = optional(string, "output/")
    checkpoints = optional(string, "checkpoints/")
  })
  default = {}

  validation {
    condition     = alltrue([for prefix in values(var.prefixes) : can(regex("^[A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*/$", prefix))])
    error_message = "Each prefix must be a relative key prefix that ends with '/' (for example \"models/\")."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which a replaced (noncurrent) model artifact under models/ and output/ is deleted, in days (1-3650)."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && var.noncurrent_version_expiration_days <= 3650
    error_message = "noncurrent_version_expiration_days must be between 1 and 3650."
  }
}

variable "noncurrent_versions_to_keep" {
  description = "Number of most recent noncurrent versions of each model artifact kept regardless of age (0-100), so a rollback target always exists."
  type        = number
  default     = 3

  validation {
    condition     = var.noncurrent_versions_to_keep >= 0 && var.noncurrent_versions_to_keep <= 100
    error_message = "noncurrent_versions_to_keep must be between 0 and 100."
  }
}

variable "checkpoint_expiration_days" {
  description = "Days after which training checkpoints under checkpoints/ are deleted, in days (1-3650). Checkpoints only matter while a job runs or resumes."
  type        = number
  default     = 30

  validation {
    condition     = var.checkpoint_expiration_days >= 1 && var.checkpoint_expiration_days <= 3650
    error_message = "checkpoint_expiration_days must be between 1 and 3650."
  }
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives S3 server access logs for this bucket. Null turns access logging off."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix of the access logs in `access_log_bucket`."
  type        = string
  default     = "s3-access-logs/"
}

variable "ec2_log_group_name" {
  description = "Name of the CloudWatch log group that receives the output of the commands run on the EC2 training host (ssm send-command). It is kept when the host is destroyed."
  type        = string
}

variable "ec2_log_retention_days" {
  description = "Days the EC2 training log group keeps the command output; one of CloudWatch's allowed values."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.ec2_log_retention_days)
    error_message = "ec2_log_retention_days must be one of CloudWatch's allowed retention values."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
