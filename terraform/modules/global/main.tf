# What the regions share: the deployment's secrets (replicated to every region), the
# private zone through which they name each other, and the public API name with one
# latency record per region, each behind a health check of that region's /readyz, so
# clients are routed to the nearest healthy region and a dead region drops out of DNS.

resource "random_password" "internal_secret" {
  length  = 48
  special = false
}

resource "random_password" "kafka" {
  length  = 40
  special = false
}

# Signs every call between regions, to the voters and to the replicators.
resource "aws_secretsmanager_secret" "internal" {
  #checkov:skip=CKV2_AWS_57:No rotation Lambda yet: the services read these at task start, so a rotation must also roll every task (and, for the internal secret, accept two secrets during the change, which the binaries do not yet do). Rotate by hand with a rolling deploy.
  region                  = var.home_region
  name                    = "ledger/internal-secret"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
  dynamic "replica" {
    for_each = toset([for r in values(var.regions) : r.aws_region if r.aws_region != var.home_region])
    content {
      region     = replica.value
      kms_key_id = var.kms_key_arn
    }
  }
}

resource "aws_secretsmanager_secret_version" "internal" {
  region        = var.home_region
  secret_id     = aws_secretsmanager_secret.internal.id
  secret_string = random_password.internal_secret.result
}

resource "aws_route53_zone" "internal" {
  name = var.internal_domain
  dynamic "vpc" {
    for_each = var.regions
    content {
      vpc_id     = vpc.value.vpc_id
      vpc_region = vpc.value.aws_region
    }
  }
}

resource "aws_route53_health_check" "readyz" {
  for_each          = var.regions
  fqdn              = each.value.public_lb.dns_name
  type              = "HTTPS"
  port              = 443
  resource_path     = "/readyz"
  request_interval  = 10
  failure_threshold = 3
  measure_latency   = true
  tags              = { Name = "ledger-${each.key}-readyz" }
}

resource "aws_route53_record" "api" {
  #checkov:skip=CKV2_AWS_23:An alias of each region's public load balancer, passed in from modules/region; checkov cannot follow module inputs.
  for_each        = var.regions
  zone_id         = var.public_zone_id
  name            = var.api_name
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.readyz[each.key].id
  latency_routing_policy {
    region = each.value.aws_region
  }
  alias {
    name                   = each.value.public_lb.dns_name
    zone_id                = each.value.public_lb.zone_id
    evaluate_target_health = true
  }
}

# Each region's own public name (<region>.<api_name>), beside the latency-routed one:
# what GET /v1/regions lists (LEDGER_PUBLIC_URLS, modules/region), so a client that
# reached any region can pin or fail over to a named one. No latency policy and no
# health check: a client chooses among these itself.
resource "aws_route53_record" "region_api" {
  #checkov:skip=CKV2_AWS_23:An alias of each region's public load balancer, passed in from modules/region; checkov cannot follow module inputs.
  for_each = var.regions
  zone_id  = var.public_zone_id
  name     = "${each.key}.${var.api_name}"
  type     = "A"
  alias {
    name                   = each.value.public_lb.dns_name
    zone_id                = each.value.public_lb.zone_id
    evaluate_target_health = true
  }
}
