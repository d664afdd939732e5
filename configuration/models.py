"""Tenant configuration models (filled by the configuration work of issue 3)."""
