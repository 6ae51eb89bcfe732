output "instance_id" {
  description = "ID of the training host (what ssm send-command targets)."
  value       = aws_instance.this.id
}

output "instance_private_ip" {
  description = "Private IP address of the training host."
  value       = aws_instance.this.private_ip
}

output "ami_id" {
  description = "AMI the host booted from."
  value       = local.ami_id
}

output "security_group_id" {
  description = "ID of the host's security group (no ingress, HTTPS egress)."
  value       = aws_security_group.this.id
}
