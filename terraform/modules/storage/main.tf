data "aws_partition" "current" {}

locals {
  # Both known at plan time (the name is an input), so the plan shows the real bucket in every policy that names it.
  bucket_name = var.name
  bucket_arn  = "arn:${data.aws_partition.current.partition}:s3:::${var.name}"
  # Model artifacts live under these prefixes; old versions of them are what the lifecycle rules clean up.
  artifact_prefixes = toset([var.prefixes.models, var.prefixes.output])
}

resource "aws_s3_bucket" "this" {
  count = var.create ? 1 : 0

  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost for a data set and models that can be re-downloaded and retrained; enable it outside this module where a second region is required.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: training jobs and deployments are started by invoke tasks, not by uploads.
  #checkov:skip=CKV_AWS_18:Access logging is optional (var.access_log_bucket): it needs a separate log bucket that this module does not own.
  bucket        = var.name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  count = var.create ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  count = var.create ? 1 : 0

  bucket                  = aws_s3_bucket.this[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  count = var.create ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  count = var.create ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # S3 Bucket Keys cut KMS requests (and their cost) by orders of magnitude for many small objects (images).
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  count = var.create ? 1 : 0

  bucket = aws_s3_bucket.this[0].id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  dynamic "rule" {
    for_each = local.artifact_prefixes

    content {
      id     = "expire-old-model-artifacts-${trimsuffix(rule.value, "/")}"
      status = "Enabled"

      filter {
        prefix = rule.value
      }

      noncurrent_version_expiration {
        noncurrent_days           = var.noncurrent_version_expiration_days
        newer_noncurrent_versions = var.noncurrent_versions_to_keep > 0 ? var.noncurrent_versions_to_keep : null
      }
    }
  }

  rule {
    id     = "expire-checkpoints"
    status = "Enabled"

    filter {
      prefix = var.prefixes.checkpoints
    }

    expiration {
      days = var.checkpoint_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # Versioning must be on before rules about noncurrent versions mean anything.
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "tls_only" {
  count = var.create ? 1 : 0

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this[0].arn,
      "${aws_s3_bucket.this[0].arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  count = var.create ? 1 : 0

  bucket = aws_s3_bucket.this[0].id
  policy = data.aws_iam_policy_document.tls_only[0].json

  # S3 rejects a bucket policy while Block Public Access is still being applied.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_logging" "this" {
  count = var.create && var.access_log_bucket != null ? 1 : 0

  bucket        = aws_s3_bucket.this[0].id
  target_bucket = var.access_log_bucket
  target_prefix = "${var.access_log_prefix}${var.name}/"
}

# The EC2 training host's command output. It lives here, with the bucket, and not in the host's module: every
# `invoke ec2-train` destroys the host at the end, and the logs must outlive it.
resource "aws_cloudwatch_log_group" "ec2_training" {
  #checkov:skip=CKV_AWS_158:A customer managed key is a variable (kms_key_arn); without one CloudWatch Logs encrypts the group with its own keys. The group holds training logs, no secrets.
  name              = var.ec2_log_group_name
  retention_in_days = var.ec2_log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}
