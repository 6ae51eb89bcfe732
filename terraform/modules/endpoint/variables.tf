variable "name" {
  description = "Endpoint name (1-32 characters: letters, digits, hyphens). Model and endpoint configuration names are this name plus a content hash."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$", var.name))
    error_message = "name must be 1-32 characters of letters, digits and hyphens, so that name-<hash> stays within SageMaker's 63."
  }
}

variable "model_data_url" {
  description = "S3 URI of the model archive built by training: s3://<bucket>/<key>/model.tar.gz (weights, model_config.json and code/ at its top level)."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(.+/)?model\\.tar\\.gz$", var.model_data_url))
    error_message = "model_data_url must look like s3://<bucket>/<key>/model.tar.gz."
  }
}

variable "model_artifact_s3_prefixes" {
  description = "S3 URI prefixes (s3://<bucket>/<prefix>) the execution role may read model artifacts from. When not empty, a model_data_url outside them is refused at plan time instead of failing the endpoint half an hour later."
  type        = list(string)
  default     = []
}

variable "execution_role_arn" {
  description = "ARN of the SageMaker execution role that pulls the image and reads model_data_url."
  type        = string
}

variable "instance_type" {
  description = "ML instance type of the endpoint (for example ml.m5.large; ml.g4dn.xlarge or ml.g5.xlarge for a GPU)."
  type        = string
  default     = "ml.m5.large"

  validation {
    condition     = can(regex("^ml\\.[a-z0-9-]+\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be a SageMaker ML instance type such as ml.m5.large."
  }
}

variable "initial_instance_count" {
  description = "Instances the endpoint starts with (1-100). With autoscaling, the running count is autoscaling's to manage: see running_instance_count."
  type        = number
  default     = 1

  validation {
    condition     = var.initial_instance_count >= 1 && var.initial_instance_count <= 100 && floor(var.initial_instance_count) == var.initial_instance_count
    error_message = "initial_instance_count must be a whole number between 1 and 100."
  }
}

variable "running_instance_count" {
  description = "The variant's current desired instance count (DescribeEndpoint), when the caller knows it. A new model then starts at max(initial_instance_count, this) instances instead of dropping a scaled-out endpoint back to initial_instance_count. Null: unknown."
  type        = number
  default     = null

  validation {
    condition     = var.running_instance_count == null || try(var.running_instance_count >= 1 && floor(var.running_instance_count) == var.running_instance_count, false)
    error_message = "running_instance_count must be null or a whole number of at least 1."
  }
}

variable "max_instance_count" {
  description = "Upper bound for the starting instance count (autoscaling's max_capacity when autoscaling is on). Null: no bound."
  type        = number
  default     = null
}

variable "variant_name" {
  description = "Name of the production variant. Blue/green updates need it to stay the same from one model to the next."
  type        = string
  default     = "AllTraffic"

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", var.variant_name))
    error_message = "variant_name must be 1-63 characters of letters, digits and hyphens."
  }
}

variable "framework_version" {
  description = "PyTorch version of the SageMaker PyTorch inference image (AWS Deep Learning Containers), for example 2.6.0."
  type        = string
  default     = "2.6.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+(\\.[0-9]+)?$", var.framework_version))
    error_message = "framework_version must look like 2.6.0."
  }
}

variable "python_version" {
  description = "Python version tag of the inference image, for example py312 (must exist for framework_version)."
  type        = string
  default     = "py312"

  validation {
    condition     = can(regex("^py3[0-9]+$", var.python_version))
    error_message = "python_version must look like py312."
  }
}

variable "image_uri" {
  description = "Full inference image URI, overriding the prebuilt PyTorch image lookup (for example a private image with extra packages). Null: use the prebuilt image for framework_version, python_version and the instance's processor."
  type        = string
  default     = null
}

variable "environment" {
  description = "Extra environment variables of the inference container, merged over the SageMaker program settings."
  type        = map(string)
  default     = {}
}

variable "enable_network_isolation" {
  description = "Cut the model container off the network. Off by default: requests of the form {\"url\": ...} need the container to fetch the image, and code/requirements.txt is installed at start."
  type        = bool
  default     = false
}

variable "container_startup_health_check_timeout" {
  description = "Seconds the container may take to pass its first /ping (60-3600). Null: SageMaker's default."
  type        = number
  default     = 600

  validation {
    condition     = var.container_startup_health_check_timeout == null || try(var.container_startup_health_check_timeout >= 60 && var.container_startup_health_check_timeout <= 3600, false)
    error_message = "container_startup_health_check_timeout must be between 60 and 3600 seconds, or null."
  }
}

variable "kms_key_arn" {
  description = "ARN of a KMS key that encrypts the endpoint instances' storage volume and the captured data. Not supported by instance types with local NVMe storage (ml.*d, ml.g4dn, ml.g5...). Null: AWS managed encryption."
  type        = string
  default     = null
}

