"""API routes of studies and storage media (filled in issue 3)."""

urlpatterns: list = []
