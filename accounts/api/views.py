"""Tenant API about people: the caller (`me/`), the tenant's users and API tokens."""

from typing import Any, cast

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api import serializers as s
from accounts.models import ApiToken, User
from accounts.permissions import Capability, HasCapability, request_allows, request_token
from accounts.selectors import UserFilter
from portal.schemas import current_schema
from tenants.models import Tenant


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
        token = request_token(request)
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


def _tenant(request: Request) -> Tenant:
    return request._request.tenant  # type: ignore[attr-defined]


def _manages_users(request: Request) -> bool:
    """Admins (with a full token or a session) act on other users' tokens too."""
    return request_allows(request, Capability.USERS_MANAGE)


def _with_link(link: services.SetPasswordLink) -> dict[str, Any]:
    return {**s.UserOutput(link.user).data, "set_password_url": link.url}


class UserViewSet(viewsets.GenericViewSet):
    """The tenant's users. Invitations and resets answer with a one-time set-password link
    (also e-mailed); users are deactivated, never deleted."""

    permission_classes = [HasCapability]
    capability = Capability.USERS_MANAGE
    serializer_class = s.UserOutput
    queryset = User.objects.order_by("username")

    def get_queryset(self) -> QuerySet[User]:
        if self.action != "list":
            return User.objects.order_by("username")
        criteria = s.UserFilterInput(data=self.request.query_params.dict())
        criteria.is_valid(raise_exception=True)
        data = criteria.validated_data
        return selectors.user_search(
            UserFilter(
                query=data.get("search", ""),
                role=data.get("role", ""),
                is_active=data.get("is_active"),
            )
        )

    @extend_schema(parameters=[s.UserFilterInput], responses=s.UserOutput(many=True))
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.UserOutput(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.UserOutput(self.get_object()).data)

    @extend_schema(request=s.UserInviteInput, responses={201: s.UserLinkOutput})
    def create(self, request: Request) -> Response:
        data = s.UserInviteInput(data=request.data)
        data.is_valid(raise_exception=True)
        link = services.user_invite(
            request=request._request, tenant=_tenant(request), **data.validated_data
        )
        return Response(_with_link(link), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.UserUpdateInput, responses=s.UserOutput)
    def partial_update(self, request: Request, pk: str) -> Response:
        data = s.UserUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update(
            request=request._request, user=self.get_object(), **data.validated_data
        )
        return Response(s.UserOutput(user).data)

    @extend_schema(request=None, responses=s.UserOutput)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str) -> Response:
        user = services.user_deactivate(request=request._request, user=self.get_object())
        return Response(s.UserOutput(user).data)

    @extend_schema(request=None, responses=s.UserOutput)
    @action(detail=True, methods=["post"])
    def reactivate(self, request: Request, pk: str) -> Response:
        user = services.user_reactivate(
            request=request._request, tenant=_tenant(request), user=self.get_object()
        )
        return Response(s.UserOutput(user).data)

    @extend_schema(request=None, responses=s.UserLinkOutput)
    @action(detail=True, methods=["post"], url_path="reset-password")
    def reset_password(self, request: Request, pk: str) -> Response:
        link = services.user_password_reset(
            request=request._request, tenant=_tenant(request), user=self.get_object()
        )
        return Response(_with_link(link))


class TokenViewSet(viewsets.GenericViewSet):
    """The caller's API tokens (admins: anyone's, with `?user=`). The secret appears once,
    in the answer to its creation; revoked tokens stay listed with their revocation time."""

    permission_classes = [HasCapability]
    capability = Capability.TOKENS_OWN
    serializer_class = s.TokenOutput
    queryset = ApiToken.objects.none()

    def get_queryset(self) -> QuerySet[ApiToken]:
        tokens = selectors.token_list()
        if self.action == "list":
            criteria = s.TokenFilterInput(data=self.request.query_params.dict())
            criteria.is_valid(raise_exception=True)
            owner = criteria.validated_data.get("user", self.request.user.pk)
            if owner != self.request.user.pk and not _manages_users(self.request):
                raise exceptions.PermissionDenied("Only admins see other users' tokens.")
            return tokens.filter(user_id=owner)
        if _manages_users(self.request):
            return tokens
        return tokens.filter(user=cast(User, self.request.user))

    @extend_schema(parameters=[s.TokenFilterInput], responses=s.TokenOutput(many=True))
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.TokenOutput(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(s.TokenOutput(self.get_object()).data)

    @extend_schema(request=s.TokenCreateInput, responses={201: s.TokenCreatedOutput})
    def create(self, request: Request) -> Response:
        data = s.TokenCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        owner = cast(User, request.user)
        owner_id = data.validated_data.pop("user", owner.pk)
        if owner_id != owner.pk:
            if not _manages_users(request):
                raise exceptions.PermissionDenied("Only admins create tokens for other users.")
            owner = User.objects.filter(pk=owner_id).first()  # type: ignore[assignment]
            if owner is None:
                raise exceptions.ValidationError({"user": "No user has this id."})
        token, raw = services.api_token_create(
            request=request._request, user=owner, **data.validated_data
        )
        body = {**s.TokenOutput(token).data, "token": raw}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.api_token_revoke(request=request._request, token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.TokenOutput)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        token = services.api_token_revoke(request=request._request, token=self.get_object())
        return Response(s.TokenOutput(token).data)
