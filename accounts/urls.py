"""Pages of /users/: the tenant's people, their roles, passwords, second factors and tokens."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.UserListView.as_view(), name="user_list"),
    path("invite/", views.UserInviteView.as_view(), name="user_invite"),
    path("tokens/", views.TenantTokenListView.as_view(), name="user_token_list"),
    path("<int:pk>/", views.UserDetailView.as_view(), name="user_detail"),
    path("<int:pk>/edit/", views.UserEditView.as_view(), name="user_edit"),
    path(
        "<int:pk>/deactivate/",
        views.UserActionView.as_view(action="deactivate"),
        name="user_deactivate",
    ),
    path(
        "<int:pk>/reactivate/",
        views.UserActionView.as_view(action="reactivate"),
        name="user_reactivate",
    ),
    path(
        "<int:pk>/second-factor/remove/",
        views.UserActionView.as_view(action="remove_otp"),
        name="user_otp_remove",
    ),
    path(
        "<int:pk>/reset-password/",
        views.UserPasswordResetView.as_view(),
        name="user_password_reset",
    ),
]
