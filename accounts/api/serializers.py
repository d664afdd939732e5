"""Input and output shapes of the users and tokens API."""

from rest_framework import serializers

from accounts.models import ApiToken, Role, TokenScope, User


class UserOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "role",
            "is_active",
            "last_login",
            "date_joined",
        ]


class UserLinkOutput(UserOutput):
    set_password_url = serializers.CharField(
        help_text="One-time link for the user to choose a password. Shown only in this answer."
    )

    class Meta(UserOutput.Meta):
        fields = [*UserOutput.Meta.fields, "set_password_url"]


class UserFilterInput(serializers.Serializer):
    search = serializers.CharField(
        required=False, help_text="Part of the username, e-mail, first or last name."
    )
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)


class UserInviteInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    email = serializers.EmailField()
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class UserUpdateInput(serializers.Serializer):
    email = serializers.EmailField(required=False)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    role = serializers.ChoiceField(choices=Role.choices, required=False)


class TokenOutput(serializers.ModelSerializer):
    user = serializers.IntegerField(source="user_id")
    username = serializers.CharField(source="user.username")
    prefix = serializers.CharField(help_text="The public start of the token, to recognise it.")
    status = serializers.CharField(help_text="`active`, `expired` or `revoked`.")

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "user",
            "username",
            "prefix",
            "scope",
            "status",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]


class TokenCreatedOutput(TokenOutput):
    token = serializers.CharField(
        help_text="The secret bearer token. Shown only in this answer; only a hash is kept."
    )

    class Meta(TokenOutput.Meta):
        fields = [*TokenOutput.Meta.fields, "token"]


class TokenFilterInput(serializers.Serializer):
    user = serializers.IntegerField(
        required=False, help_text="Admins only: the tokens of this user id instead of your own."
    )


class TokenCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.FULL)
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Empty: after PORTAL_TOKEN_DEFAULT_DAYS (365 unless the platform changed it).",
    )
    user = serializers.IntegerField(
        required=False, help_text="Admins only: create the token for this user id."
    )
