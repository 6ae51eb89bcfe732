variable "endpoint_name" {
  description = "Name of the SageMaker endpoint whose variant is scaled."
  type        = string
}

variable "variant_name" {
  description = "Name of the endpoint's production variant that is scaled."
  type        = string
  default     = "AllTraffic"
}

variable "min_capacity" {
  description = "Fewest instances the variant scales in to (1-100)."
  type        = number
  default     = 1

  validation {
    condition     = var.min_capacity >= 1 && var.min_capacity <= 100 && floor(var.min_capacity) == var.min_capacity
    error_message = "min_capacity must be a whole number between 1 and 100."
  }
}

variable "max_capacity" {
  description = "Most instances the variant scales out to (1-100, at least min_capacity)."
  type        = number
  default     = 2

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 100 && floor(var.max_capacity) == var.max_capacity
    error_message = "max_capacity must be a whole number between 1 and 100."
  }
}

variable "target_invocations_per_instance" {
  description = "Target of SageMakerVariantInvocationsPerInstance: average invocations per instance per minute that the policy keeps the variant at (above 0)."
  type        = number
  default     = 5

  validation {
    condition     = var.target_invocations_per_instance > 0
    error_message = "target_invocations_per_instance must be above 0."
  }
}

variable "scale_in_cooldown" {
  description = "Seconds after a scale-in before another scale-in may start (0-3600)."
  type        = number
  default     = 30

  validation {
    condition     = var.scale_in_cooldown >= 0 && var.scale_in_cooldown <= 3600
    error_message = "scale_in_cooldown must be between 0 and 3600 seconds."
  }
}

variable "scale_out_cooldown" {
  description = "Seconds after a scale-out before another scale-out may start (0-3600)."
  type        = number
  default     = 30

  validation {
    condition     = var.scale_out_cooldown >= 0 && var.scale_out_cooldown <= 3600
    error_message = "scale_out_cooldown must be between 0 and 3600 seconds."
  }
}

variable "disable_scale_in" {
  description = "Only ever scale out (scale in by hand). False lets the policy remove idle instances."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to the scalable target."
  type        = map(string)
  default     = {}
}
