"""Account URLs shared by the super-admin site and tenant sites."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.AccountView.as_view(), name="account"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("set-password/<uidb64>/<token>/", views.SetPasswordView.as_view(), name="set_password"),
]
