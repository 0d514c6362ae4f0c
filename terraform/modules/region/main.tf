# One ledger region: its PostgreSQL (RDS, TLS only), its Kafka (MSK, TLS and SASL/SCRAM),
# the three services on ECS Fargate (services.tf) and what lets only the deployment's
# regions reach each other's internal ports (security.tf). Failover is not here: the
# failover tool moves ownership; terraform only builds what each region runs.

locals {
  others        = { for r, v in var.regions : r => v if r != var.name }
  other_cidrs   = [for r, v in local.others : v.cidr]
  internal_name = "${var.name}.${var.internal_domain}"
}

# ---- PostgreSQL: one RDS instance per region, reached only over verified TLS.

resource "aws_db_subnet_group" "ledger" {
  region     = var.aws_region
  name       = "ledger-${var.name}"
  subnet_ids = var.network.private_subnet_ids
}

resource "aws_db_parameter_group" "ledger" {
  region = var.aws_region
  name   = "ledger-${var.name}"
  family = "postgres15"
  # Plain connections are refused by the server itself (the nodes use verify-full).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

resource "random_password" "database" {
  length  = 40
  special = false
}

resource "aws_db_instance" "ledger" {
  region                              = var.aws_region
  identifier                          = "ledger-${var.name}"
  engine                              = "postgres"
  engine_version                      = "15"
  instance_class                      = var.db_instance_class
  allocated_storage                   = 100
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  db_name                             = "ledger"
  username                            = "ledger"
  password                            = random_password.database.result
  db_subnet_group_name                = aws_db_subnet_group.ledger.name
  parameter_group_name                = aws_db_parameter_group.ledger.name
  vpc_security_group_ids              = [aws_security_group.database.id]
  multi_az                            = true
  backup_retention_period             = 14
  deletion_protection                 = true
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = var.kms_key_arn
  monitoring_interval                 = 30
  monitoring_role_arn                 = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "ledger-${var.name}-final"
}

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:No rotation Lambda yet: the services read these at task start, so a rotation must also roll every task (and, for the internal secret, accept two secrets during the change, which the binaries do not yet do). Rotate by hand with a rolling deploy.
  region                  = var.aws_region
  name                    = "ledger/${var.name}/database-url"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database_url" {
  region        = var.aws_region
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = "postgres://ledger:${random_password.database.result}@${aws_db_instance.ledger.address}:5432/ledger"
}

# ---- Kafka: one MSK cluster per region; clients over TLS with SASL/SCRAM.

resource "aws_cloudwatch_log_group" "kafka" {
  region            = var.aws_region
  name              = "/ledger/${var.name}/msk"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
}

resource "aws_msk_cluster" "ledger" {
  region                 = var.aws_region
  cluster_name           = "ledger-${var.name}"
  kafka_version          = "3.7.x"
  number_of_broker_nodes = length(var.network.private_subnet_ids)
  broker_node_group_info {
    instance_type   = var.kafka_instance_type
    client_subnets  = var.network.private_subnet_ids
    security_groups = [aws_security_group.kafka.id]
    storage_info {
      ebs_storage_info {
        volume_size = 500
      }
    }
  }
  client_authentication {
    sasl {
      scram = true
    }
  }
  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }
  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.kafka.name
      }
    }
  }
}

# MSK takes SCRAM credentials only from secrets named AmazonMSK_*.
resource "aws_secretsmanager_secret" "kafka" {
  #checkov:skip=CKV2_AWS_57:No rotation Lambda yet: the services read these at task start, so a rotation must also roll every task (and, for the internal secret, accept two secrets during the change, which the binaries do not yet do). Rotate by hand with a rolling deploy.
  region                  = var.aws_region
  name                    = "AmazonMSK_ledger_${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "kafka" {
  region        = var.aws_region
  secret_id     = aws_secretsmanager_secret.kafka.id
  secret_string = jsonencode({ username = "ledger", password = var.kafka_password })
}

resource "aws_secretsmanager_secret" "kafka_password" {
  #checkov:skip=CKV2_AWS_57:No rotation Lambda yet: the services read these at task start, so a rotation must also roll every task (and, for the internal secret, accept two secrets during the change, which the binaries do not yet do). Rotate by hand with a rolling deploy.
  region                  = var.aws_region
  name                    = "ledger/${var.name}/kafka-password"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "kafka_password" {
  region        = var.aws_region
  secret_id     = aws_secretsmanager_secret.kafka_password.id
  secret_string = var.kafka_password
}

resource "aws_msk_scram_secret_association" "ledger" {
  region          = var.aws_region
  cluster_arn     = aws_msk_cluster.ledger.arn
  secret_arn_list = [aws_secretsmanager_secret.kafka.arn]
  depends_on      = [aws_secretsmanager_secret_version.kafka]
}

# The names other regions use for this region's services (the private zone is the
# deployment's, modules/global).

resource "aws_route53_record" "kafka" {
  zone_id = var.internal_zone_id
  name    = "kafka.${local.internal_name}"
  type    = "CNAME"
  ttl     = 60
  # The first SASL/SCRAM bootstrap broker; librdkafka learns the others from it.
  records = [split(":", split(",", aws_msk_cluster.ledger.bootstrap_brokers_sasl_scram)[0])[0]]
}

resource "aws_route53_record" "node" {
  zone_id = var.internal_zone_id
  name    = "node.${local.internal_name}"
  type    = "A"
  alias {
    name                   = aws_lb.internal.dns_name
    zone_id                = aws_lb.internal.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "voter" {
  zone_id = var.internal_zone_id
  name    = "voter.${local.internal_name}"
  type    = "A"
  alias {
    name                   = aws_lb.internal.dns_name
    zone_id                = aws_lb.internal.zone_id
    evaluate_target_health = false
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name = "ledger-${var.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "monitoring.rds.amazonaws.com" } }]
  })
  managed_policy_arns = ["arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"]
}
