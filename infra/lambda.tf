# ------------------------------------------------------------ the processor

resource "aws_cloudwatch_log_group" "processor" {
  #checkov:skip=CKV_AWS_158:Logs carry counts and keys, not record contents; a KMS key is left to the operator.
  #checkov:skip=CKV_AWS_338:Retention is a variable (log_retention_days); a year of debug logs is not a sensible default.
  name              = "/aws/lambda/${var.name}-processor"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "processor" {
  #checkov:skip=CKV_AWS_117:The function reaches only S3 and SQS over their public endpoints; a VPC adds NAT cost and nothing to protect.
  #checkov:skip=CKV_AWS_116:Failures are retried and dead-lettered by the notification queue (its redrive policy), not by a function DLQ.
  #checkov:skip=CKV_AWS_173:The environment holds only settings, no secrets.
  #checkov:skip=CKV_AWS_272:Code signing needs a signing profile the operator owns; the zip is built reproducibly by scripts/build-lambda.sh.
  function_name                  = "${var.name}-processor"
  description                    = "relay: raw objects in S3 to packed SQS messages"
  role                           = aws_iam_role.processor.arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_zip_path
  source_code_hash               = filebase64sha256(var.lambda_zip_path)
  memory_size                    = var.lambda_memory_mb
  timeout                        = var.lambda_timeout_secs
  reserved_concurrent_executions = var.lambda_reserved_concurrency
  # Each apply that changes code or settings publishes a version; the event
  # source mapping invokes the alias `live`, so a rollback is one variable.
  publish = true

  tracing_config {
    mode = "Active"
  }

  # An OpenTelemetry collector as a Lambda extension (the ADOT collector
  # layer): the processor sends its spans to it on localhost, and its
  # default configuration exports them to X-Ray.
  layers = var.otel_collector_layer_arn == "" ? [] : [var.otel_collector_layer_arn]

  ephemeral_storage {
    size = var.lambda_ephemeral_storage_mb
  }

  environment {
    variables = merge(
      {
        RELAY_FIELDS           = var.fields
        RELAY_OUTPUT_QUEUE_URL = aws_sqs_queue.output.id
        RELAY_RAW_PREFIX       = var.raw_prefix
        RELAY_STATE_PREFIX     = var.state_prefix
        RELAY_BODY_FORMAT      = var.body_format
        RELAY_MISSING          = var.missing_fields
        RELAY_FIFO_GROUP_ID    = var.fifo_group_id
        RELAY_LEASE_TTL_SECS   = tostring(var.lease_ttl_secs)
        RELAY_LARGE_RECORDS    = var.large_records
        RELAY_PAYLOAD_PREFIX   = var.payload_prefix
        RELAY_MAX_RECORD_BYTES = tostring(var.max_record_bytes)
        # A failed notification is made visible again early, through its
        # receipt handle, instead of after the whole visibility timeout.
        RELAY_NOTIFICATION_QUEUE_URL = aws_sqs_queue.notifications.id
        RELAY_LOG_FORMAT             = "json"
      },
      var.records_pointer == null ? {} : { RELAY_RECORDS_POINTER = var.records_pointer },
      var.canary_queue ? { RELAY_CANARY_QUEUE_URL = aws_sqs_queue.canary[0].id } : {},
      var.otel_collector_layer_arn == "" ? {} : {
        OTEL_EXPORTER_OTLP_ENDPOINT = "http://localhost:4318"
        OTEL_SERVICE_NAME           = "${var.name}-processor"
      },
      { for role, env in local.hmac_key_env : env => aws_ssm_parameter.hmac_key[role].name },
    )
  }

  lifecycle {
    precondition {
      condition     = var.lambda_ephemeral_storage_mb * 1048576 >= 2 * var.max_record_bytes
      error_message = "lambda_ephemeral_storage_mb must hold twice max_record_bytes: records over 1 MiB spool their wanted values in /tmp, one being stored while the next is read."
    }
  }

  depends_on = [aws_cloudwatch_log_group.processor, aws_iam_role_policy.processor]
  tags       = local.tags
}

# The keys of hmac() and hmac_previous() fields. Terraform writes only a
# placeholder, which the processor refuses, as a write-only value: the key
# the operator puts in its place is never read into Terraform's state.
locals {
  hmac_key_names = merge(
    var.hmac_key_parameter ? { current = "hmac-key" } : {},
    var.hmac_previous_key_parameter ? { previous = "hmac-key-previous" } : {},
  )
  hmac_key_env = {
    for role, _ in local.hmac_key_names : role => role == "current" ? "RELAY_HMAC_KEY_PARAMETER" : "RELAY_HMAC_PREVIOUS_KEY_PARAMETER"
  }
}

resource "aws_ssm_parameter" "hmac_key" {
  for_each         = local.hmac_key_names
  name             = "/${var.name}/${each.value}"
  description      = "relay: the key of ${each.key == "current" ? "hmac()" : "hmac_previous()"} fields (${local.hmac_key_env[each.key]})"
  type             = "SecureString"
  key_id           = var.hmac_key_kms_key_arn
  value_wo         = "unset: put the key with `aws ssm put-parameter --overwrite`"
  value_wo_version = 1
  tags             = local.tags
}

# What the event source mapping invokes: the version this apply published,
# or `processor_version` to roll back to an earlier one without a rebuild.
resource "aws_lambda_alias" "live" {
  name             = "live"
  description      = "relay: the version notifications are processed by"
  function_name    = aws_lambda_function.processor.function_name
  function_version = coalesce(var.processor_version, aws_lambda_function.processor.version)
}

resource "aws_lambda_event_source_mapping" "notifications" {
  event_source_arn        = aws_sqs_queue.notifications.arn
  function_name           = aws_lambda_alias.live.arn
  batch_size              = var.notification_batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.notification_max_concurrency
  }
}
