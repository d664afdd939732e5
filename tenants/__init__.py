"""Public schema: tenants, their domains and lifecycle, and the super-admin site."""
