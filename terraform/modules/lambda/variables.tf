variable "function_name" {
  description = "Name of the function (1-64 characters: letters, digits, hyphens, underscores)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,64}$", var.function_name))
    error_message = "function_name must be 1-64 characters of letters, digits, hyphens and underscores."
  }
}

variable "role_arn" {
  description = "ARN of the function's execution role (from the iam module)."
  type        = string
}

variable "role_name" {
  description = "Name of the same role: the optional X-Ray and dead-letter permissions are attached to it here, only when those features are on."
  type        = string
}

variable "package_path" {
  description = "Path of the deployment zip that Python builds reproducibly (build/function.zip). Its SHA-256 is the source hash: a code change redeploys the function, nothing else does."
  type        = string

  validation {
    condition     = endswith(var.package_path, ".zip")
    error_message = "package_path must point to a .zip file."
  }
}

variable "handler" {
  description = "Entry point, module.function, inside the zip."
  type        = string
  default     = "lambda_function.lambda_handler"
}

variable "runtime" {
  description = "Python runtime of the function; one AWS Lambda still supports (python3.10 to python3.13)."
  type        = string
  default     = "python3.12"

  validation {
    condition     = contains(["python3.10", "python3.11", "python3.12", "python3.13"], var.runtime)
    error_message = "runtime must be one of python3.10, python3.11, python3.12, python3.13."
  }
}

variable "architecture" {
  description = "Instruction set of the function: arm64 (cheaper per GB-second; the code is pure Python) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "timeout" {
  description = "Seconds an invocation may run (1-900). Above two attempts of the function's 65 s endpoint read timeout (a container has 60 s to answer) plus connect time, so a slow model is reported as 504, not cut off."
  type        = number
  default     = 140

  validation {
    condition     = var.timeout >= 1 && var.timeout <= 900
    error_message = "timeout must be between 1 and 900 seconds."
  }
}

variable "memory_size" {
  description = "Memory of the function in MB (128-10240); CPU share grows with it."
  type        = number
  default     = 256

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size must be between 128 and 10240 MB."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions (1-1000): at most this many run at once, the rest get 429 TooManyRequestsException; it also protects the endpoint from a flood."
  type        = number
  default     = 10

  validation {
    condition     = var.reserved_concurrency >= 1 && var.reserved_concurrency <= 1000 && floor(var.reserved_concurrency) == var.reserved_concurrency
    error_message = "reserved_concurrency must be a whole number between 1 and 1000."
  }
}

variable "endpoint_name" {
  description = "Name of the SageMaker endpoint the function calls (its ENDPOINT_NAME environment variable)."
  type        = string
}

variable "log_level" {
  description = "Log level of the function (its LOG_LEVEL environment variable): DEBUG, INFO, WARNING or ERROR."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "environment" {
  description = "Extra environment variables; ENDPOINT_NAME and LOG_LEVEL are always set from their own variables. Nothing secret: the environment is visible to anyone who may read the function's configuration."
  type        = map(string)
  default     = {}
}

variable "log_group_name" {
  description = "Name of the function's log group, created here. Null: Lambda's default /aws/lambda/<function_name>. The iam module's Lambda role may write to this group only, so both must get the same name."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Days the function's log group keeps its events; one of CloudWatch's allowed values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of CloudWatch's allowed retention values."
  }
}

variable "kms_key_arn" {
  description = "ARN of a customer managed KMS key for the function's environment variables and its log group (the key policy must allow CloudWatch Logs). Null: AWS managed keys."
  type        = string
  default     = null
}

variable "tracing_enabled" {
  description = "Active AWS X-Ray tracing. Adds X-Ray write permissions to the role."
  type        = bool
  default     = false
}

variable "dead_letter_target_arn" {
  description = "ARN of an SQS queue or SNS topic for failed asynchronous invocations. Adds permission to send there. Null: none (synchronous calls, as `invoke predict` makes, report errors to the caller instead)."
  type        = string
  default     = null

  validation {
    condition     = var.dead_letter_target_arn == null || can(regex("^arn:aws[a-z-]*:(sqs|sns):", var.dead_letter_target_arn))
    error_message = "dead_letter_target_arn must be the ARN of an SQS queue or SNS topic, or null."
  }
}

variable "create_function_url" {
  description = "Create a function URL. Its authorization is always AWS_IAM (SigV4-signed callers with lambda:InvokeFunctionUrl); this module never creates an open URL."
  type        = bool
  default     = false
}

variable "code_signing_config_arn" {
  description = "ARN of a Lambda code signing configuration that the deployment zip must satisfy. Null: no code signing."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
