"""Configuration API: the settings object, remote nodes (+ C-ECHO), retention rules (+ dry run)."""

from typing import Any, cast

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.permissions import Capability, HasCapability
from configuration import selectors, services
from configuration.api import serializers as s
from configuration.models import RemoteNode, RetentionRule
from tenants.models import Tenant


def _tenant(request: Request) -> Tenant:
    return request._request.tenant  # type: ignore[attr-defined]


def _actor(request: Request) -> User:
    return cast(User, request.user)  # HasCapability let only active tenant users through


def _settings_body(tenant: Tenant) -> dict[str, Any]:
    row = selectors.tenant_settings()
    return {
        "display_name": tenant.name,
        "ae_title": tenant.ae_title,
        **{field: getattr(row, field) for field in services.SETTINGS_FIELDS},
        "updated_at": row.updated_at,
    }


class SettingsView(APIView):
    """The tenant's settings as one object; PATCH changes any subset, all or nothing."""

    permission_classes = [HasCapability]
    capability = Capability.SETTINGS_VIEW
    write_capability = Capability.SETTINGS_MANAGE
    serializer_class = s.SettingsOutput

    def get(self, request: Request) -> Response:
        return Response(s.SettingsOutput(_settings_body(_tenant(request))).data)

    @extend_schema(request=s.SettingsUpdateInput, responses=s.SettingsOutput)
    def patch(self, request: Request) -> Response:
        data = s.SettingsUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = _tenant(request)
        services.settings_update(
            tenant=tenant, actor=_actor(request), request=request._request, **data.validated_data
        )
        return Response(s.SettingsOutput(_settings_body(tenant)).data)


class NodeViewSet(viewsets.GenericViewSet):
    """Remote DICOM nodes; `echo` sends a C-ECHO now and keeps the answer as the last status."""

    permission_classes = [HasCapability]
    capability = Capability.SETTINGS_VIEW
    write_capability = Capability.SETTINGS_MANAGE
    serializer_class = s.NodeOutput
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[RemoteNode]:
        return selectors.node_list()

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.NodeOutput(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.NodeOutput(self.get_object()).data)

    @extend_schema(request=s.NodeInput, responses={201: s.NodeOutput})
    def create(self, request: Request) -> Response:
        data = s.NodeInput(data=request.data)
        data.is_valid(raise_exception=True)
        node = services.node_create(
            actor=_actor(request), request=request._request, **data.validated_data
        )
        return Response(s.NodeOutput(node).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.NodeInput, responses=s.NodeOutput)
    def update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=False)

    @extend_schema(request=s.NodeInput, responses=s.NodeOutput)
    def partial_update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=True)

    def _update(self, request: Request, *, partial: bool) -> Response:
        node = self.get_object()
        data = s.NodeInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        node = services.node_update(
            node=node, actor=_actor(request), request=request._request, **data.validated_data
        )
        return Response(s.NodeOutput(node).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.node_delete(
            node=self.get_object(), actor=_actor(request), request=request._request
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.EchoOutput)
    @action(detail=True, methods=["post"])
    def echo(self, request: Request, pk: str) -> Response:
        node = self.get_object()
        try:
            result = services.node_echo(
                node=node, tenant=_tenant(request), actor=_actor(request), request=request._request
            )
        except services.EchoLimited as limited:
            raise Throttled(wait=limited.retry_after, detail=str(limited)) from None
        body = {"ok": result.ok, "message": result.message, "rtt_ms": result.rtt_ms, "node": node}
        return Response(s.EchoOutput(body).data)


class RetentionRuleViewSet(viewsets.GenericViewSet):
    """Retention rules. Try a rule with `dry-run` first: it says what the rule would delete."""

    permission_classes = [HasCapability]
    capability = Capability.SETTINGS_VIEW
    write_capability = Capability.SETTINGS_MANAGE
    # A dry run changes nothing: whoever may read the settings may ask one.
    capabilities = {"dry_run": Capability.SETTINGS_VIEW}
    serializer_class = s.RuleOutput
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[RetentionRule]:
        return selectors.retention_rule_list()

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.RuleOutput(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.RuleOutput(self.get_object()).data)

    @extend_schema(request=s.RuleInput, responses={201: s.RuleOutput})
    def create(self, request: Request) -> Response:
        data = s.RuleInput(data=request.data)
        data.is_valid(raise_exception=True)
        rule = services.retention_rule_create(
            actor=_actor(request), request=request._request, **data.validated_data
        )
        return Response(s.RuleOutput(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.RuleInput, responses=s.RuleOutput)
    def update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=False)

    @extend_schema(request=s.RuleInput, responses=s.RuleOutput)
    def partial_update(self, request: Request, pk: str) -> Response:
        return self._update(request, partial=True)

    def _update(self, request: Request, *, partial: bool) -> Response:
        rule = self.get_object()
        data = s.RuleInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        confirm_short = bool(values.pop("confirm_short", False))
        rule = services.retention_rule_update(
            rule=rule,
            actor=_actor(request),
            request=request._request,
            confirm_short=confirm_short,
            **values,
        )
        return Response(s.RuleOutput(rule).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.retention_rule_delete(
            rule=self.get_object(), actor=_actor(request), request=request._request
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.DryRunInput, responses=s.DryRunOutput)
    @action(detail=False, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request) -> Response:
        data = s.DryRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        preview = selectors.retention_preview(**data.validated_data)
        body = {
            "studies": preview.studies,
            "bytes": preview.bytes,
            "cutoff": preview.cutoff,
            "available": preview.available,
            "summary": preview.summary,
        }
        return Response(s.DryRunOutput(body).data)
