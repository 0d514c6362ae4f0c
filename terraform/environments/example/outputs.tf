output "api" {
  description = "The API's name: latency-routed to the nearest healthy region."
  value       = module.global.api_endpoint
}

output "regions" {
  description = "Per region: its public API load balancer and its internal endpoints."
  value       = { for name, r in module.region : name => r.endpoints }
}

output "region_endpoints" {
  description = "Per region: its own public name (GET /v1/regions lists them; ledger-client pins and fails over by them)."
  value       = module.global.region_endpoints
}
