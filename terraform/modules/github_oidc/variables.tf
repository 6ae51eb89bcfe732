variable "name_prefix" {
  description = "Name of the deployment whose plans and applies the roles run (2-32 characters: lowercase letters, digits, hyphens): the roles are <name_prefix>-github-plan and <name_prefix>-github-apply, and they reach the resources named <name_prefix>..."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "repository" {
  description = "The GitHub repository, as owner/name, whose workflows may assume the roles: its pull requests and apply_branch the plan role, its apply_environment the apply role."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$", var.repository))
    error_message = "repository must be owner/name, for example octo-org/dog-breeds."
  }
}

variable "apply_branch" {
  description = "The branch whose workflow runs may assume the plan role by workflow_dispatch, and which apply_environment should allow: protect it with required reviews."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.apply_branch)) && !strcontains(var.apply_branch, "*")
    error_message = "apply_branch must be one branch name, without wildcards."
  }
}

variable "apply_environment" {
  description = "The GitHub environment the apply workflow's job runs in (`environment:`): only jobs in it may assume the apply role. Give it required reviewers and a deployment branch rule for apply_branch only (docs/pull-request-review.md)."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[A-Za-z0-9._ -]+$", var.apply_environment)) && !strcontains(var.apply_environment, "*")
    error_message = "apply_environment must be one GitHub environment name, without wildcards."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the account's existing IAM OIDC provider for token.actions.githubusercontent.com (an account has at most one). Null (default): this module creates it."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", coalesce(var.oidc_provider_arn, "x")))
    error_message = "oidc_provider_arn must be arn:aws:iam::<account>:oidc-provider/token.actions.githubusercontent.com, or null."
  }
}

variable "state" {
  description = "Where the Terraform state lives (the S3 backend: aws.state_bucket, aws.state_key, aws.state_lock_table): both roles read it and take its lock, the apply role writes it. lock_table null: no DynamoDB lock. region: the backend's (aws.state_region), where the lock table is; null: the deployment's region."
  type = object({
    bucket     = string
    key        = string
    lock_table = optional(string)
    region     = optional(string)
  })

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.state.bucket)) && length(var.state.key) > 0
    error_message = "state.bucket must be an S3 bucket name and state.key the state's key (the S3 backend is required: a workflow runner keeps no local state)."
  }
}

variable "bucket_arn" {
  description = "ARN of the project's data and model bucket, whose configuration the roles read (plan) and manage (apply); neither role reads its objects."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_arn))
    error_message = "bucket_arn must be an S3 bucket ARN (arn:aws:s3:::<bucket>)."
  }
}

variable "kms_key_arn" {
  description = "ARN of the project's customer managed KMS key, which the apply role may grant to the endpoint and the function. Null when AWS managed keys are used."
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
