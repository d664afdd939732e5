"""The viewer in the box: OHIF served under each tenant site's `/viewer/`, reading that
tenant's DICOMweb with the user's session (same origin, so no CORS and no token)."""
