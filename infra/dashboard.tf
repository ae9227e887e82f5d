# ---------------------------------------------------------- the dashboard
#
# What an operator watches, top to bottom: traffic and errors through the
# processor, the Lambda's health, the queues' backlog and dead letters, and
# each edge host's canary lag (the black-box probe).

locals {
  fn         = aws_lambda_function.processor.function_name
  per_minute = { stat = "Sum", period = 60 }
  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title  = "Records per minute: in, out, rejected, offloaded"
        region = data.aws_region.current.name
        view   = "timeSeries"
        stat   = "Sum"
        period = 60
        metrics = [
          ["relay", "relay_processor_records_in_total"],
          ["relay", "relay_processor_records_out_total"],
          ["relay", "relay_processor_rejected_records_total"],
          ["relay", "relay_processor_records_offloaded_total"],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title  = "Objects per minute, by outcome"
        region = data.aws_region.current.name
        view   = "timeSeries"
        stat   = "Sum"
        period = 60
        metrics = [
          for o in ["sent", "duplicate", "quarantined", "missing", "failed"] :
          ["relay", "relay_processor_objects_total", "outcome", o]
        ]
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title  = "Processor: duration (p99, max), errors, throttles, concurrency"
        region = data.aws_region.current.name
        view   = "timeSeries"
        period = 60
        metrics = [
          ["AWS/Lambda", "Duration", "FunctionName", local.fn, { stat = "p99" }],
          ["AWS/Lambda", "Duration", "FunctionName", local.fn, { stat = "Maximum" }],
          ["AWS/Lambda", "Errors", "FunctionName", local.fn, merge(local.per_minute, { yAxis = "right" })],
          ["AWS/Lambda", "Throttles", "FunctionName", local.fn, merge(local.per_minute, { yAxis = "right" })],
          ["AWS/Lambda", "ConcurrentExecutions", "FunctionName", local.fn, { stat = "Maximum", yAxis = "right" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title  = "Queues: oldest notification (s), dead letters, output depth"
        region = data.aws_region.current.name
        view   = "timeSeries"
        stat   = "Maximum"
        period = 60
        metrics = [
          ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", aws_sqs_queue.notifications.name],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.notifications_dlq.name, { yAxis = "right" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.output_dlq.name, { yAxis = "right" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.output.name, { yAxis = "right" }],
        ]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 24, height = 6
      properties = {
        title  = "Canary lag per edge source (s): creation on the host to SQS"
        region = data.aws_region.current.name
        view   = "timeSeries"
        period = 60
        metrics = [
          [{ expression = "SEARCH('{relay,source} MetricName=\"relay_canary_lag_seconds\"', 'Maximum', 60)", id = "lag" }],
        ]
      }
    },
    {
      type = "metric", x = 0, y = 18, width = 24, height = 6
      properties = {
        title  = "File latency per edge source, p99 (s): last write on the host to SQS"
        region = data.aws_region.current.name
        view   = "timeSeries"
        period = 300
        metrics = [
          [{ expression = "SEARCH('{relay,source} MetricName=\"relay_file_latency_seconds\"', 'p99', 300)", id = "latency" }],
        ]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "relay" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
