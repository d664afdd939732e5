"""Tenant API endpoints about the caller."""

from typing import cast

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiToken, User
from portal.schemas import current_schema


class MeOutput(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.EmailField()
    role = serializers.CharField()
    tenant = serializers.CharField()
    token_scope = serializers.CharField(allow_null=True)


class MeView(APIView):
    """Who the request is authenticated as, in which tenant, with which token scope."""

    def get(self, request: Request) -> Response:
        user = cast(User, request.user)  # IsAuthenticated let only real users through
        token = request.auth if isinstance(request.auth, ApiToken) else None
        tenant = getattr(request._request, "tenant", None)
        body = {
            "username": user.get_username(),
            "email": user.email,
            "role": user.role,
            "tenant": tenant.slug if tenant else current_schema(),
            "token_scope": token.scope if token else None,
        }
        return Response(MeOutput(body).data)

    serializer_class = MeOutput
