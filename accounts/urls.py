"""Pages of /users/: the tenant's people, their roles and tokens."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.UserListView.as_view(), name="user_list"),
]
