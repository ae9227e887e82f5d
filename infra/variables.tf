variable "name" {
  description = "Name prefix for every resource (lowercase letters, digits and hyphens)."
  type        = string
  default     = "relay"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or hyphens, starting with a letter or digit."
  }
}

variable "bucket_name" {
  description = "Name of the bucket for raw objects, markers and reports. Defaults to \"<name>-<account id>-<region>\"."
  type        = string
  default     = null
}

variable "raw_prefix" {
  description = "Key prefix the edge agents write raw objects under; these and the agents' manifests (ledger/) notify the processor."
  type        = string
  default     = "raw/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.raw_prefix))
    error_message = "raw_prefix must be one or more path segments ending with \"/\", such as \"raw/\"."
  }
}

variable "state_prefix" {
  description = "Key prefix of done markers, leases, reject reports and quarantine records. Must not overlap raw_prefix, or the processor would trigger itself."
  type        = string
  default     = "state/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.state_prefix))
    error_message = "state_prefix must be one or more path segments ending with \"/\", such as \"state/\"."
  }
}

variable "large_records" {
  description = "A projected record too large for any message: \"offload\" stores it under payload_prefix and sends an SQS Extended Client pointer (a claim check); \"reject\" puts it in the object's reject report."
  type        = string
  default     = "offload"

  validation {
    condition     = contains(["offload", "reject"], var.large_records)
    error_message = "large_records must be offload or reject."
  }
}

variable "max_record_bytes" {
  description = "The largest record read, in bytes (RELAY_MAX_RECORD_BYTES). Records over 1 MiB stream through /tmp, never held whole; larger ones than this are rejected with the limit."
  type        = number
  default     = 268435456

  validation {
    condition     = var.max_record_bytes >= 1048576
    error_message = "max_record_bytes must be at least 1048576 (the 1 MiB window every record up to is read in memory)."
  }
}

variable "lambda_ephemeral_storage_mb" {
  description = "The processor's /tmp, in MiB: records over 1 MiB spool their wanted values there, at most two records at a time, so it must hold twice max_record_bytes."
  type        = number
  default     = 512

  validation {
    condition     = var.lambda_ephemeral_storage_mb >= 512 && var.lambda_ephemeral_storage_mb <= 10240
    error_message = "lambda_ephemeral_storage_mb must be between 512 and 10240."
  }
}

variable "payload_prefix" {
  description = "Key prefix of offloaded records (claim-check payloads), in the same bucket. Must not overlap raw_prefix or state_prefix."
  type        = string
  default     = "payloads/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.payload_prefix))
    error_message = "payload_prefix must be one or more path segments ending with \"/\", such as \"payloads/\"."
  }
}

variable "payload_expiration_days" {
  description = "Days an offloaded record is kept for its consumers. Consumers using the Extended Client may also delete each payload after reading it (consumer_may_delete_payloads)."
  type        = number
  default     = 14

  validation {
    condition     = var.payload_expiration_days >= 1
    error_message = "payload_expiration_days must be at least 1."
  }
}

variable "consumer_may_delete_payloads" {
  description = "Whether the consumer policy (output consumer_policy_json) grants s3:DeleteObject on payloads, as the Extended Client's delete_message does by default."
  type        = bool
  default     = true
}

variable "lambda_zip_path" {
  description = "Path of the Lambda zip built by scripts/build-lambda.sh (a `bootstrap` binary for provided.al2023)."
  type        = string
}

variable "lambda_architecture" {
  description = "Lambda architecture, matching the zip: x86_64 (buildable on the project's machines) or arm64 (cheaper; build elsewhere)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture must be x86_64 or arm64."
  }
}

variable "otel_collector_layer_arn" {
  description = "ARN of an OpenTelemetry collector layer (AWS Distro for OpenTelemetry's collector layer for the function's architecture and region, aws-otel-collector-*): the processor then sends each file's spans (claim, download, pipeline, each SendMessageBatch) to it over OTLP on localhost:4318, and its default configuration exports them to X-Ray. Empty: no spans are exported; the messages carry the trace either way."
  type        = string
  default     = ""

  validation {
    condition     = var.otel_collector_layer_arn == "" || can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:layer:[A-Za-z0-9_-]+:[0-9]+$", var.otel_collector_layer_arn))
    error_message = "otel_collector_layer_arn must be a Lambda layer version ARN (arn:aws:lambda:<region>:<account>:layer:<name>:<version>) or empty."
  }
}

variable "lambda_memory_mb" {
  description = "Lambda memory in MB; CPU scales with it. The processor streams, so memory is for speed, not size."
  type        = number
  default     = 1024

  validation {
    condition     = var.lambda_memory_mb >= 128 && var.lambda_memory_mb <= 10240
    error_message = "lambda_memory_mb must be between 128 and 10240."
  }
}

