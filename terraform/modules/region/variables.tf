variable "name" {
  description = "The ledger region's name (LEDGER_REGION), e.g. eu-west."
  type        = string
}

variable "aws_region" {
  description = "The AWS region to build in, e.g. eu-west-1."
  type        = string
}

variable "voter_id" {
  description = "This region's ownership voter's node id (unique, above 0)."
  type        = number
}

variable "regions" {
  description = "Every region of the deployment (this one included): name => voter id and VPC range. Voters, peers and appliers are derived from it."
  type = map(object({
    voter_id = number
    cidr     = string
  }))
}

variable "network" {
  description = "This region's network (modules/network outputs)."
  type = object({
    vpc_id             = string
    cidr               = string
    private_subnet_ids = list(string)
    public_subnet_ids  = list(string)
  })
}

variable "internal_domain" {
  description = "Private DNS domain of the deployment: voter.<region>, node.<region> and kafka.<region> are records in it."
  type        = string
}

variable "internal_zone_id" {
  description = "The private hosted zone of internal_domain (modules/global)."
  type        = string
}

variable "images" {
  description = "Container images of the three services (built from this repository's binaries; each carries the RDS CA bundle at /etc/ledger/rds-ca.pem)."
  type = object({
    region_node    = string
    replicator     = string
    ownership      = string
  })
}

variable "internal_secret_arn" {
  description = "Secrets Manager secret holding LEDGER_INTERNAL_SECRET (modules/global)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key (in this AWS region) for the database, the broker, logs, file systems and secrets."
  type        = string
}

variable "api_name" {
  description = "The API's public name, e.g. api.ledger.example.com; this region's own name is <region>.<api_name> (modules/global)."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate of the public API's names (api_name and <region>.api_name; a wildcard *.api_name with api_name covers both), for the load balancer's HTTPS listener."
  type        = string
}

variable "slot_count" {
  description = "Ownership slots of the deployment (fixed when the cluster is created)."
  type        = number
  default     = 4096
}

variable "db_instance_class" {
  description = "RDS instance class of the region's PostgreSQL."
  type        = string
  default     = "db.r6g.large"
}

variable "kafka_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.m7g.large"
}

variable "node_count" {
  description = "Region node tasks behind the load balancer."
  type        = number
  default     = 2
}

variable "kafka_password" {
  description = "The deployment's one SCRAM password (modules/global): every replicator reads its own region's broker and the other regions' with it."
  type        = string
  sensitive   = true
}

variable "raft_timing" {
  description = "Ownership voters' Raft timing in ms. openraft 0.9 times AppendEntries out at the heartbeat interval, so the heartbeat must exceed the longest voter round trip (docs: ARCHITECTURE.md, timing across real regions)."
  type = object({
    heartbeat_ms    = number
    election_min_ms = number
    election_max_ms = number
  })
  default = { heartbeat_ms = 500, election_min_ms = 2000, election_max_ms = 4000 }
}

variable "access_log_bucket" {
  description = "S3 bucket (in this AWS region) for the public load balancer's access logs."
  type        = string
}

variable "per_address_limit" {
  description = "Requests per 5 minutes one client address may send before the WAF blocks it (the API keys' own limits act per key, behind it)."
  type        = number
  default     = 300000
}
