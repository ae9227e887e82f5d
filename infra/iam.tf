# ------------------------------------------------ the processor's role

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "processor" {
  name               = "${var.name}-processor"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "processor" {
  statement {
    sid       = "ReadRawObjects"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.this.arn}/${var.raw_prefix}*"]
  }
  statement {
    sid       = "WriteState"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.this.arn}/${var.state_prefix}*"]
  }
  statement {
    # Offloaded records: created once (If-None-Match), read back only to
    # check that a payload already there has the same bytes. Those over
    # 8 MiB are uploaded in parts; a failed upload is aborted.
    sid       = "WritePayloads"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.this.arn}/${var.payload_prefix}*"]
  }
  statement {
    # The agents' manifests, reconciled against the done markers.
    sid       = "ReadManifests"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this.arn}/${local.ledger_prefix}*"]
  }
  statement {
    # Without ListBucket a missing marker reads as 403, not 404.
    sid       = "ListState"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.state_prefix}*", "${var.raw_prefix}*", "${local.ledger_prefix}*"]
    }
  }
  statement {
    sid = "ConsumeNotifications"
    # SendMessage: an object unfinished at the invocation's deadline, or
    # busy elsewhere, has its notification handed on as a fresh one.
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility", "sqs:SendMessage"]
    resources = [aws_sqs_queue.notifications.arn]
  }
  statement {
    sid       = "SendOutput"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = concat([aws_sqs_queue.output.arn], aws_sqs_queue.canary[*].arn)
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.processor.arn}:*"]
  }
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "processor_hmac_key" {
  count = length(local.hmac_key_names) > 0 ? 1 : 0
  statement {
    sid       = "ReadHmacKeys"
    actions   = ["ssm:GetParameter"]
    resources = [for p in aws_ssm_parameter.hmac_key : p.arn]
  }
  dynamic "statement" {
    for_each = var.hmac_key_kms_key_arn == null ? [] : [var.hmac_key_kms_key_arn]
    content {
      sid       = "DecryptHmacKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "processor_hmac_key" {
  count  = length(local.hmac_key_names) > 0 ? 1 : 0
  name   = "${var.name}-processor-hmac-key"
  role   = aws_iam_role.processor.id
  policy = data.aws_iam_policy_document.processor_hmac_key[0].json
}

resource "aws_iam_role_policy" "processor" {
  name   = "${var.name}-processor"
  role   = aws_iam_role.processor.id
  policy = data.aws_iam_policy_document.processor.json
}

# ------------------------------------------------------- the edge agents
#
# An edge agent needs, under its own raw/<source id>/ prefix only:
# - s3:PutObject, for its conditional puts (and to start multipart uploads);
# - s3:AbortMultipartUpload, to clean up a failed multipart upload;
# - s3:GetObject, for HeadObject when a put finds its key taken (412): the
#   object's content hash tells whether S3 holds exactly the file's bytes
#   before the file is deleted or moved. HeadObject has no permission of
#   its own;
# and s3:PutObject under ledger/<source id>/, for its completeness manifests
# (with s3:AbortMultipartUpload, for `check`'s probe there).

locals {
  # Every source named in var.edge_sources, plus "*" for the shared policy.
  edge_policies = merge(
    { for id, _ in var.edge_sources : id => "${var.raw_prefix}${id}/*" },
    var.edge_role_name != null || var.create_edge_user ? { "*" = "${var.raw_prefix}*" } : {},
  )
  edge_manifests = merge(
    { for id, _ in var.edge_sources : id => "${local.ledger_prefix}${id}/*" },
    var.edge_role_name != null || var.create_edge_user ? { "*" = "${local.ledger_prefix}*" } : {},
  )
}

data "aws_iam_policy_document" "edge" {
  for_each = local.edge_policies
  statement {
    sid       = "PutRawObjects"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.this.arn}/${each.value}"]
  }
  statement {
    sid       = "VerifyRawObjects"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this.arn}/${each.value}"]
  }
  statement {
    sid       = "PutManifests"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.this.arn}/${local.edge_manifests[each.key]}"]
  }
}

resource "aws_iam_policy" "edge" {
  for_each    = local.edge_policies
  name        = each.key == "*" ? "${var.name}-edge-agent" : "${var.name}-edge-${each.key}"
  description = each.key == "*" ? "relay edge agents: write and verify raw objects of any source" : "relay edge agent ${each.key}: write and verify raw objects under ${each.value} only"
  policy      = data.aws_iam_policy_document.edge[each.key].json
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "edge_source" {
  for_each   = { for id, s in var.edge_sources : id => s if s.role_name != null }
  role       = each.value.role_name
  policy_arn = aws_iam_policy.edge[each.key].arn
}

resource "aws_iam_user" "edge_source" {
  #checkov:skip=CKV_AWS_273:Optional, off by default; for sites that cannot use roles. Access keys are created outside Terraform so they never enter the state.
  for_each = { for id, s in var.edge_sources : id => s if s.create_user }
  name     = "${var.name}-edge-${each.key}"
  tags     = local.tags
}

resource "aws_iam_user_policy_attachment" "edge_source" {
  #checkov:skip=CKV_AWS_40:The user exists only to carry this one managed policy.
  for_each   = aws_iam_user.edge_source
  user       = each.value.name
  policy_arn = aws_iam_policy.edge[each.key].arn
}

# The shared, any-source policy: for sites that cannot name their sources.
# Prefer var.edge_sources, which confines each agent to its own prefix.

resource "aws_iam_role_policy_attachment" "edge" {
  count      = var.edge_role_name == null ? 0 : 1
  role       = var.edge_role_name
  policy_arn = aws_iam_policy.edge["*"].arn
}

resource "aws_iam_user" "edge" {
  #checkov:skip=CKV_AWS_273:Optional, off by default; for sites that cannot use roles. Access keys are created outside Terraform so they never enter the state.
  count = var.create_edge_user ? 1 : 0
  name  = "${var.name}-edge-agent"
  tags  = local.tags
}

resource "aws_iam_user_policy_attachment" "edge" {
  #checkov:skip=CKV_AWS_40:The user exists only to carry this one managed policy.
  count      = var.create_edge_user ? 1 : 0
  user       = aws_iam_user.edge[0].name
  policy_arn = aws_iam_policy.edge["*"].arn
}

# ------------------------------------------------ the output's consumers

# What a consumer of the output queue needs, offloaded records included:
# attach it to the consumer's role (output consumer_policy_json).
data "aws_iam_policy_document" "consumer" {
  statement {
    sid       = "ReceiveOutput"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.output.arn]
  }
  statement {
    sid       = "ReadPayloads"
    actions   = concat(["s3:GetObject"], var.consumer_may_delete_payloads ? ["s3:DeleteObject"] : [])
    resources = ["${aws_s3_bucket.this.arn}/${var.payload_prefix}*"]
  }
}
