"""App config for the tenant's archive."""

from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "studies"
    verbose_name = "Studies and storage"

    def ready(self) -> None:
        from studies.index import lookups

        lookups.register()
