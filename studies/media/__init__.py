"""Storage media: their rules, probe and usage (services), the /storage/ pages and forms."""
