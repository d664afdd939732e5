"""App config so that the project package's templates and commands are found."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from celery.signals import task_postrun
        from django.core.signals import request_finished

        from portal.dbbudget import recycle_over_budget

        # After Django's own close_old_connections (connected first, at import).
        request_finished.connect(recycle_over_budget, dispatch_uid="portal.dbbudget.request")
        task_postrun.connect(recycle_over_budget, dispatch_uid="portal.dbbudget.task", weak=False)