variable "lambda_timeout_secs" {
  description = "Lambda timeout. A longer object is finished across invocations (each resumes where the last stopped), so this bounds one invocation, not an object. With a FIFO output queue it must leave notification_visibility_timeout_secs within FIFO's window (see infra/README.md)."
  type        = number
  default     = 120

  validation {
    condition     = var.lambda_timeout_secs >= 10 && var.lambda_timeout_secs <= 900
    error_message = "lambda_timeout_secs must be between 10 and 900."
  }
}

variable "notification_visibility_timeout_secs" {
  description = "Visibility timeout of the notification queue: how long after a crashed invocation received a notification it is delivered again. At least lambda_timeout_secs (AWS requires it); at most 240 with a FIFO output queue, so that a batch resent after a crash still falls in SQS FIFO's 5-minute deduplication window. Handled failures come back sooner (the processor shortens their visibility)."
  type        = number
  default     = 150

  validation {
    condition     = var.notification_visibility_timeout_secs >= 10 && var.notification_visibility_timeout_secs <= 43200
    error_message = "notification_visibility_timeout_secs must be between 10 and 43200."
  }
}

variable "lease_ttl_secs" {
  description = "RELAY_LEASE_TTL_SECS: how long a processor's claim on an object lasts after its last write (judged by S3's clock). A crashed processor's object is taken over this long after its last progress record. At most 240 with a FIFO output queue, for the same reason as the visibility timeout."
  type        = number
  default     = 60

  validation {
    condition     = var.lease_ttl_secs >= 15 && var.lease_ttl_secs <= 3600
    error_message = "lease_ttl_secs must be between 15 and 3600."
  }
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrency for the processor (-1 for none). Caps what it can take from the account and what it sends to SQS at once."
  type        = number
  default     = 20
}

variable "fields" {
  description = "RELAY_FIELDS: the fields to keep, with optional types, required marks and hmac()/redact(), e.g. \"id:string!,ts=timestamp:int!,user_id=user.id,uid=hmac(user.email)\" (docs/input.md#rules)."
  type        = string

  validation {
    condition     = length(trimspace(var.fields)) > 0
    error_message = "fields must list at least one field."
  }
}

variable "hmac_key_parameter" {
  description = "Create the SSM SecureString parameter /<name>/hmac-key for hmac() fields, and let the processor read it (ssm:GetParameter on it alone). Terraform writes a placeholder the processor refuses, write-only so the key never enters the state: put the key with `aws ssm put-parameter --overwrite`."
  type        = bool
  default     = false
}

variable "hmac_previous_key_parameter" {
  description = "Also create /<name>/hmac-key-previous, the key being retired during a rotation (RELAY_HMAC_PREVIOUS_KEY_PARAMETER, for hmac_previous() fields), in the same way. The processor reads it only while the field list uses hmac_previous()."
  type        = bool
  default     = false
}

variable "hmac_key_kms_key_arn" {
  description = "A customer managed KMS key to encrypt the HMAC key parameter with (the processor is granted kms:Decrypt on it through SSM); null for the account's aws/ssm key."
  type        = string
  default     = null
}

variable "body_format" {
  description = "How records are joined in a message: ndjson or array."
  type        = string
  default     = "ndjson"

  validation {
    condition     = contains(["ndjson", "array"], var.body_format)
    error_message = "body_format must be ndjson or array."
  }
}

variable "missing_fields" {
  description = "What to write for a field a record lacks: omit or null."
  type        = string
  default     = "omit"

  validation {
    condition     = contains(["omit", "null"], var.missing_fields)
    error_message = "missing_fields must be omit or null."
  }
}

variable "records_pointer" {
  description = "JSON pointer to the records inside each top-level value, for wrapped files (e.g. /data/records); null for plain records."
  type        = string
  default     = null
}

variable "output_fifo" {
  description = "Make the output queue FIFO: no duplicates within SQS's 5-minute window, at FIFO throughput limits."
  type        = bool
  default     = false
}

variable "output_max_message_bytes" {
  description = "MaximumMessageSize of the output queue. SQS allows up to 1048576 (1 MiB), but the hashicorp/aws provider before 6.x refuses more than 262144: with it, keep 262144, or raise the queue's limit outside Terraform. The processor packs for the queue's real limit, read at start-up."
  type        = number
  default     = 262144

  validation {
    condition     = var.output_max_message_bytes >= 1024 && var.output_max_message_bytes <= 1048576
    error_message = "output_max_message_bytes must be between 1024 and 1048576."
  }
}

variable "fifo_group_id" {
  description = "MessageGroupId of every message when the output queue is FIFO."
  type        = string
  default     = "relay"
}

