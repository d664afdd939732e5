"""Sealed settings: credentials the portal must use but never show back (an object storage
medium's secret key). Authenticated encryption (Fernet: AES-128-CBC with HMAC-SHA256) under
a key derived by HKDF from `PORTAL_SEALING_KEY`, or from `SECRET_KEY` when that is unset.

A sealed value is bound to what it belongs to (`context`, e.g. the medium's schema and id):
a token copied into another row, or another tenant's, does not open there.
"""

import base64
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

SECRET_LIMIT = 4096


class SealBroken(Exception):
    """The sealed value does not open with this key (changed key, or not ours)."""


@cache
def _fernet(material: str, context: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"pacs-portal sealed settings",
        info=context.encode(),
    ).derive(material.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _material() -> str:
    return settings.PORTAL_SEALING_KEY or settings.SECRET_KEY


def seal(value: str, *, context: str) -> str:
    if len(value) > SECRET_LIMIT:
        raise ValueError(f"a sealed value holds at most {SECRET_LIMIT} characters")
    return _fernet(_material(), context).encrypt(value.encode()).decode("ascii")


def unseal(token: str, *, context: str) -> str:
    try:
        return _fernet(_material(), context).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError) as error:
        raise SealBroken(
            "The stored credential cannot be opened with this deployment's sealing key "
            "(PORTAL_SEALING_KEY or SECRET_KEY changed?); enter it again."
        ) from error
