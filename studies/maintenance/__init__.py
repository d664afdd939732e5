"""The periodic work on a tenant's archive: watermark migration, retention, verification,
quarantine purge (and the retry of a failed ingest job)."""
