data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  bucket_name = coalesce(var.bucket_name, "${var.name}-${data.aws_caller_identity.current.account_id}-${data.aws_region.current.name}")
  bucket_arn  = "arn:${data.aws_partition.current.partition}:s3:::${local.bucket_name}"
  output_name = var.output_fifo ? "${var.name}-output.fifo" : "${var.name}-output"
  output_dlq  = var.output_fifo ? "${var.name}-output-dlq.fifo" : "${var.name}-output-dlq"
  tags        = merge({ "app" = "relay", "relay:name" = var.name }, var.tags)
}

# ---------------------------------------------------------------- the bucket

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a business decision; raw objects are re-creatable from the edge only while kept there.
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket the operator owns; enable it there if required.
  #checkov:skip=CKV2_AWS_62:Event notifications are configured in aws_s3_bucket_notification.raw.
  #checkov:skip=CKV_AWS_145:SSE-S3 is the default; KMS adds a per-request cost and key policy the edge agents would need.
  bucket = local.bucket_name
  tags   = local.tags
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.bucket_arn,
      "${local.bucket_arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  # Raw objects are written once: creating one (PutObject, or completing a
  # multipart upload) under the raw prefix requires If-None-Match, so no
  # identity, however broad its IAM policy, can overwrite what an edge
  # agent stored. Starting a multipart upload and uploading its parts take
  # no conditional headers; s3:ObjectCreationOperation is false for them.
  statement {
    sid       = "RawObjectsAreWrittenOnce"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/${var.raw_prefix}*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }
    condition {
      test     = "Bool"
      variable = "s3:ObjectCreationOperation"
      values   = ["true"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket     = aws_s3_bucket.this.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

locals {
  # Where the edge agents' completeness manifests are: fixed by the code
  # (relay_shared::manifest::PREFIX; a test holds the two to each other).
  ledger_prefix = "ledger/"

  # Every folder the processor writes under the state prefix
  # (cloud-processor/src/object/marker.rs; a test holds the two to each
  # other), with how many days its current objects live. Disjoint prefixes
  # on purpose: where rules overlap, S3 applies the shortest expiration,
  # which could expire markers before their raw objects. Markers are kept
  # as long as the raw objects unless told otherwise: a raw object without
  # its marker is processed again by a replay. Leases have no lifetime:
  # each is deleted when its object is done, and `audit` names the ones a
  # processor that died left behind.
  state_folders = {
    done       = coalesce(var.marker_expiration_days, var.raw_expiration_days)
    leases     = null
    rejects    = var.report_expiration_days
    quarantine = var.report_expiration_days
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Anywhere in the bucket: an upload an agent started and never completed
  # (it retries a failed multipart upload from the start).
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "raw"
    status = "Enabled"
    filter {
      prefix = var.raw_prefix
    }
    expiration {
      days = var.raw_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "payloads"
    status = "Enabled"
    filter {
      prefix = var.payload_prefix
    }
    expiration {
      days = var.payload_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # The agents' manifests: read when the next ones arrive and by `audit`;
  # kept as long as reports.
  rule {
    id     = "ledger"
    status = "Enabled"
    filter {
      prefix = local.ledger_prefix
    }
    expiration {
      days = var.report_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # One rule per folder the processor writes under the state prefix, each
  # with its current objects' lifetime (`state_folders`).
  dynamic "rule" {
    for_each = local.state_folders
    content {
      id     = "state-${rule.key}"
      status = "Enabled"
      filter {
        prefix = "${var.state_prefix}${rule.key}/"
      }
      # A lifetime, after which delete markers old enough go too; or, for
      # leases (deleted when their object is done), every delete marker
      # once it is the only version left.
      expiration {
        days                         = rule.value
        expired_object_delete_marker = rule.value == null ? true : null
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 1
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]

  lifecycle {
    precondition {
      condition = alltrue([
        for other in [var.raw_prefix, var.state_prefix, local.ledger_prefix] :
        !startswith(var.payload_prefix, other) && !startswith(other, var.payload_prefix)
      ])
      error_message = "payload_prefix must not overlap raw_prefix or state_prefix: offloaded records would be taken for raw objects (and trigger the processor) or for state, and their lifecycle rules would overlap."
    }
  }
}
