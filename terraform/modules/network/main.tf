# One region's network: a VPC with private subnets for the ledger's services and data,
# public subnets for the load balancer and NAT, and flow logs. Other regions reach this
# one through routes the environment adds (transit gateway or VPC peering), restricted
# to the ports the security groups of modules/region open.

# The zones are named, not looked up: a looked-up list can change when AWS adds a zone,
# and would then move subnets (and the database and brokers in them).
locals {
  zones = var.availability_zones
}

resource "aws_vpc" "this" {
  region               = var.aws_region
  cidr_block           = var.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = "ledger-${var.name}" }
}

# No rule: the default security group denies everything (services use their own).
resource "aws_default_security_group" "this" {
  region = var.aws_region
  vpc_id = aws_vpc.this.id
}

resource "aws_subnet" "private" {
  for_each          = { for i, zone in local.zones : zone => i }
  region            = var.aws_region
  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(var.cidr, 4, each.value)
  tags              = { Name = "ledger-${var.name}-private-${each.key}" }
}

resource "aws_subnet" "public" {
  for_each          = { for i, zone in local.zones : zone => i }
  region            = var.aws_region
  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(var.cidr, 4, each.value + 8)
  tags              = { Name = "ledger-${var.name}-public-${each.key}" }
}

resource "aws_internet_gateway" "this" {
  region = var.aws_region
  vpc_id = aws_vpc.this.id
}

resource "aws_eip" "nat" {
  region = var.aws_region
  domain = "vpc"
}

resource "aws_nat_gateway" "this" {
  region        = var.aws_region
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public[local.zones[0]].id
}

resource "aws_route_table" "public" {
  region = var.aws_region
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table" "private" {
  region = var.aws_region
  vpc_id = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  for_each       = aws_subnet.public
  region         = var.aws_region
  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "private" {
  for_each       = aws_subnet.private
  region         = var.aws_region
  subnet_id      = each.value.id
  route_table_id = aws_route_table.private.id
}

resource "aws_cloudwatch_log_group" "flow" {
  region            = var.aws_region
  name              = "/ledger/${var.name}/vpc-flow"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
}

resource "aws_flow_log" "this" {
  region          = var.aws_region
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = var.flow_log_role_arn
}
