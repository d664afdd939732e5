"""One place that turns domain errors into HTTP answers for every API view."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tenants.services import TenantLifecycleError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, TenantLifecycleError):
        exc = exceptions.APIException(detail=str(exc))
        exc.status_code = 409
    return drf_exception_handler(exc, context)


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=&offset=` with both bounded: the database takes neither above 2**63, and no
    client needs more than `max_limit` rows a page."""

    max_limit = 1000
    max_offset = 10**12

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), self.max_offset)
