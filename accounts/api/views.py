"""Tenant API endpoints about the caller."""

from django.db import connection
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiToken


class MeOutput(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.EmailField()
    role = serializers.CharField()
    tenant = serializers.CharField()
    token_scope = serializers.CharField(allow_null=True)


class MeView(APIView):
    """Who the request is authenticated as, in which tenant, with which token scope."""

    def get(self, request: Request) -> Response:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        tenant = getattr(request._request, "tenant", None)
        body = {
            "username": request.user.get_username(),
            "email": request.user.email,
            "role": request.user.role,
            "tenant": tenant.slug if tenant else connection.schema_name,
            "token_scope": token.scope if token else None,
        }
        return Response(MeOutput(body).data)

    serializer_class = MeOutput
