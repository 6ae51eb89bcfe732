variable "name_prefix" {
  description = "Prefix of every role and instance profile name (1-32 characters: lowercase letters, digits, hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_arn" {
  description = "ARN of the data and model bucket the roles get access to, by prefix."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_arn))
    error_message = "bucket_arn must be an S3 bucket ARN (arn:aws:s3:::<bucket>)."
  }
}

variable "s3_prefixes" {
  description = "Key prefixes in the bucket (each ending in '/'): data/ (data set), models/ (model artifacts built outside SageMaker), checkpoints/ (spot training), output/ (SageMaker training output, including model.tar.gz), code/ (training source uploaded by the SDK), data_capture/ (endpoint data capture), mlflow/ (the MLflow tracking server's artifact store)."
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

variable "endpoint_name" {
  description = "Name of the SageMaker endpoint: the Lambda role may invoke this endpoint and no other, and the SageMaker role may write this endpoint's logs. The endpoint need not exist yet."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", var.endpoint_name))
    error_message = "endpoint_name must be 1-63 characters of letters, digits and hyphens (SageMaker's rule)."
  }
}

variable "lambda_log_group_name" {
  description = "Name of the function's own CloudWatch log group (created by the lambda module); the Lambda role may write there and nowhere else."
  type        = string
}

variable "ec2_log_group_name" {
  description = "Name of the CloudWatch log group the EC2 training host writes its command output to."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the customer managed KMS key that encrypts the bucket, logs and volumes; the roles get use of this key only. Null when AWS managed keys are used."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>) or null."
  }
}

variable "enable_sagemaker_vpc_access" {
  description = "Let the SageMaker role create and delete the network interfaces that training jobs and endpoints need inside a VPC. Only needed when they run in your subnets."
  type        = bool
  default     = false
}

variable "mlflow_tracking_server_name" {
  description = "Name of the SageMaker managed MLflow tracking server the SageMaker and EC2 training roles may log runs to (its ARN only), with read/write of the mlflow/ prefix where the MLflow client puts a run's artifacts. Null (default): no tracking server, no such grant. The server need not exist yet."
  type        = string
  default     = null

  validation {
    condition     = var.mlflow_tracking_server_name == null || can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$", coalesce(var.mlflow_tracking_server_name, "x")))
    error_message = "mlflow_tracking_server_name must be letters, digits and hyphens (SageMaker's rule), or null."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
