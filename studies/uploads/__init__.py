"""Uploads: files, zips and server folders staged into ingest jobs, and the /upload/ pages."""
