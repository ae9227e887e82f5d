# ------------------------------------------------------------- alarms

locals {
  alarms = {
    notifications-dlq = {
      description = "S3 notifications the processor failed on repeatedly: see their objects' logs, then redrive."
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.notifications_dlq.name }
      statistic   = "Maximum"
      threshold   = 0
    }
    output-dlq = {
      description = "Output messages consumers failed on repeatedly."
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.output_dlq.name }
      statistic   = "Maximum"
      threshold   = 0
    }
    oldest-notification = {
      description = "Notifications are waiting too long: the processor is failing, throttled or too slow."
      namespace   = "AWS/SQS"
      metric      = "ApproximateAgeOfOldestMessage"
      dimensions  = { QueueName = aws_sqs_queue.notifications.name }
      statistic   = "Maximum"
      threshold   = var.oldest_notification_alarm_secs
    }
    processor-errors = {
      description = "The processor returned errors (failed objects are retried from the queue)."
      namespace   = "AWS/Lambda"
      metric      = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.processor.function_name }
      statistic   = "Sum"
      threshold   = 0
    }
    processor-throttles = {
      description = "The processor was throttled: raise reserved concurrency or lower the mapping's maximum concurrency."
      namespace   = "AWS/Lambda"
      metric      = "Throttles"
      dimensions  = { FunctionName = aws_lambda_function.processor.function_name }
      statistic   = "Sum"
      threshold   = 0
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = local.alarms
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
