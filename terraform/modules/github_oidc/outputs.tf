output "plan_role_arn" {
  description = "ARN of the role pull requests assume to run `invoke lint` and `invoke plan` (repository variable AWS_PLAN_ROLE_ARN)."
  value       = aws_iam_role.plan.arn

  # The workflow that uses the role waits until its permissions are attached, not just until the role exists.
  depends_on = [aws_iam_role_policy.plan]
}

output "apply_role_arn" {
  description = "ARN of the role the apply branch assumes to apply the reviewed plan (repository variable AWS_APPLY_ROLE_ARN)."
  value       = aws_iam_role.apply.arn

  # The workflow that uses the role waits until its permissions are attached, not just until the role exists.
  depends_on = [aws_iam_role_policy.apply, aws_iam_role_policy.apply_read]
}

output "oidc_provider_arn" {
  description = "ARN of GitHub's OIDC provider in the account (created here or the existing one)."
  value       = local.provider_arn
}
