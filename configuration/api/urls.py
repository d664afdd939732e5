"""API routes of configuration (filled in issue 3)."""

urlpatterns: list = []
