terraform {
  # 1.11: write-only arguments (the HMAC key parameter's placeholder).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.50, < 7.0"
    }
  }
}
