output "vpc_id" {
  description = "The region's VPC."
  value       = aws_vpc.this.id
}

output "cidr" {
  description = "The VPC's address range."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Subnets of the services and the data stores."
  value       = [for s in aws_subnet.private : s.id]
}

output "public_subnet_ids" {
  description = "Subnets of the public load balancer."
  value       = [for s in aws_subnet.public : s.id]
}
