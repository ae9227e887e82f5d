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
      periods     = 1
    }
    output-dlq = {
      description = "Output messages consumers failed on repeatedly."
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.output_dlq.name }
      statistic   = "Maximum"
      threshold   = 0
      periods     = 1
    }
    oldest-notification = {
      description = "Notifications are waiting too long: the processor is failing, throttled or too slow."
      namespace   = "AWS/SQS"
      metric      = "ApproximateAgeOfOldestMessage"
      dimensions  = { QueueName = aws_sqs_queue.notifications.name }
      statistic   = "Maximum"
      threshold   = var.oldest_notification_alarm_secs
      periods     = 1
    }
    processor-errors = {
      description = "Invocations of the processor failed as a whole (a crash, a timeout, a bad event): objects that fail one by one are reported to SQS instead and counted by ${var.name}-notifications-failed."
      namespace   = "AWS/Lambda"
      metric      = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.processor.function_name }
      statistic   = "Sum"
      threshold   = 0
      periods     = 1
    }
    # The Lambda reports failed notifications as batch item failures and
    # returns Ok, so Lambda's Errors stays at 0 while objects fail: the
    # processor's own count (EMF) sees them. Notifications, not objects: a
    # notification also fails when its unfinished object could not be
    # handed on (its object counts as paused). Sustained, not one retry.
    notifications-failed = {
      description = "Notifications keep failing in the processor (relay_processor_events_total{outcome=failed}): an object failed, or an unfinished one could not be handed on; see the function's log for the object and its error. Failed notifications are retried from the queue, and after max_receive_count deliveries land in the notifications DLQ."
      namespace   = "relay"
      metric      = "relay_processor_events_total"
      dimensions  = { outcome = "failed" }
      statistic   = "Sum"
      threshold   = 0
      periods     = 3
    }
    aws-throttled = {
      description = "AWS has throttled the processor's requests for 15 minutes (over one retry a second): nothing is lost, but work waits. relay_aws_retries_total names the service and operation; spread the load or ask for a higher limit."
      namespace   = "relay"
      metric      = "relay_aws_retries_by_cause_total"
      dimensions  = { cause = "throttled" }
      statistic   = "Sum"
      threshold   = 300
      periods     = 3
    }
    processor-throttles = {
      description = "The processor was throttled: raise reserved concurrency or lower the mapping's maximum concurrency."
      namespace   = "AWS/Lambda"
      metric      = "Throttles"
      dimensions  = { FunctionName = aws_lambda_function.processor.function_name }
      statistic   = "Sum"
      threshold   = 0
      periods     = 1
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
      periods     = 1
    }
    }, {
    # Per edge source: the data's own latency, from a file's last write on
    # the host to its last message accepted by SQS (the processor's EMF
    # histogram, dimension `source`), at its 99th percentile.
    for id, _ in var.edge_sources : "file-latency-${id}" => {
      description = "Files from ${id} take over ${var.file_latency_alarm_secs} s (99th percentile, 15 minutes) from their last write on the host to SQS: a backlog on the host (relay_agent_backlog_files), in the notification queue, or a slow processor."
      namespace   = "relay"
      metric      = "relay_file_latency_seconds"
      dimensions  = { source = id }
      statistic   = "p99"
      threshold   = var.file_latency_alarm_secs
      periods     = 3
    }
    }, {
    # Per edge source: what its completeness manifests name that is not in
    # SQS (the processor's EMF counter, dimension `source`).
    for id, _ in var.edge_sources : "ledger-${id}" => {
      description = "The completeness manifests of ${id} name files that are not in SQS: stored without a done marker after the grace period, refused or stalled on the host, or a manifest missing. The processor's log names each file, its key and the replay that fixes it; `cloud-processor audit` lists them."
      namespace   = "relay"
      metric      = "relay_processor_ledger_findings_total"
      dimensions  = { source = id }
      statistic   = "Sum"
      threshold   = 0
      periods     = 1
    }
  })
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each          = local.alarms
  alarm_name        = "${var.name}-${each.key}"
  alarm_description = each.value.description
  namespace         = each.value.namespace
  metric_name       = each.value.metric
  dimensions        = each.value.dimensions
  # Percentiles (p99) are extended statistics, from the EMF histogram's values.
  statistic           = startswith(each.value.statistic, "p") ? null : each.value.statistic
  extended_statistic  = startswith(each.value.statistic, "p") ? each.value.statistic : null
  period              = 300
  evaluation_periods  = each.value.periods
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

# Per edge source: its data, not only its canary, keeps arriving. A source
# whose canary arrives but whose files stop (a stalled watch, a container
# that stopped writing) is seen here, not by the canary alarms.
resource "aws_cloudwatch_metric_alarm" "source_quiet" {
  for_each            = { for id, s in var.edge_sources : id => s if s.quiet_minutes > 0 }
  alarm_name          = "${var.name}-source-quiet-${each.key}"
  alarm_description   = "No data file from ${each.key} has reached SQS for ${each.value.quiet_minutes} minutes. If its canary alarms are quiet, the agent is up: check the agent's backlog and watch (relay_agent_backlog_files, /healthz), then whether the container still writes files."
  namespace           = "relay"
  metric_name         = "relay_file_latency_seconds"
  dimensions          = { source = each.key }
  statistic           = "SampleCount"
  period              = 300
  evaluation_periods  = each.value.quiet_minutes / 5
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
