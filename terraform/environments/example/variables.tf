variable "public_zone_id" {
  description = "Route 53 public hosted zone of api_name."
  type        = string
}

variable "api_name" {
  description = "The API's public name, e.g. api.ledger.example.com."
  type        = string
}

variable "internal_domain" {
  description = "Private DNS domain the regions name each other in."
  type        = string
  default     = "ledger.internal"
}

variable "images" {
  description = "Container images of region-node, ledger-replicator and ownership-server."
  type = object({
    region_node = string
    replicator  = string
    ownership   = string
  })
}

variable "kms_key_arns" {
  description = "Per region: the KMS key for its data, logs and secrets."
  type        = map(string)
}

variable "certificate_arns" {
  description = "Per region: the ACM certificate in that region of api_name and <region>.api_name (the region's own name, listed by GET /v1/regions)."
  type        = map(string)
}

variable "access_log_buckets" {
  description = "Per region: the S3 bucket of its load balancer's access logs."
  type        = map(string)
}

variable "flow_log_role_arn" {
  description = "IAM role VPC flow logs write with."
  type        = string
}
