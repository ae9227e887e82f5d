output "bucket" {
  description = "Bucket for raw objects (edge agents' RELAY_BUCKET), markers and reports."
  value       = aws_s3_bucket.this.id
}

output "raw_prefix" {
  description = "Key prefix for edge agents (RELAY_RAW_PREFIX)."
  value       = var.raw_prefix
}

output "notification_queue_url" {
  description = "Queue of S3 notifications (RELAY_NOTIFICATION_QUEUE_URL for `cloud-processor poll` and `replay`)."
  value       = aws_sqs_queue.notifications.id
}

output "notification_dlq_url" {
  description = "Dead-letter queue of notifications that failed repeatedly."
  value       = aws_sqs_queue.notifications_dlq.id
}

output "output_queue_url" {
  description = "The queue consumers read packed messages from."
  value       = aws_sqs_queue.output.id
}

output "output_queue_arn" {
  description = "ARN of the output queue, for consumers' IAM policies."
  value       = aws_sqs_queue.output.arn
}

output "output_dlq_url" {
  description = "Dead-letter queue for consumers of the output queue."
  value       = aws_sqs_queue.output_dlq.id
}

output "processor_function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.processor.function_name
}

output "edge_policy_arn" {
  description = "The any-source edge policy (edge_role_name, create_edge_user), if either is used."
  value       = try(aws_iam_policy.edge["*"].arn, null)
}

output "edge_source_policy_arns" {
  description = "Per source id: the policy that confines that edge agent to raw/<source id>/."
  value       = { for id, _ in var.edge_sources : id => aws_iam_policy.edge[id].arn }
}

output "edge_source_user_names" {
  description = "Per source id with create_user: its IAM user (create its access key outside Terraform)."
  value       = { for id, u in aws_iam_user.edge_source : id => u.name }
}

output "edge_user_name" {
  description = "The edge agents' IAM user, if create_edge_user is set."
  value       = var.create_edge_user ? aws_iam_user.edge[0].name : null
}

output "payload_prefix" {
  description = "Where offloaded records (claim-check payloads) are stored, in the bucket."
  value       = var.payload_prefix
}

output "consumer_policy_json" {
  description = "An IAM policy for the output queue's consumers: receive and delete messages, and read (optionally delete) offloaded records, as the SQS Extended Client does."
  value       = data.aws_iam_policy_document.consumer.json
}

output "canary_queue_url" {
  description = "Where the agents' canaries arrive (null without canary_queue)."
  value       = var.canary_queue ? aws_sqs_queue.canary[0].id : null
}

output "dashboard_name" {
  description = "The CloudWatch dashboard of the pipeline."
  value       = aws_cloudwatch_dashboard.relay.dashboard_name
}

output "hmac_key_parameter" {
  description = "The SSM parameter to put the key of hmac() fields in (RELAY_HMAC_KEY_PARAMETER), or null without hmac_key_parameter."
  value       = try(aws_ssm_parameter.hmac_key["current"].name, null)
}

output "hmac_previous_key_parameter" {
  description = "The SSM parameter to put the key being retired in (RELAY_HMAC_PREVIOUS_KEY_PARAMETER), or null without hmac_previous_key_parameter."
  value       = try(aws_ssm_parameter.hmac_key["previous"].name, null)
}

output "processor_version" {
  description = "The function version this apply published; note it before an upgrade to roll back to it with processor_version."
  value       = aws_lambda_function.processor.version
}

output "processor_live_version" {
  description = "The version the alias `live` points at: the one processing notifications."
  value       = aws_lambda_alias.live.function_version
}
