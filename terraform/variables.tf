variable "name_prefix" {
  description = "Name of this deployment (2-32 characters: lowercase letters, digits, hyphens). It names the endpoint, the function, the roles and the bucket (<name_prefix>-<account id>), and is the Project tag."
  type        = string
  default     = "dog-breeds"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region to deploy to, for example us-east-1."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "model_data_url" {
  description = "S3 URI of the model archive to serve: s3://<bucket>/<prefix>/model.tar.gz, under the models/ or output/ prefix of the project bucket (the only places the SageMaker role may read models from). Required."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(.+/)?model\\.tar\\.gz$", var.model_data_url))
    error_message = "model_data_url must look like s3://<bucket>/<key>/model.tar.gz."
  }
}

variable "bucket" {
  description = <<-EOT
    The data and model bucket. By default Terraform creates <name_prefix>-<account id> (versioned, SSE-KMS, public
    access blocked, TLS only, lifecycle rules). To use an existing bucket instead: { create = false, name = "..." };
    Terraform then changes nothing on it. force_destroy lets destroy delete a bucket that still holds objects.
    noncurrent_version_expiration_days / noncurrent_versions_to_keep: how long replaced model artifacts are kept
    (days 1-3650) and how many of them are kept regardless. checkpoint_expiration_days: lifetime of checkpoints in days.
    access_log_bucket: an existing bucket for S3 access logs (null: off).
  EOT
  type = object({
    create                             = optional(bool, true)
    name                               = optional(string)
    force_destroy                      = optional(bool, false)
    noncurrent_version_expiration_days = optional(number, 90)
    noncurrent_versions_to_keep        = optional(number, 3)
    checkpoint_expiration_days         = optional(number, 30)
    access_log_bucket                  = optional(string)
  })
  default = {}

  validation {
    condition     = var.bucket.create || var.bucket.name != null
    error_message = "bucket.name is required when bucket.create is false (the existing bucket to use)."
  }
}

variable "s3_prefixes" {
  description = "Key prefixes in the bucket, each ending in '/': data (the data set), models (model archives built outside SageMaker), checkpoints (spot training), output (SageMaker training output), code (training source uploaded by the SDK), data_capture (endpoint data capture), mlflow (the MLflow tracking server's artifact store). The roles are granted access by these prefixes."
  type = object({
    data         = optional(string, "data/")
    models       = optional(string, "models/")
    checkpoints  = optional(string, "checkpoints/")
    output       = optional(string, "output/")
    code         = optional(string, "code/")
    data_capture = optional(string, "data-capture/")
    mlflow       = optional(string, "mlflow/")
  })
  default = {}

  validation {
    condition     = alltrue([for prefix in values(var.s3_prefixes) : can(regex("^[A-Za-z0-9!_.'()-][A-Za-z0-9!_.'()/-]*/$", prefix))])
    error_message = "Each prefix must be a relative key prefix without wildcards that ends with '/' (for example \"data/\")."
  }
}

variable "kms_key_arn" {
  description = "ARN of a customer managed KMS key used for the bucket, the log groups, the endpoint volume, the function's environment and the host's disk; the roles get use of it. Its key policy must allow CloudWatch Logs. Null (default): AWS managed keys everywhere."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>) or null."
  }
}

