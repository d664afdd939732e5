"""Settings of a portal server behind the tests' nginx: tests/settings.py, trusting the proxy.

tests/settings.py pins PORTAL_TRUSTED_PROXIES to an address nothing uses; here it comes from
the environment (127.0.0.1/32: nginx runs on loopback), and HTTPS is required as in
production, so a request nginx passed without `X-Forwarded-Proto: https` would be redirected.
"""

import os

from tests.settings import *  # noqa: F403

PORTAL_TRUSTED_PROXIES = [
    net.strip() for net in os.environ.get("PORTAL_TRUSTED_PROXIES", "").split(",") if net.strip()
]
SECURE_SSL_REDIRECT = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
