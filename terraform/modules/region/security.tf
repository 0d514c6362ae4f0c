# Who may reach what. Clients reach only the public load balancer (HTTPS). The other
# regions reach only this region's internal ports: the node's API (forwarding, replica
# checks, failover), the voter (Raft and ownership commands) and Kafka (their appliers
# read this region's events). Everything on those ports is also authenticated
# (signed with the deployment's secret, or SCRAM); the network rules are the first wall.

resource "aws_security_group" "public_lb" {
  region      = var.aws_region
  name        = "ledger-${var.name}-public-lb"
  description = "Public API load balancer: HTTPS from anywhere"
  vpc_id      = var.network.vpc_id
  ingress {
    description = "clients"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "to the region nodes"
    from_port   = 8080
    to_port     = 8080
    protocol    = "tcp"
    cidr_blocks = [var.network.cidr]
  }
}

resource "aws_security_group" "service" {
  for_each    = local.services
  region      = var.aws_region
  name        = "ledger-${var.name}-${each.key}"
  description = "ledger ${each.key}: its port from this region and the deployment's other regions"
  vpc_id      = var.network.vpc_id
  ingress {
    description = "this region and the other regions of the deployment"
    from_port   = each.value.port
    to_port     = each.value.port
    protocol    = "tcp"
    cidr_blocks = concat([var.network.cidr], local.other_cidrs)
  }
  egress {
    description = "database, Kafka, voters and peers here and in the other regions; AWS APIs"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "database" {
  region      = var.aws_region
  name        = "ledger-${var.name}-database"
  description = "PostgreSQL: only this region's node and replicator"
  vpc_id      = var.network.vpc_id
  ingress {
    description     = "node and replicator"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.service["region-node"].id, aws_security_group.service["replicator"].id]
  }
}

resource "aws_security_group" "kafka" {
  region      = var.aws_region
  name        = "ledger-${var.name}-kafka"
  description = "MSK SASL/SCRAM over TLS: this region's replicator and the other regions' appliers"
  vpc_id      = var.network.vpc_id
  ingress {
    description = "replicators of every region"
    from_port   = 9096
    to_port     = 9096
    protocol    = "tcp"
    cidr_blocks = concat([var.network.cidr], local.other_cidrs)
  }
}

resource "aws_security_group" "efs" {
  region      = var.aws_region
  name        = "ledger-${var.name}-efs"
  description = "NFS from the voter and the nodes of this region"
  vpc_id      = var.network.vpc_id
  ingress {
    description     = "voter and nodes"
    from_port       = 2049
    to_port         = 2049
    protocol        = "tcp"
    security_groups = [aws_security_group.service["region-node"].id, aws_security_group.service["ownership"].id]
  }
}

# ---- Load balancers: public HTTPS for clients; internal TCP for the other regions.

resource "aws_lb" "public" {
  #checkov:skip=CKV2_AWS_76:aws_wafv2_web_acl_association.public attaches aws_wafv2_web_acl.public, which runs AWSManagedRulesKnownBadInputsRuleSet (its Log4JRCE rules included; CKV_AWS_192 passes on the ACL); this graph check does not follow the association.
  region                     = var.aws_region
  name                       = "ledger-${var.name}"
  load_balancer_type         = "application"
  subnets                    = var.network.public_subnet_ids
  security_groups            = [aws_security_group.public_lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  access_logs {
    bucket  = var.access_log_bucket
    enabled = true
  }
}

# In front of the API keys and their per-key rate limit: AWS's common rules, known bad
# inputs, and a per-address rate limit for traffic that never shows a key.
resource "aws_wafv2_web_acl" "public" {
  region = var.aws_region
  name   = "ledger-${var.name}"
  scope  = "REGIONAL"
  default_action {
    allow {}
  }
  rule {
    name     = "common"
    priority = 1
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "common"
      sampled_requests_enabled   = true
    }
  }
  rule {
    name     = "known-bad-inputs"
    priority = 2
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }
  rule {
    name     = "per-address-rate"
    priority = 3
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.per_address_limit
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "per-address-rate"
      sampled_requests_enabled   = true
    }
  }
  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "ledger-${var.name}"
    sampled_requests_enabled   = true
  }
}

# WAF requires its log groups' names to start with aws-waf-logs-.
resource "aws_cloudwatch_log_group" "waf" {
  region            = var.aws_region
  name              = "aws-waf-logs-ledger-${var.name}"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
}

resource "aws_wafv2_web_acl_logging_configuration" "public" {
  region                  = var.aws_region
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
  resource_arn            = aws_wafv2_web_acl.public.arn
}

resource "aws_wafv2_web_acl_association" "public" {
  region       = var.aws_region
  resource_arn = aws_lb.public.arn
  web_acl_arn  = aws_wafv2_web_acl.public.arn
}

resource "aws_lb_target_group" "public" {
  region      = var.aws_region
  name        = "ledger-${var.name}-api"
  port        = 8080
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.network.vpc_id
  health_check {
    path    = "/readyz"
    matcher = "200"
  }
}

resource "aws_lb_listener" "https" {
  region            = var.aws_region
  load_balancer_arn = aws_lb.public.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.public.arn
  }
}

resource "aws_lb" "internal" {
  region                           = var.aws_region
  name                             = "ledger-${var.name}-internal"
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = var.network.private_subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
  access_logs {
    bucket  = var.access_log_bucket
    prefix  = "internal"
    enabled = true
  }
}

resource "aws_lb_target_group" "node_internal" {
  region      = var.aws_region
  name        = "ledger-${var.name}-node"
  port        = 8080
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.network.vpc_id
  health_check {
    protocol = "HTTP"
    path     = "/readyz"
  }
}

resource "aws_lb_target_group" "voter" {
  region      = var.aws_region
  name        = "ledger-${var.name}-voter"
  port        = 7000
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.network.vpc_id
  health_check {
    protocol = "HTTP"
    path     = "/healthz"
  }
}

resource "aws_lb_listener" "internal" {
  for_each = {
    "8080" = aws_lb_target_group.node_internal.arn
    "7000" = aws_lb_target_group.voter.arn
  }
  region            = var.aws_region
  load_balancer_arn = aws_lb.internal.arn
  port              = tonumber(each.key)
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = each.value
  }
}
