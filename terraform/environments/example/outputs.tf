output "api" {
  description = "The API's name: latency-routed to the nearest healthy region."
  value       = module.global.api_endpoint
}

output "regions" {
  description = "Per region: its public API load balancer and its internal endpoints."
  value       = { for name, r in module.region : name => r.endpoints }
}
