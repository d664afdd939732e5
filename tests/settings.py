"""Test settings: the project's settings with only what tests must change."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-for-the-test-suite-only-0123456789")
os.environ.setdefault("DEBUG", "false")

from portal.settings import *  # noqa: E402,F403
from portal.settings import BASE_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# One storage root for the whole session; tests that write files use their own tenants.
PORTAL_STORAGE_ROOT = __import__("pathlib").Path(
    tempfile.mkdtemp(prefix="portal-test-storage-", dir=os.environ.get("TMPDIR")))
ALLOWED_HOSTS = ["localhost", ".localhost", "testserver"]
PORTAL_TRUSTED_PROXIES = ["10.9.8.7/32"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
STORAGES = {**STORAGES, "staticfiles": {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STATICFILES_DIRS = [BASE_DIR / "static"]
