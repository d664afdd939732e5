"""Test settings: the project's settings with only what tests must change."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-secret-key-for-the-test-suite-only-0123456789")
os.environ.setdefault("DEBUG", "false")

from portal.settings import *  # noqa: F403
from portal.settings import BASE_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# One storage root per test session (or the one a parent process chose, so that a server
# started by a test and the test itself agree on where tenant files live).
if not os.environ.get("PORTAL_STORAGE_ROOT"):
    os.environ["PORTAL_STORAGE_ROOT"] = tempfile.mkdtemp(prefix="portal-test-storage-")
PORTAL_STORAGE_ROOT = Path(os.environ["PORTAL_STORAGE_ROOT"])
ALLOWED_HOSTS = ["localhost", ".localhost", "testserver"]
PORTAL_TRUSTED_PROXIES = ["10.9.8.7/32"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STATICFILES_DIRS = [BASE_DIR / "static"]
