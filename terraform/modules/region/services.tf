# The region's three services on ECS Fargate, each configured only through the
# environment variables and secrets below. scripts/terraform-check.py compares every
# name in these maps with the flags the binaries accept (`--help`), so a renamed or
# misspelt variable fails CI instead of being silently ignored in production.

locals {
  voters = join(",", [for r, v in var.regions : "voter.${r}.${var.internal_domain}:7000"])
  peers  = join(",", [for r, v in local.others : "${r}=http://node.${r}.${var.internal_domain}:8080"])
  # Every region's own public name, made by modules/global (record region_api) from
  # the same names: GET /v1/regions lists them for clients.
  public_urls = join(",", [for r, v in var.regions : "${r}=https://${r}.${var.api_name}"])
  # Literal maps (no merge()): the static check reads their keys.
  node_env = {
    LEDGER_REGION           = var.name
    LEDGER_DATABASE_TLS     = "verify-full"
    LEDGER_DATABASE_CA_FILE = "/etc/ledger/rds-ca.pem"
    LEDGER_LISTEN           = "0.0.0.0:8080"
    LEDGER_SLOT_COUNT       = tostring(var.slot_count)
    LEDGER_OWNERSHIP_VOTERS = local.voters
    LEDGER_PEERS            = local.peers
    LEDGER_PUBLIC_URLS      = local.public_urls
    LEDGER_API_KEYS_FILE    = "/etc/ledger/keys/api-keys.json"
    LEDGER_LOG_FORMAT       = "json"
  }
  node_secrets = {
    LEDGER_DATABASE_URL    = aws_secretsmanager_secret.database_url.arn
    LEDGER_INTERNAL_SECRET = var.internal_secret_arn
  }

  replicator_env = {
    LEDGER_REGION                  = var.name
    LEDGER_DATABASE_TLS            = "verify-full"
    LEDGER_DATABASE_CA_FILE        = "/etc/ledger/rds-ca.pem"
    LEDGER_REPLICATOR_LISTEN       = "0.0.0.0:9464"
    LEDGER_BROKERS                 = "kafka.${local.internal_name}:9096"
    LEDGER_APPLY_FROM              = join(" ", [for r, v in local.others : "${r}=kafka.${r}.${var.internal_domain}:9096"])
    LEDGER_KAFKA_SECURITY_PROTOCOL = "SASL_SSL"
    LEDGER_KAFKA_SASL_MECHANISM    = "SCRAM-SHA-512"
    LEDGER_KAFKA_SASL_USERNAME     = "ledger"
    LEDGER_LOG_FORMAT              = "json"
  }
  replicator_secrets = {
    LEDGER_DATABASE_URL        = aws_secretsmanager_secret.database_url.arn
    LEDGER_INTERNAL_SECRET     = var.internal_secret_arn
    LEDGER_KAFKA_SASL_PASSWORD = aws_secretsmanager_secret.kafka_password.arn
  }

  voter_env = {
    OWNERSHIP_NODE_ID           = tostring(var.voter_id)
    OWNERSHIP_LISTEN            = "0.0.0.0:7000"
    OWNERSHIP_DATA_DIR          = "/data/voter"
    OWNERSHIP_BOOTSTRAP_VOTERS  = join(",", [for r, v in var.regions : "${v.voter_id}=voter.${r}.${var.internal_domain}:7000"])
    OWNERSHIP_HEARTBEAT_MS      = tostring(var.raft_timing.heartbeat_ms)
    OWNERSHIP_ELECTION_MIN_MS   = tostring(var.raft_timing.election_min_ms)
    OWNERSHIP_ELECTION_MAX_MS   = tostring(var.raft_timing.election_max_ms)
    LEDGER_LOG_FORMAT           = "json"
  }
  voter_secrets = {
    LEDGER_INTERNAL_SECRET = var.internal_secret_arn
  }

  services = {
    region-node = { image = var.images.region_node, port = 8080, env = local.node_env, secrets = local.node_secrets, count = var.node_count, volume = "keys", path = "/etc/ledger/keys" }
    replicator  = { image = var.images.replicator, port = 9464, env = local.replicator_env, secrets = local.replicator_secrets, count = 1, volume = null, path = null }
    ownership   = { image = var.images.ownership, port = 7000, env = local.voter_env, secrets = local.voter_secrets, count = 1, volume = "voter", path = "/data/voter" }
  }
}

