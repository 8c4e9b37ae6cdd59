"""API keys of the served model: made with `alambic keys create`, shown once, stored as their SHA-256 in the
ledger. A key's id (not its secret) is what logs and metrics name."""

from __future__ import annotations

import hashlib
import secrets
import time

from alambic.errors import AlambicError
from alambic.store import ApiKey, Ledger

KEY_PREFIX = "alm-"
SCOPES = ("chat", "review")
LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(ledger: Ledger, name: str, scopes: list[str], limits: dict[str, int]) -> tuple[ApiKey, str]:
    """A new key and its secret, which is not stored and cannot be shown again."""
    if not name.strip() or len(name) > 64:
        raise AlambicError("key name: 1 to 64 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise AlambicError(f"key scope {unknown[0]!r}: not one of {', '.join(SCOPES)}")
    for limit, value in limits.items():
        if limit not in LIMIT_NAMES or value < 1:
            raise AlambicError(f"key limit {limit}: a positive number of {' or '.join(LIMIT_NAMES)}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(f"key-{secrets.token_hex(4)}", name, digest(secret), sorted(set(scopes)), limits, time.time())
    ledger.put_api_key(key)
    return key, secret


def verified_key(ledger: Ledger, authorization: str | None) -> ApiKey | None:
    """The live key a request's `Authorization: Bearer …` header names; None for none, a wrong or a revoked one."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    key = ledger.api_key_by_hash(digest(authorization[7:].strip()))
    return key if key is not None and key.revoked_at is None else None


def live_keys(ledger: Ledger) -> list[ApiKey]:
    return [key for key in ledger.api_keys() if key.revoked_at is None]
