variable "name" {
  description = "The ledger region's name (LEDGER_REGION), e.g. eu-west."
  type        = string
}

variable "aws_region" {
  description = "The AWS region to build in, e.g. eu-west-1."
  type        = string
}

variable "cidr" {
  description = "The VPC's address range; regions' ranges must not overlap (they route to each other)."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones (names) to spread subnets over, at least two."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "Give at least two availability zones: the database and the brokers span them."
  }
}

variable "kms_key_arn" {
  description = "KMS key (in this AWS region) encrypting the flow logs."
  type        = string
}

variable "flow_log_role_arn" {
  description = "IAM role the VPC flow logs write with."
  type        = string
}