variable "endpoint" {
  description = <<-EOT
    The SageMaker endpoint. instance_type (ml.m5.large; ml.g4dn.xlarge for a GPU) and initial_instance_count (1-100)
    size it; framework_version and python_version pick the prebuilt PyTorch inference image (image_uri overrides it).
    environment: extra container variables. enable_network_isolation: off, because {"url": ...} requests fetch images.
    data_capture: capture requests and responses under the data_capture prefix (sampling_percentage 1-100).
    blue_green: blue/green updates with automatic rollback on alarms the module creates (see modules/endpoint).
    vpc: subnets and security groups to run the model in (null: SageMaker's network).
  EOT
  type = object({
    instance_type            = optional(string, "ml.m5.large")
    initial_instance_count   = optional(number, 1)
    framework_version        = optional(string, "2.6.0")
    python_version           = optional(string, "py312")
    image_uri                = optional(string)
    environment              = optional(map(string), {})
    enable_network_isolation = optional(bool, false)
    startup_timeout          = optional(number, 600)
    data_capture = optional(object({
      enabled             = optional(bool, false)
      sampling_percentage = optional(number, 100)
      capture_mode        = optional(string, "InputAndOutput")
    }), {})
    blue_green = optional(object({
      enabled                   = optional(bool, false)
      traffic_routing           = optional(string, "ALL_AT_ONCE")
      canary_percent            = optional(number, 50)
      linear_step_percent       = optional(number, 50)
      wait_interval             = optional(number, 300)
      termination_wait          = optional(number, 300)
      maximum_execution_timeout = optional(number, 3600)
      error_threshold           = optional(number, 1)
      latency_threshold_ms      = optional(number, 2000)
      alarm_actions             = optional(list(string), [])
    }), {})
    vpc = optional(object({
      subnet_ids         = list(string)
      security_group_ids = list(string)
    }))
  })
  default = {}

  validation {
    condition     = can(regex("^ml\\.[a-z0-9-]+\\.[a-z0-9]+$", var.endpoint.instance_type))
    error_message = "endpoint.instance_type must be a SageMaker ML instance type such as ml.m5.large."
  }

  validation {
    condition     = var.endpoint.initial_instance_count >= 1 && var.endpoint.initial_instance_count <= 100
    error_message = "endpoint.initial_instance_count must be between 1 and 100."
  }
}

variable "endpoint_running_instance_count" {
  description = "The endpoint variant's current desired instance count, read from DescribeEndpoint by the deploy tooling. A model update then starts the new fleet at that size instead of initial_instance_count, so it does not undo autoscaling. Null (default): unknown."
  type        = number
  default     = null

  validation {
    condition     = var.endpoint_running_instance_count == null || try(var.endpoint_running_instance_count >= 1, false)
    error_message = "endpoint_running_instance_count must be null or at least 1."
  }
}

variable "autoscaling" {
  description = "Target tracking on SageMakerVariantInvocationsPerInstance (invocations per instance per minute): min_capacity 1, max_capacity 2, target 5, cooldowns in seconds (0-3600). enabled = false leaves the instance count fixed."
  type = object({
    enabled                         = optional(bool, true)
    min_capacity                    = optional(number, 1)
    max_capacity                    = optional(number, 2)
    target_invocations_per_instance = optional(number, 5)
    scale_in_cooldown               = optional(number, 30)
    scale_out_cooldown              = optional(number, 30)
  })
  default = {}

  validation {
    condition     = var.autoscaling.min_capacity >= 1 && var.autoscaling.min_capacity <= var.autoscaling.max_capacity
    error_message = "autoscaling: min_capacity must be at least 1 and not above max_capacity."
  }

  validation {
    condition     = var.autoscaling.scale_in_cooldown >= 0 && var.autoscaling.scale_out_cooldown >= 0 && var.autoscaling.target_invocations_per_instance > 0
    error_message = "autoscaling: cooldowns must be 0 or more seconds and the target above 0."
  }
}

variable "function" {
  description = <<-EOT
    The Lambda function in front of the endpoint: runtime (python3.10-3.13), architecture (arm64 or x86_64),
    timeout in seconds (1-900), memory_size in MB (128-10240), reserved_concurrency (default 10: the 11th concurrent
    call gets 429), log_level, log_retention_days, tracing (X-Ray), dead_letter_target_arn (SQS/SNS, asynchronous
    calls only), function_url (always AWS_IAM authorization; never open).
  EOT
  type = object({
    runtime                = optional(string, "python3.12")
    architecture           = optional(string, "arm64")
    timeout                = optional(number, 140)
    memory_size            = optional(number, 256)
    reserved_concurrency   = optional(number, 10)
    log_level              = optional(string, "INFO")
    log_retention_days     = optional(number, 365)
    tracing                = optional(bool, false)
    dead_letter_target_arn = optional(string)
    function_url           = optional(bool, false)
  })
  default = {}
}

variable "lambda_package_path" {
  description = "Path of the function's deployment zip, which Python builds reproducibly. Null (default): build/function.zip at the repository root. Only a change of its content redeploys the function."
  type        = string
  default     = null
}

variable "enable_ec2_training_host" {
  description = "Create the EC2 training host (Deep Learning AMI, SSM only). `invoke ec2-train` turns it on for a run and off afterwards."
  type        = bool
  default     = false
}

variable "ec2_training_host" {
  description = "The EC2 training host, when enabled: instance_type (t2.medium; g4dn.xlarge or g5.xlarge for a GPU), root_volume_size_gb (encrypted gp3), ami_id (null: newest Deep Learning AMI), subnet_id (null: default VPC), key_name (null: none, SSM only)."
  type = object({
    instance_type       = optional(string, "t2.medium")
    root_volume_size_gb = optional(number, 150)
    ami_id              = optional(string)
    subnet_id           = optional(string)
    key_name            = optional(string)
  })
  default = {}
}

variable "mlflow_tracking_server" {
  description = "The optional SageMaker managed MLflow tracking server that training jobs, tuning trials and the EC2 host log their runs to (artifacts under the mlflow prefix of the bucket). enabled (default false: it is billed for every hour it exists); size: Small (up to 25 users), Medium (50) or Large (100). Off, the runs stay in the project's local MLflow store."
  type = object({
    enabled = optional(bool, false)
    size    = optional(string, "Small")
  })
  default = {}

  validation {
    condition     = contains(["Small", "Medium", "Large"], var.mlflow_tracking_server.size)
    error_message = "mlflow_tracking_server.size must be Small, Medium or Large."
  }
}

variable "github" {
  description = <<-EOT
    Plan review in pull requests (docs/pull-request-review.md): GitHub's OIDC provider and two roles for the
    workflows of `repository` (owner/name; "" (default): none of it). Pull requests assume <name_prefix>-github-plan
    (read-only, plus the state and its lock); only jobs in the GitHub environment `apply_environment` ("production",
    which should allow only `apply_branch` and require reviewers) assume <name_prefix>-github-apply, which applies
    the reviewed plan. oidc_provider_arn: the account's existing provider (null: create it). state_bucket,
    state_key, state_lock_table, state_region: the S3 backend, which the tasks fill in from aws.state_* (required with a repository).
  EOT
  type = object({
    repository        = optional(string, "")
    apply_branch      = optional(string, "main")
    apply_environment = optional(string, "production")
    oidc_provider_arn = optional(string)
    state_bucket      = optional(string, "")
    state_key         = optional(string, "")
    state_lock_table  = optional(string, "")
    state_region      = optional(string, "")
  })
  default = {}

  validation {
    condition     = var.github.repository == "" || (var.github.state_bucket != "" && var.github.state_key != "")
    error_message = "github.repository needs the S3 backend (aws.state_bucket): a workflow runner keeps no local state."
  }
}

variable "tags" {
  description = "Tags added to every resource, on top of Project = <name_prefix> and ManagedBy = terraform."
  type        = map(string)
  default     = {}
}