variable "notification_batch_size" {
  description = "Notifications per Lambda invocation. A live notification names one object; a replayed one up to replay's --objects-per-event (10)."
  type        = number
  default     = 5

  validation {
    condition     = var.notification_batch_size >= 1 && var.notification_batch_size <= 10
    error_message = "notification_batch_size must be between 1 and 10."
  }
}

variable "notification_max_concurrency" {
  description = "Most concurrent invocations the event source mapping starts (2-1000)."
  type        = number
  default     = 10

  validation {
    condition     = var.notification_max_concurrency >= 2 && var.notification_max_concurrency <= 1000
    error_message = "notification_max_concurrency must be between 2 and 1000."
  }
}

variable "max_receive_count" {
  description = "Deliveries of a notification (or an output message) before it moves to its dead-letter queue."
  type        = number
  default     = 5
}

variable "raw_expiration_days" {
  description = "Days to keep raw objects. Replays can only re-send what is still here."
  type        = number
  default     = 30
}

variable "marker_expiration_days" {
  description = "Days to keep done markers; null keeps them for as long as the raw objects (recommended). A raw object whose marker expired is processed again by a replay or a redelivered event."
  type        = number
  default     = null
}

variable "report_expiration_days" {
  description = "Days to keep reject reports and quarantine records."
  type        = number
  default     = 90
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention for the processor."
  type        = number
  default     = 30
}

variable "oldest_notification_alarm_secs" {
  description = "Alarm when the oldest waiting notification is older than this."
  type        = number
  default     = 900
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified when an alarm fires or clears."
  type        = list(string)
  default     = []
}

variable "canary_queue" {
  description = "Create a queue for the agents' canaries (heartbeat objects, RELAY_CANARY_SECS on each agent) and send them there (RELAY_CANARY_QUEUE_URL). Without it canaries are still processed and measured, and nothing is sent."
  type        = bool
  default     = true
}

variable "canary_missing_minutes" {
  description = "Per edge source: alarm when no canary has been processed for this many minutes (missing data breaches). Keep it a few times the agents' RELAY_CANARY_SECS (60 by default)."
  type        = number
  default     = 5

  validation {
    condition     = var.canary_missing_minutes >= 2 && var.canary_missing_minutes <= 1440
    error_message = "canary_missing_minutes must be between 2 and 1440."
  }
}

variable "canary_lag_alarm_secs" {
  description = "Per edge source: alarm when a canary's end-to-end lag (creation on the host to SQS's acknowledgement) is above this many seconds."
  type        = number
  default     = 300
}

variable "file_latency_alarm_secs" {
  description = "Per edge source: alarm when the 99th percentile of files' latency (last write on the host to SQS's acknowledgement of the file's last message, relay_file_latency_seconds) is above this many seconds for 15 minutes."
  type        = number
  default     = 120
}

variable "edge_sources" {
  description = "Edge sources by source id (each agent's RELAY_SOURCE_ID). Each gets a policy that lets it write and verify objects under raw/<source id>/ only, attached to role_name if given, and to a new IAM user if create_user is set. quiet_minutes: alarm when no data file from the source has reached SQS for this long (its canary may still arrive: a stalled watch, a container that stopped writing); 0 for none, else 5 to 1440, in steps of 5."
  type = map(object({
    role_name     = optional(string)
    create_user   = optional(bool, false)
    quiet_minutes = optional(number, 60)
  }))
  default = {}
  validation {
    condition     = alltrue([for id, _ in var.edge_sources : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", id))])
    error_message = "Source ids are 1-128 letters, digits, `_`, `.` or `-`, starting with a letter or digit (one key segment)."
  }
  validation {
    condition     = alltrue([for _, s in var.edge_sources : s.quiet_minutes == 0 || (s.quiet_minutes >= 5 && s.quiet_minutes <= 1440 && s.quiet_minutes % 5 == 0)])
    error_message = "quiet_minutes is 0 (no alarm) or 5 to 1440, in steps of 5."
  }
}

variable "create_edge_user" {
  description = "Create one IAM user for all edge agents with the any-source policy attached. Prefer edge_sources, which confines each agent to its own prefix."
  type        = bool
  default     = false
}

variable "edge_role_name" {
  description = "Name of an existing IAM role to attach the any-source edge policy to; null for none. Prefer edge_sources."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "processor_version" {
  description = "The published function version the alias `live` (and so the event source mapping) uses; null for the version this apply publishes. Set to an earlier version (output processor_version of that apply) to roll back without rebuilding."
  type        = string
  default     = null
  validation {
    condition     = var.processor_version == null || can(regex("^[0-9]+$", var.processor_version))
    error_message = "processor_version is a published version number, such as \"7\"."
  }
}
