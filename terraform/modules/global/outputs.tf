output "internal_zone_id" {
  description = "The private zone the region modules add their names to."
  value       = aws_route53_zone.internal.zone_id
}

output "internal_secret_arn" {
  description = "LEDGER_INTERNAL_SECRET's secret (replicated to every region under the same name)."
  value       = aws_secretsmanager_secret.internal.arn
}

output "kafka_password" {
  description = "The deployment's SCRAM password, for every region's broker."
  value       = random_password.kafka.result
  sensitive   = true
}

output "api_endpoint" {
  description = "The API's name, routed by latency to the nearest healthy region."
  value       = "https://${var.api_name}"
}

output "region_endpoints" {
  description = "Each region's own public name (what GET /v1/regions lists)."
  value       = { for name, r in var.regions : name => "https://${name}.${var.api_name}" }
}
