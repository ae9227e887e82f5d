# ------------------------------------------------------------- alarms

locals {
  alarms = merge({
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
    }, {
    # Per edge source, from the processor's canary metric (EMF, dimension
    # `source`).
    for id, _ in var.edge_sources : "canary-lag-${id}" => {
      description = "Canaries from ${id} take over ${var.canary_lag_alarm_secs} s to reach SQS: a backlog on the host (relay_agent_backlog_files) or in the notification queue."
      namespace   = "relay"
      metric      = "relay_canary_lag_seconds"
      dimensions  = { source = id }
      statistic   = "Maximum"
      threshold   = var.canary_lag_alarm_secs
    }
  })
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

# Per edge source: a canary that stops arriving says the pipeline is broken
# for that host even when its queue is merely quiet. (A missing sample must
# breach here, unlike the alarms above, so this one stands apart.)
resource "aws_cloudwatch_metric_alarm" "canary_missing" {
  for_each            = var.edge_sources
  alarm_name          = "${var.name}-canary-missing-${each.key}"
  alarm_description   = "No canary from ${each.key} for ${var.canary_missing_minutes} minutes: its agent is down or cannot reach S3, or the processor is failing. Check the agent's /healthz, then the processor's errors."
  namespace           = "relay"
  metric_name         = "relay_canary_lag_seconds"
  dimensions          = { source = each.key }
  statistic           = "SampleCount"
  period              = 60
  evaluation_periods  = var.canary_missing_minutes
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
