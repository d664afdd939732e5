"""Project package: settings, URLconfs, Celery app and tenant routing."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
