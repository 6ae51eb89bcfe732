variable "name" {
  description = "Name of the model package group and of the MLflow tracking server (1-63 characters: letters, digits, hyphens; SageMaker's rule)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", var.name))
    error_message = "name must be 1-63 characters of letters, digits and hyphens, starting and ending with a letter or digit."
  }
}

variable "description" {
  description = "Description of the model package group (up to 1024 characters)."
  type        = string
  default     = "Model versions of the project: each one pending until approved; `invoke plan` deploys the newest approved one."

  validation {
    condition     = length(var.description) <= 1024
    error_message = "description must be at most 1024 characters."
  }
}

variable "mlflow_tracking_server" {
  description = <<-EOT
    The SageMaker managed MLflow tracking server. enabled (default false: it is billed for every hour it exists);
    size: Small (up to 25 users), Medium (50) or Large (100); mlflow_version (null: SageMaker's default);
    weekly_maintenance_window_start as "Tue:03:30" (null: SageMaker's choice).
  EOT
  type = object({
    enabled                         = optional(bool, false)
    size                            = optional(string, "Small")
    mlflow_version                  = optional(string)
    weekly_maintenance_window_start = optional(string)
  })
  default = {}

  validation {
    condition     = contains(["Small", "Medium", "Large"], var.mlflow_tracking_server.size)
    error_message = "mlflow_tracking_server.size must be Small, Medium or Large."
  }

  validation {
    condition     = var.mlflow_tracking_server.weekly_maintenance_window_start == null || can(regex("^(Mon|Tue|Wed|Thu|Fri|Sat|Sun):([01][0-9]|2[0-3]):[0-5][0-9]$", coalesce(var.mlflow_tracking_server.weekly_maintenance_window_start, "x")))
    error_message = "mlflow_tracking_server.weekly_maintenance_window_start must look like Tue:03:30."
  }
}

variable "bucket_name" {
  description = "Name of the project bucket that holds the tracking server's artifact store (under artifact_prefix)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be an S3 bucket name (3-63 characters: lowercase letters, digits, dots, hyphens)."
  }
}

variable "artifact_prefix" {
  description = "Key prefix of the tracking server's artifact store in the bucket, ending in '/'. The server's role reaches only this prefix."
  type        = string
  default     = "mlflow/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.'()-][A-Za-z0-9!_.'()/-]*/$", var.artifact_prefix))
    error_message = "artifact_prefix must be a relative key prefix without wildcards that ends with '/' (for example \"mlflow/\")."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer managed KMS key that encrypts the bucket; the tracking server's role gets use of it. Null when the bucket uses AWS managed keys."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>) or null."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
