terraform {
  required_version = ">= 1.5"
  required_providers {
    # 6.x: every resource takes `region`, so one provider builds every region and
    # environments can for_each over a map of regions.
    aws    = { source = "hashicorp/aws", version = ">= 6.0" }
    random = { source = "hashicorp/random", version = ">= 3.6" }
  }
}
