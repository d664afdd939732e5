"""Storage media API: the same services, rules and messages as the /storage/ pages."""

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import Capability, HasCapability
from studies.api import serializers as s
from studies.media import selectors, services
from studies.models import StorageMedium


class MediumFilter(filters.FilterSet):
    class Meta:
        model = StorageMedium
        fields = ["status", "kind"]


class MediumViewSet(viewsets.GenericViewSet):
    """Storage media of this tenant. Admins and operators read; only admins change them."""

    permission_classes = [HasCapability]
    capability = Capability.STORAGE_VIEW
    write_capability = Capability.STORAGE_MANAGE
    serializer_class = s.MediumOutput
    filterset_class = MediumFilter
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[StorageMedium]:
        return selectors.medium_list()

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=s.MediumCreateInput, responses={201: s.MediumOutput})
    def create(self, request: Request) -> Response:
        data = s.MediumCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        medium = services.medium_create(
            tenant=request.tenant,  # type: ignore[attr-defined]
            request=request._request,
            **data.validated_data,
        )
        return Response(self.get_serializer(medium).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.MediumUpdateInput, responses=s.MediumOutput)
    def partial_update(self, request: Request, pk: str) -> Response:
        data = s.MediumUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        medium = services.medium_update(
            tenant=request.tenant,  # type: ignore[attr-defined]
            medium=self.get_object(),
            request=request._request,
            **data.validated_data,
        )
        return Response(self.get_serializer(medium).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.medium_delete(
            tenant=request.tenant,  # type: ignore[attr-defined]
            medium=self.get_object(),
            request=request._request,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.MediumStatusInput, responses=s.MediumOutput)
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, pk: str) -> Response:
        data = s.MediumStatusInput(data=request.data)
        data.is_valid(raise_exception=True)
        medium = services.medium_set_status(
            tenant=request.tenant,  # type: ignore[attr-defined]
            medium=self.get_object(),
            status=data.validated_data["status"],
            request=request._request,
        )
        return Response(self.get_serializer(medium).data)

    @extend_schema(request=None, responses=s.ProbeOutput)
    @action(detail=True, methods=["post"])
    def probe(self, request: Request, pk: str) -> Response:
        result = services.medium_probe(
            tenant=request.tenant,  # type: ignore[attr-defined]
            medium=self.get_object(),
            request=request._request,
        )
        return Response(s.ProbeOutput(result).data)

    @extend_schema(request=None, responses=s.UsageOutput)
    @action(detail=False, methods=["post"], url_path="measure-usage")
    def measure_usage(self, request: Request) -> Response:
        measured = list(services.media_measure_usage())
        return Response(
            s.UsageOutput(
                {
                    "media": len(measured),
                    "files": sum(usage.files for _medium, usage in measured),
                    "bytes": sum(usage.bytes for _medium, usage in measured),
                }
            ).data
        )
