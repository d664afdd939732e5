"""Test settings: the project's settings with only what tests must change."""

import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-secret-key-for-the-test-suite-only-0123456789")
os.environ.setdefault("DEBUG", "false")

from portal.settings import *  # noqa: F403
from portal.settings import BASE_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tenant files of the test database live beside it and last as long as it does (--reuse-db);
# exported so that servers started by tests agree with the tests on where files are.
_var = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / ".var" / "test"))
os.environ.setdefault("PORTAL_STORAGE_ROOT", str(_var / "storage"))
PORTAL_STORAGE_ROOT = Path(os.environ["PORTAL_STORAGE_ROOT"])
ALLOWED_HOSTS = ["localhost", ".localhost", "testserver"]
PORTAL_TRUSTED_PROXIES = ["10.9.8.7/32"]
# Test peers listen on 127.0.0.1 and test nodes sit on a "hospital LAN", 10.0.0.0/8; tests of
# the egress policy override this. Exported so that servers started by tests agree.
os.environ.setdefault("PORTAL_DICOM_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128,10.0.0.0/8")
PORTAL_DICOM_ALLOWED_NETWORKS = os.environ["PORTAL_DICOM_ALLOWED_NETWORKS"].split(",")
# Most tests log super-admins in with a password alone; tests of the policy switch it on.
PORTAL_SUPERADMIN_2FA = False
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STATICFILES_DIRS = [BASE_DIR / "static"]
