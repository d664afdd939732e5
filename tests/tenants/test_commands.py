"""`manage.py tenant ...`: the same lifecycle from a terminal, with --help and clear errors."""

import json
import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_exists

from tenants.models import Tenant, TenantStatus


def run(*args: str) -> str:
    out = StringIO()
    call_command("tenant", *args, stdout=out)
    return out.getvalue()


def test_create_list_suspend_resume_delete_purge(alpha):
    out = run(
        "create",
        "cli-made",
        "--name",
        "CLI Made",
        "--admin-email",
        "it@cli.example",
        "--ae-title",
        "CLIMADE",
    )
    tenant = Tenant.all_objects.get(slug="cli-made")
    try:
        assert "https://cli-made.localhost/account/set-password/" in out
        rows = [json.loads(line) for line in run("list", "--json").splitlines()]
        assert {"slug": "cli-made", "status": "active"}.items() <= next(
            r for r in rows if r["slug"] == "cli-made"
        ).items()
        assert "cli-made: suspended" in run("suspend", "cli-made", "--reason", "test")
        assert "cli-made: active" in run("resume", "cli-made")
        with pytest.raises(CommandError, match="Type “cli-made”"):
            run("delete", "cli-made", "--confirm", "wrong")
        assert "cli-made: deleted" in run("delete", "cli-made", "--confirm", "cli-made")
        assert "cli-made: purged" in run("purge", "cli-made")
        assert not schema_exists("t_cli_made")
        history = run("show", "cli-made")
        assert "purge" in history and "by cli" in history
    finally:
        shutil.rmtree(tenant.storage_root, ignore_errors=True)


def test_errors_are_clear_and_create_nothing(alpha):
    with pytest.raises(CommandError, match="slug: .*reserved"):
        run("create", "admin", "--name", "x", "--admin-email", "a@b.example")
    with pytest.raises(CommandError, match="admin_email"):
        run("create", "valid-slug", "--name", "x", "--admin-email", "nope")
    with pytest.raises(CommandError, match="no tenant with slug 'ghost'"):
        run("suspend", "ghost")
    with pytest.raises(CommandError, match="Cannot resume"):
        run("resume", "alpha")
    assert not Tenant.objects.filter(slug__in=["admin", "valid-slug"]).exists()
    assert Tenant.objects.get(slug="alpha").status == TenantStatus.ACTIVE


def test_every_subcommand_has_help(capsys):
    for sub in ["", "create", "list", "show", "suspend", "resume", "delete", "restore", "purge"]:
        with pytest.raises(SystemExit) as exit_:
            call_command("tenant", *([sub] if sub else []), "--help")
        assert exit_.value.code == 0
        assert "usage:" in capsys.readouterr().out
