"""Super-admin REST API: the same tenant operations as the site and `manage.py tenant`, and
the daily usage records."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from portal.schemas import current_schema
from tenants import selectors, services, usage
from tenants.api import serializers as s
from tenants.models import Domain, Tenant, UsageRecord


class IsSuperAdmin(permissions.BasePermission):
    message = "Only super-admins of the portal may use this API."

    def has_permission(self, request, view):
        return bool(
            request.user
            and request.user.is_authenticated
            and request.user.is_superuser
            and current_schema() == "public"
        )


class TenantViewSet(viewsets.GenericViewSet):
    permission_classes = [IsSuperAdmin]
    lookup_field = "slug"
    serializer_class = s.TenantOutput

    def get_queryset(self):
        include_purged = self.request.query_params.get("include_purged") == "true"
        tenants = selectors.tenant_list(include_purged=include_purged)
        if status_filter := self.request.query_params.get("status"):
            tenants = tenants.filter(status=status_filter)
        return tenants

    def _actor(self, request: Request) -> str:
        return f"{request.user.get_username()} (api)"

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.TenantOutput(page, many=True).data)

    def retrieve(self, request: Request, slug: str) -> Response:
        return Response(s.TenantOutput(self.get_object()).data)

    @extend_schema(request=s.TenantCreateInput, responses={201: s.TenantCreatedOutput})
    def create(self, request: Request) -> Response:
        data = s.TenantCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        creation = services.tenant_create(created_by=self._actor(request), **data.validated_data)
        body = {
            **s.TenantOutput(creation.tenant).data,
            "set_password_url": creation.set_password_url,
        }
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.TenantUpdateInput, responses=s.TenantOutput)
    def partial_update(self, request: Request, slug: str) -> Response:
        data = s.TenantUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = services.tenant_update(
            tenant=self.get_object(), actor=self._actor(request), **data.validated_data
        )
        return Response(s.TenantOutput(tenant).data)

    @extend_schema(request=s.TenantDeleteInput, responses=s.TenantOutput)
    def destroy(self, request: Request, slug: str) -> Response:
        data = s.TenantDeleteInput(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = services.tenant_delete(
            tenant=self.get_object(),
            actor=self._actor(request),
            confirm_slug=data.validated_data["confirm_slug"],
        )
        return Response(s.TenantOutput(tenant).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.TenantSuspendInput, responses=s.TenantOutput)
    @action(detail=True, methods=["post"])
    def suspend(self, request: Request, slug: str) -> Response:
        data = s.TenantSuspendInput(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = services.tenant_suspend(
            tenant=self.get_object(),
            actor=self._actor(request),
            reason=data.validated_data.get("reason", ""),
        )
        return Response(s.TenantOutput(tenant).data)

    @extend_schema(request=None, responses=s.TenantOutput)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, slug: str) -> Response:
        tenant = services.tenant_resume(tenant=self.get_object(), actor=self._actor(request))
        return Response(s.TenantOutput(tenant).data)

    @extend_schema(request=None, responses=s.TenantOutput)
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, slug: str) -> Response:
        tenant = services.tenant_restore(tenant=self.get_object(), actor=self._actor(request))
        return Response(s.TenantOutput(tenant).data)

    @extend_schema(request=s.AdminLinkInput, responses={201: s.AdminLinkOutput})
    @action(detail=True, methods=["post"], url_path="admin-link")
    def admin_link(self, request: Request, slug: str) -> Response:
        """A new set-password link for an admin of the tenant (the first active one unless
        `username` names another), e-mailed to them and returned once."""
        data = s.AdminLinkInput(data=request.data)
        data.is_valid(raise_exception=True)
        link = services.tenant_admin_link(
            tenant=self.get_object(),
            actor=self._actor(request),
            username=data.validated_data.get("username", ""),
        )
        output = {
            "username": link.user.username,
            "email": link.user.email,
            "url": link.url,
            "expires_at": link.expires_at,
        }
        return Response(s.AdminLinkOutput(output).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.DomainInput, responses={201: s.DomainOutput})
    @action(detail=True, methods=["post"])
    def domains(self, request: Request, slug: str) -> Response:
        data = s.DomainInput(data=request.data)
        data.is_valid(raise_exception=True)
        domain = services.domain_add(
            tenant=self.get_object(),
            actor=self._actor(request),
            domain=data.validated_data["domain"],
        )
        return Response(s.DomainOutput(domain).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"domains/(?P<domain_id>\d+)")
    def domain_remove(self, request: Request, slug: str, domain_id: str) -> Response:
        tenant: Tenant = self.get_object()
        domain = Domain.objects.filter(tenant=tenant, pk=domain_id).first()
        if domain is None:
            return Response({"detail": "No such domain."}, status=status.HTTP_404_NOT_FOUND)
        services.domain_remove(domain=domain, actor=self._actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UsageRecordViewSet(viewsets.GenericViewSet):
    """Daily usage records for billing, oldest day first; the same rows as /tenants/usage.csv."""

    permission_classes = [IsSuperAdmin]
    serializer_class = s.UsageRecordOutput
    queryset = UsageRecord.objects.none()
    filter_backends: list[type] = []

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First day (UTC), included."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last day (UTC), included."),
            OpenApiParameter("tenant", OpenApiTypes.STR, description="A tenant's slug."),
        ]
    )
    def list(self, request: Request) -> Response:
        chosen = usage.usage_filter_parse(request.query_params)
        records = usage.usage_records(tenant=chosen.tenant, first=chosen.first, last=chosen.last)
        page = self.paginate_queryset(records)
        return self.get_paginated_response(s.UsageRecordOutput(page, many=True).data)
