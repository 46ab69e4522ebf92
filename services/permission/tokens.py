"""Bearer tokens: `nija_<token_id>_<secret>`, stored as (token_id, sha256(secret)).

The token id is a public handle (lookup key, audit logs, revocation); only the hash of the secret is stored,
so a leaked database yields no usable token. The secret is 256 random bits, so a fast hash is right:
slow password hashes (bcrypt, scrypt, argon2) exist to slow brute force of *low-entropy* human passwords,
and 2**256 guesses are out of reach at any hash speed, while bcrypt would add ~100 ms to every RPC.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets

PREFIX = "nija_"
#: Longer than any token we mint (61 chars): bounds the work spent on hostile input.
MAX_TOKEN_CHARS = 200
_TOKEN_RE = re.compile(r"nija_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class TokenKind(enum.StrEnum):
    """Who a token speaks for (see DESIGN.md "Security")."""

    USER = "user"
    STRATEGY = "strategy"
    ADMIN = "admin"
    SERVICE = "service"


def hash_secret(secret: str) -> str:
    """The stored form of a token secret: sha256 hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def mint() -> tuple[str, str, str]:
    """A new token: (token text to hand out once, token_id to store, secret_hash to store)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 43 chars of [A-Za-z0-9_-]; may contain '_', the id is fixed-width
    return f"{PREFIX}{token_id}_{secret}", token_id, hash_secret(secret)


def parse(token: object) -> tuple[str, str] | None:
    """(token_id, secret) of a well-formed token, else None (never raises on hostile input)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    match = _TOKEN_RE.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def verify(secret: str, secret_hash: str) -> bool:
    """Whether `secret` hashes to `secret_hash`, compared in constant time."""
    if not isinstance(secret, str) or not isinstance(secret_hash, str):
        return False
    if not secret.isascii() or not secret_hash.isascii():
        return False
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def bearer(metadata_value: object) -> str | None:
    """The token from an `authorization` value "Bearer <token>" (scheme case-insensitive), else None."""
    if isinstance(metadata_value, bytes):
        try:
            metadata_value = metadata_value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(metadata_value, str):
        return None
    parts = metadata_value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]
