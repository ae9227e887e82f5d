# ------------------------------------------------- S3 notifications -> Lambda

resource "aws_sqs_queue" "notifications_dlq" {
  name                      = "${var.name}-notifications-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "notifications" {
  name                       = "${var.name}-notifications"
  visibility_timeout_seconds = var.lambda_timeout_secs * 6
  message_retention_seconds  = 1209600
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.notifications_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = local.tags
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
