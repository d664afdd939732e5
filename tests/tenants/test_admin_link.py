"""The tenant admin's set-password link: e-mailed at creation with its expiry shown, and a
new one issued by the super-admin from the site, the API and the CLI when it is lost."""

from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django_tenants.utils import schema_context

from accounts.models import User
from accounts.services import api_token_create
from audit.models import AuditEvent
from tenants.models import TenantEvent


def link_in(text: str, slug: str) -> str:
    start = text.index(f"https://{slug}.localhost/account/")
    return text[start:].split()[0].split('"')[0]


def opens(url: str) -> bool:
    """Whether the link opens the set-password form on its tenant's site."""
    path = "/" + url.split("/", 3)[3]
    host = url.split("/")[2]
    page = Client(HTTP_HOST=host).get(path, secure=True, follow=True)
    return page.status_code == 200 and "new_password1" in page.content.decode()


def test_creation_mails_the_link_and_the_page_says_when_it_expires(
    superadmin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        page = superadmin_client.post(
            "/tenants/new/",
            {
                "slug": "mailed",
                "name": "Mailed Clinic",
                "admin_email": "it@mailed.example",
                "ae_title": "MAILED",
                "quota_gib": 10,
                "quota_users": 5,
            },
        ).content.decode()
    assert "Link expires" in page and "e-mailed to <strong>it@mailed.example</strong>" in page
    (message,) = [m for m in mail.outbox if m.to == ["it@mailed.example"]]
    assert "was created with you as its admin" in message.body
    assert link_in(message.body, "mailed") == link_in(page, "mailed")
    assert opens(link_in(message.body, "mailed"))


def test_the_super_admin_issues_a_new_link_from_the_site(
    superadmin_client, new_tenant, django_capture_on_commit_callbacks
):
    tenant = new_tenant("relink").tenant
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        page = superadmin_client.post(f"/tenants/{tenant.slug}/admin-link/").content.decode()
    assert "A new set-password link for admin" in page and "Link expires" in page
    (message,) = mail.outbox
    assert link_in(message.body, "relink") == link_in(page, "relink")
    assert opens(link_in(page, "relink"))
    assert TenantEvent.objects.filter(tenant=tenant, action="admin-link").exists()
    with schema_context(tenant.schema_name):
        event = AuditEvent.objects.get(action="user.set_password_link")
    assert event.details["issued_by"] == "root" and event.actor_name == "platform: root"
    detail = superadmin_client.get(f"/tenants/{tenant.slug}/").content.decode()
    assert f'action="/tenants/{tenant.slug}/admin-link/"' in detail


def test_the_api_and_the_cli_issue_one_too(superadmin, new_tenant, alpha_admin):
    tenant = new_tenant("relink-api").tenant
    _, raw = api_token_create(user=superadmin, name="automation")
    api = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {raw}")
    answer = api.post(
        f"/api/v1/tenants/{tenant.slug}/admin-link/", {}, content_type="application/json"
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["username"] == "admin" and opens(body["url"]) and body["expires_at"]
    missing = api.post(
        f"/api/v1/tenants/{tenant.slug}/admin-link/",
        {"username": "nobody"},
        content_type="application/json",
    )
    assert missing.status_code == 400 and "no active admin named nobody" in missing.content.decode()

    out = StringIO()
    call_command("tenant", "admin-link", tenant.slug, stdout=out)
    assert "e-mailed to:" in out.getvalue() and opens(link_in(out.getvalue(), "relink-api"))


def test_a_tenant_without_an_active_admin_is_told_so(superadmin_client, new_tenant):
    tenant = new_tenant("no-admin").tenant
    with schema_context(tenant.schema_name):
        User.objects.update(is_active=False)
    answer = superadmin_client.post(f"/tenants/{tenant.slug}/admin-link/", follow=True)
    assert "has no active admin" in answer.content.decode()


@pytest.mark.parametrize("who", ["anonymous", "tenant admin"])
def test_only_the_super_admin_may_ask(who, alpha, alpha_admin_client):
    client = Client(HTTP_HOST="localhost") if who == "anonymous" else alpha_admin_client
    answer = client.post(f"/tenants/{alpha.slug}/admin-link/")
    assert answer.status_code in (302, 403, 404)
    assert not TenantEvent.objects.filter(tenant=alpha, action="admin-link").exists()