variable "vpc_config" {
  description = "Run the model in these VPC subnets with these security groups. Null: SageMaker's own network."
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  default = null

  validation {
    condition     = var.vpc_config == null || try(length(var.vpc_config.subnet_ids) > 0 && length(var.vpc_config.security_group_ids) > 0, false)
    error_message = "vpc_config needs at least one subnet and one security group."
  }
}

variable "data_capture" {
  description = "Capture requests and responses to S3 (destination_s3_uri, for example s3://<bucket>/data-capture/). sampling_percentage 1-100; capture_mode Input, Output or InputAndOutput."
  type = object({
    enabled             = optional(bool, false)
    destination_s3_uri  = optional(string)
    sampling_percentage = optional(number, 100)
    capture_mode        = optional(string, "InputAndOutput")
  })
  default = {}

  validation {
    condition     = !var.data_capture.enabled || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.data_capture.destination_s3_uri))
    error_message = "data_capture.destination_s3_uri must be an s3:// URI when data capture is enabled."
  }

  validation {
    condition     = var.data_capture.sampling_percentage >= 1 && var.data_capture.sampling_percentage <= 100
    error_message = "data_capture.sampling_percentage must be between 1 and 100."
  }

  validation {
    condition     = contains(["Input", "Output", "InputAndOutput"], var.data_capture.capture_mode)
    error_message = "data_capture.capture_mode must be Input, Output or InputAndOutput."
  }
}

variable "blue_green" {
  description = <<-EOT
    Blue/green deployment with automatic rollback. When enabled, a model update brings up a new fleet, shifts traffic
    (ALL_AT_ONCE, CANARY with canary_percent of capacity first, or LINEAR in steps of linear_step_percent), watches two
    alarms this module creates (5XX errors >= error_threshold in a minute; average model latency > latency_threshold_ms)
    for wait_interval seconds per step, and rolls back if either fires. wait_interval and termination_wait in seconds
    (0-3600), maximum_execution_timeout in seconds (600-28800). AWS documents that the timeout "should be larger than
    the total waiting time specified in TerminationWaitInSeconds and WaitIntervalInSeconds"; this module counts the
    deployment's real total wait, so the timeout must be longer than wait_interval after each traffic shift (1 for
    ALL_AT_ONCE, 2 for CANARY, 100 / linear_step_percent rounded up for LINEAR) plus termination_wait.
  EOT
  type = object({
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
  })
  default = {}

  validation {
    condition     = contains(["ALL_AT_ONCE", "CANARY", "LINEAR"], var.blue_green.traffic_routing)
    error_message = "blue_green.traffic_routing must be ALL_AT_ONCE, CANARY or LINEAR."
  }

  validation {
    condition = (
      var.blue_green.wait_interval >= 0 && var.blue_green.wait_interval <= 3600 &&
      var.blue_green.termination_wait >= 0 && var.blue_green.termination_wait <= 3600 &&
      var.blue_green.maximum_execution_timeout >= 600 && var.blue_green.maximum_execution_timeout <= 28800
    )
    error_message = "blue_green: wait_interval and termination_wait must be 0-3600 s, maximum_execution_timeout 600-28800 s."
  }

  validation {
    # AWS documents only this (MaximumExecutionTimeoutInSeconds in botocore's sagemaker service model): "Note that the
    # timeout value should be larger than the total waiting time specified in TerminationWaitInSeconds and
    # WaitIntervalInSeconds." The deployment waits wait_interval after each traffic shift, so the project's stricter
    # reading counts it once per shift: a timeout that only passes AWS's sum could end a canary or linear deployment
    # while it is still waiting.
    condition = !var.blue_green.enabled || try(
      var.blue_green.maximum_execution_timeout > var.blue_green.termination_wait + var.blue_green.wait_interval * (
        var.blue_green.traffic_routing == "LINEAR" ? ceil(100 / var.blue_green.linear_step_percent) :
        var.blue_green.traffic_routing == "CANARY" ? 2 : 1
      ),
    false)
    error_message = "blue_green: maximum_execution_timeout (${var.blue_green.maximum_execution_timeout} s) must be longer than the deployment's total wait, wait_interval after each traffic shift plus termination_wait (AWS documents that it should be larger than termination_wait and wait_interval together; this module counts each shift's wait); raise it or shorten the waits."
  }

  validation {
    condition     = var.blue_green.canary_percent > 0 && var.blue_green.canary_percent <= 50 && var.blue_green.linear_step_percent >= 10 && var.blue_green.linear_step_percent <= 50
    error_message = "blue_green: canary_percent must be 1-50 and linear_step_percent 10-50 (SageMaker's limits)."
  }

  validation {
    condition     = var.blue_green.error_threshold >= 1 && var.blue_green.latency_threshold_ms > 0
    error_message = "blue_green: error_threshold must be at least 1 and latency_threshold_ms above 0."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
