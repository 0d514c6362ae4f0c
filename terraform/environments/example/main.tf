# An example deployment: three regions on three continents, one ownership voter in
# each (a majority survives the loss of any one region), built with for_each over one
# map. Apply it with real values for the variables below; failover afterwards is the
# failover tool's job, never terraform's.

locals {
  regions = {
    eu-west  = { aws_region = "eu-west-1", cidr = "10.10.0.0/16", voter_id = 1, zones = ["eu-west-1a", "eu-west-1b"] }
    us-east  = { aws_region = "us-east-1", cidr = "10.20.0.0/16", voter_id = 2, zones = ["us-east-1a", "us-east-1b"] }
    ap-south = { aws_region = "ap-south-1", cidr = "10.30.0.0/16", voter_id = 3, zones = ["ap-south-1a", "ap-south-1b"] }
  }
}

provider "aws" {
  region = "eu-west-1"
}

module "network" {
  source            = "../../modules/network"
  for_each          = local.regions
  name              = each.key
  aws_region        = each.value.aws_region
  cidr               = each.value.cidr
  availability_zones = each.value.zones
  kms_key_arn       = var.kms_key_arns[each.key]
  flow_log_role_arn = var.flow_log_role_arn
}

module "global" {
  source          = "../../modules/global"
  home_region     = "eu-west-1"
  public_zone_id  = var.public_zone_id
  api_name        = var.api_name
  internal_domain = var.internal_domain
  kms_key_arn     = var.kms_key_arns["eu-west"]
  regions = {
    for name, r in local.regions : name => {
      aws_region = r.aws_region
      vpc_id     = module.network[name].vpc_id
      public_lb  = module.region[name].public_lb
    }
  }
}

module "region" {
  source              = "../../modules/region"
  for_each            = local.regions
  name                = each.key
  aws_region          = each.value.aws_region
  voter_id            = each.value.voter_id
  regions             = { for name, r in local.regions : name => { voter_id = r.voter_id, cidr = r.cidr } }
  network             = module.network[each.key]
  api_name            = var.api_name
  internal_domain     = var.internal_domain
  internal_zone_id    = module.global.internal_zone_id
  internal_secret_arn = module.global.internal_secret_arn
  kafka_password      = module.global.kafka_password
  images              = var.images
  kms_key_arn         = var.kms_key_arns[each.key]
  certificate_arn     = var.certificate_arns[each.key]
  access_log_bucket   = var.access_log_buckets[each.key]
}
