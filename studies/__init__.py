"""Tenant schema: storage media now; the DICOM index, ingest and storage as they land."""
