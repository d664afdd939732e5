"""Read-only audit API with the same filters as the page."""

from django_filters import rest_framework as filters
from rest_framework import serializers, viewsets

from accounts.permissions import Capability, HasCapability
from audit.models import AuditEvent


class AuditEventOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "actor_name",
            "source_address",
            "action",
            "object_type",
            "object_id",
            "outcome",
            "details",
        ]


class AuditEventFilter(filters.FilterSet):
    since = filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")
    actor = filters.CharFilter(field_name="actor_name", lookup_expr="iexact")
    action = filters.CharFilter(field_name="action", lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = ["since", "until", "actor", "action", "object_type", "object_id", "outcome"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log of this tenant, newest first. Nobody can change it, not even admins."""

    permission_classes = [HasCapability]
    capability = Capability.AUDIT_VIEW
    serializer_class = AuditEventOutput
    filterset_class = AuditEventFilter
    queryset = AuditEvent.objects.order_by("-at", "-id")
