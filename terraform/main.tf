provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}

locals {
  tags = merge(var.tags, {
    Project   = var.name_prefix
    ManagedBy = "terraform"
  })

  # One name each, used by every module that refers to the thing.
  endpoint_name         = var.name_prefix
  function_name         = var.name_prefix
  lambda_log_group_name = "/aws/lambda/${var.name_prefix}"
  ec2_log_group_name    = "/${var.name_prefix}/ec2-training"
  # The model package group and the MLflow tracking server: the project's registry and tracking, one name.
  model_registry_name = var.name_prefix
  bucket_name         = coalesce(var.bucket.name, "${var.name_prefix}-${data.aws_caller_identity.current.account_id}")
  lambda_package_path = coalesce(var.lambda_package_path, "${path.root}/../build/function.zip")

  s3_uri = { for name, prefix in var.s3_prefixes : name => "s3://${module.storage.bucket_name}/${prefix}" }
}

module "storage" {
  source = "./modules/storage"

  create                             = var.bucket.create
  name                               = local.bucket_name
  force_destroy                      = var.bucket.force_destroy
  kms_key_arn                        = var.kms_key_arn
  prefixes                           = { models = var.s3_prefixes.models, output = var.s3_prefixes.output, checkpoints = var.s3_prefixes.checkpoints }
  noncurrent_version_expiration_days = var.bucket.noncurrent_version_expiration_days
  noncurrent_versions_to_keep        = var.bucket.noncurrent_versions_to_keep
  checkpoint_expiration_days         = var.bucket.checkpoint_expiration_days
  access_log_bucket                  = var.bucket.access_log_bucket
  ec2_log_group_name                 = local.ec2_log_group_name
}

# The log group used to be the host module's, so every teardown of the host deleted the logs of its runs.
moved {
  from = module.ec2_training_host[0].aws_cloudwatch_log_group.this
  to   = module.storage.aws_cloudwatch_log_group.ec2_training
}

# Depends on storage only, so that `terraform apply -target=module.storage -target=module.iam` can create the
# bucket and the roles before the first training job, when there is no model yet.
module "iam" {
  source = "./modules/iam"

  name_prefix                 = var.name_prefix
  bucket_arn                  = module.storage.bucket_arn
  s3_prefixes                 = var.s3_prefixes
  endpoint_name               = local.endpoint_name
  lambda_log_group_name       = local.lambda_log_group_name
  ec2_log_group_name          = local.ec2_log_group_name
  kms_key_arn                 = var.kms_key_arn
  enable_sagemaker_vpc_access = var.endpoint.vpc != null
  mlflow_tracking_server_name = var.mlflow_tracking_server.enabled ? local.model_registry_name : null
}

# Depends on storage only: the bootstrap (aws.bootstrap_targets) creates it with the bucket and the roles, so the
# registry exists before the first training job registers its model.
module "model_registry" {
  source = "./modules/model_registry"

  name            = local.model_registry_name
  bucket_name     = module.storage.bucket_name
  artifact_prefix = var.s3_prefixes.mlflow
  kms_key_arn     = var.kms_key_arn

  mlflow_tracking_server = {
    enabled = var.mlflow_tracking_server.enabled
    size    = var.mlflow_tracking_server.size
  }
}

module "endpoint" {
  source = "./modules/endpoint"

  name                       = local.endpoint_name
  model_data_url             = var.model_data_url
  model_artifact_s3_prefixes = [local.s3_uri.models, local.s3_uri.output]
  execution_role_arn         = module.iam.sagemaker_role_arn

  instance_type                          = var.endpoint.instance_type
  initial_instance_count                 = var.endpoint.initial_instance_count
  running_instance_count                 = var.endpoint_running_instance_count
  max_instance_count                     = var.autoscaling.enabled ? var.autoscaling.max_capacity : null
  framework_version                      = var.endpoint.framework_version
  python_version                         = var.endpoint.python_version
  image_uri                              = var.endpoint.image_uri
  environment                            = var.endpoint.environment
  enable_network_isolation               = var.endpoint.enable_network_isolation
  container_startup_health_check_timeout = var.endpoint.startup_timeout
  kms_key_arn                            = var.kms_key_arn
  vpc_config                             = var.endpoint.vpc
  blue_green                             = var.endpoint.blue_green

  data_capture = merge(var.endpoint.data_capture, {
    destination_s3_uri = local.s3_uri.data_capture
  })
}

module "autoscaling" {
  source = "./modules/autoscaling"
  count  = var.autoscaling.enabled ? 1 : 0

  endpoint_name                   = module.endpoint.endpoint_name
  variant_name                    = module.endpoint.variant_name
  min_capacity                    = var.autoscaling.min_capacity
  max_capacity                    = var.autoscaling.max_capacity
  target_invocations_per_instance = var.autoscaling.target_invocations_per_instance
  scale_in_cooldown               = var.autoscaling.scale_in_cooldown
  scale_out_cooldown              = var.autoscaling.scale_out_cooldown
}

module "lambda" {
  source = "./modules/lambda"

  function_name          = local.function_name
  role_arn               = module.iam.lambda_role_arn
  role_name              = module.iam.lambda_role_name
  package_path           = local.lambda_package_path
  endpoint_name          = module.endpoint.endpoint_name
  runtime                = var.function.runtime
  architecture           = var.function.architecture
  timeout                = var.function.timeout
  memory_size            = var.function.memory_size
  reserved_concurrency   = var.function.reserved_concurrency
  log_level              = var.function.log_level
  log_group_name         = local.lambda_log_group_name
  log_retention_days     = var.function.log_retention_days
  kms_key_arn            = var.kms_key_arn
  tracing_enabled        = var.function.tracing
  dead_letter_target_arn = var.function.dead_letter_target_arn
  create_function_url    = var.function.function_url
}

module "ec2_training_host" {
  source = "./modules/ec2_training_host"
  count  = var.enable_ec2_training_host ? 1 : 0

  name_prefix           = var.name_prefix
  instance_type         = var.ec2_training_host.instance_type
  root_volume_size_gb   = var.ec2_training_host.root_volume_size_gb
  ami_id                = var.ec2_training_host.ami_id
  subnet_id             = var.ec2_training_host.subnet_id
  key_name              = var.ec2_training_host.key_name
  instance_profile_name = module.iam.ec2_instance_profile_name
  kms_key_arn           = var.kms_key_arn
}

# Off unless github.repository is set. Someone applies it once with their own credentials (docs/pull-request-review.md);
# from then on the workflows plan with its plan role and apply with its apply role.
module "github_oidc" {
  source = "./modules/github_oidc"
  count  = var.github.repository != "" ? 1 : 0

  name_prefix       = var.name_prefix
  repository        = var.github.repository
  apply_branch      = var.github.apply_branch
  apply_environment = var.github.apply_environment
  oidc_provider_arn = var.github.oidc_provider_arn
  bucket_arn        = module.storage.bucket_arn
  kms_key_arn       = var.kms_key_arn

  state = {
    bucket     = var.github.state_bucket
    key        = var.github.state_key
    lock_table = var.github.state_lock_table != "" ? var.github.state_lock_table : null
    region     = var.github.state_region != "" ? var.github.state_region : null
  }
}
