"""Tenant configuration (`/settings/`): DICOM identity and nodes, retention, policies, versioned."""
