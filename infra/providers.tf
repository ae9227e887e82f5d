# Region and credentials come from the standard AWS environment (AWS_REGION,
# AWS_PROFILE, ...). Every resource also carries var.tags via local.tags.
provider "aws" {}
