# ------------------------------------------------- S3 notifications -> Lambda

resource "aws_sqs_queue" "notifications_dlq" {
  name                      = "${var.name}-notifications-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "notifications" {
  name = "${var.name}-notifications"
  # A crashed invocation's notification is delivered again this long after
  # it was received. Not 6x the Lambda timeout, AWS's general advice for
  # batches that may wait on throttling: with FIFO output, a batch resent
  # after 30 minutes would miss SQS's 5-minute deduplication window.
  visibility_timeout_seconds = var.notification_visibility_timeout_secs
  message_retention_seconds  = 1209600
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.notifications_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.notification_visibility_timeout_secs >= var.lambda_timeout_secs
      error_message = "notification_visibility_timeout_secs must be at least lambda_timeout_secs: SQS would hand a notification to a second invocation while the first still runs (and AWS refuses the event source mapping)."
    }
    precondition {
      condition     = !var.output_fifo || (var.notification_visibility_timeout_secs <= 240 && var.lease_ttl_secs <= 240)
      error_message = "With output_fifo, notification_visibility_timeout_secs and lease_ttl_secs must be at most 240: a crashed attempt is retried after the larger of the two, and its resent batch must land inside SQS FIFO's 5-minute deduplication window."
    }
  }
}

data "aws_iam_policy_document" "notifications" {
  statement {
    sid       = "S3Notifications"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.notifications.arn]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "notifications" {
  queue_url = aws_sqs_queue.notifications.id
  policy    = data.aws_iam_policy_document.notifications.json
}

resource "aws_s3_bucket_notification" "raw" {
  bucket = aws_s3_bucket.this.id
  queue {
    id            = "relay-raw"
    queue_arn     = aws_sqs_queue.notifications.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.raw_prefix
  }
  # The agents' completeness manifests: each one's event reconciles them.
  queue {
    id            = "relay-ledger"
    queue_arn     = aws_sqs_queue.notifications.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = local.ledger_prefix
  }
  depends_on = [aws_sqs_queue_policy.notifications]
}

# ------------------------------------------------------------ the output

resource "aws_sqs_queue" "output_dlq" {
  name                      = local.output_dlq
  fifo_queue                = var.output_fifo
  message_retention_seconds = 1209600
  max_message_size          = var.output_max_message_bytes
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "output" {
  name                        = local.output_name
  fifo_queue                  = var.output_fifo
  content_based_deduplication = false
  max_message_size            = var.output_max_message_bytes
  message_retention_seconds   = 1209600
  sqs_managed_sse_enabled     = true
  # For consumers: a message they fail on repeatedly moves aside.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.output_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = local.tags
}

# The agents' canaries: one small message per heartbeat, read by nobody but
# an operator checking it by hand. They expire within a day.
resource "aws_sqs_queue" "canary" {
  count                     = var.canary_queue ? 1 : 0
  name                      = "${var.name}-canary"
  message_retention_seconds = 86400
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}
