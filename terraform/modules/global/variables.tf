variable "home_region" {
  description = "AWS region of the deployment-wide resources (the secrets' primary copies)."
  type        = string
}

variable "public_zone_id" {
  description = "Route 53 public hosted zone of the API's name."
  type        = string
}

variable "api_name" {
  description = "The API's name clients use, e.g. api.ledger.example.com: one latency record per region."
  type        = string
}

variable "internal_domain" {
  description = "Private DNS domain for the names regions use for each other (voter.<region>, node.<region>, kafka.<region>)."
  type        = string
}

variable "regions" {
  description = "Every region: its AWS region, VPC and public load balancer (modules/network and modules/region outputs)."
  type = map(object({
    aws_region = string
    vpc_id     = string
    public_lb = object({
      dns_name = string
      zone_id  = string
    })
  }))
}

variable "kms_key_arn" {
  description = "Multi-region KMS key (primary in home_region) for the secrets."
  type        = string
}