resource "aws_ecs_cluster" "ledger" {
  region = var.aws_region
  name   = "ledger-${var.name}"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "services" {
  for_each          = local.services
  region            = var.aws_region
  name              = "/ledger/${var.name}/${each.key}"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
}

# The voter's Raft log and snapshots, and the API key file every node reads (the same
# file is copied to every region: keys are configuration, see docs/api.md).
resource "aws_efs_file_system" "ledger" {
  region     = var.aws_region
  encrypted  = true
  kms_key_id = var.kms_key_arn
  tags       = { Name = "ledger-${var.name}" }
}

resource "aws_efs_mount_target" "ledger" {
  for_each        = toset(var.network.private_subnet_ids)
  region          = var.aws_region
  file_system_id  = aws_efs_file_system.ledger.id
  subnet_id       = each.value
  security_groups = [aws_security_group.efs.id]
}

resource "aws_efs_access_point" "ledger" {
  for_each       = toset(["voter", "keys"])
  region         = var.aws_region
  file_system_id = aws_efs_file_system.ledger.id
  posix_user {
    uid = 10001
    gid = 10001
  }
  root_directory {
    path = "/${each.key}"
    creation_info {
      owner_uid   = 10001
      owner_gid   = 10001
      permissions = "0750"
    }
  }
}

resource "aws_iam_role" "task_execution" {
  name = "ledger-${var.name}-task-execution"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ecs-tasks.amazonaws.com" } }]
  })
}

resource "aws_iam_role_policy" "read_secrets" {
  name = "read-ledger-secrets"
  role = aws_iam_role.task_execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = distinct(flatten([for s in local.services : values(s.secrets)]))
      },
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = [for g in aws_cloudwatch_log_group.services : "${g.arn}:*"]
      },
      {
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.kms_key_arn]
      }
    ]
  })
}

resource "aws_ecs_task_definition" "service" {
  for_each                 = local.services
  region                   = var.aws_region
  family                   = "ledger-${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 2048
  execution_role_arn       = aws_iam_role.task_execution.arn
  dynamic "volume" {
    for_each = each.value.volume == null ? [] : [each.value.volume]
    content {
      name = volume.value
      efs_volume_configuration {
        file_system_id     = aws_efs_file_system.ledger.id
        transit_encryption = "ENABLED"
        authorization_config {
          access_point_id = aws_efs_access_point.ledger[volume.value].id
        }
      }
    }
  }
  container_definitions = jsonencode([{
    name                   = each.key
    image                  = each.value.image
    essential              = true
    readonlyRootFilesystem = true
    user                   = "10001"
    portMappings           = [{ containerPort = each.value.port, protocol = "tcp" }]
    environment            = [for k, v in each.value.env : { name = k, value = v }]
    secrets                = [for k, v in each.value.secrets : { name = k, valueFrom = v }]
    mountPoints = each.value.volume == null ? [] : [{
      sourceVolume  = each.value.volume
      containerPath = each.value.path
      readOnly      = each.key == "region-node"
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.services[each.key].name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = each.key
      }
    }
  }])
}

resource "aws_ecs_service" "service" {
  for_each        = local.services
  region          = var.aws_region
  name            = each.key
  cluster         = aws_ecs_cluster.ledger.id
  task_definition = aws_ecs_task_definition.service[each.key].arn
  desired_count   = each.value.count
  launch_type     = "FARGATE"
  # A voter must never run twice on one data dir: stop the old task before the new one.
  deployment_minimum_healthy_percent = each.key == "ownership" ? 0 : 100
  deployment_maximum_percent         = each.key == "ownership" ? 100 : 200
  network_configuration {
    subnets          = var.network.private_subnet_ids
    security_groups  = [aws_security_group.service[each.key].id]
    assign_public_ip = false
  }
  dynamic "load_balancer" {
    for_each = each.key == "region-node" ? [aws_lb_target_group.public.arn, aws_lb_target_group.node_internal.arn] : each.key == "ownership" ? [aws_lb_target_group.voter.arn] : []
    content {
      target_group_arn = load_balancer.value
      container_name   = each.key
      container_port   = each.value.port
    }
  }
}
