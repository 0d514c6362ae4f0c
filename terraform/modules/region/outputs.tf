output "public_lb" {
  description = "The public API's load balancer: its DNS name and zone, for the latency record (modules/global)."
  value = {
    dns_name = aws_lb.public.dns_name
    zone_id  = aws_lb.public.zone_id
  }
}

output "endpoints" {
  description = "This region's endpoints: the public API's load balancer, and the internal names other regions use."
  value = {
    api        = "https://${aws_lb.public.dns_name}"
    node       = "http://node.${local.internal_name}:8080"
    voter      = "voter.${local.internal_name}:7000"
    kafka      = "kafka.${local.internal_name}:9096"
    database   = aws_db_instance.ledger.address
  }
}
