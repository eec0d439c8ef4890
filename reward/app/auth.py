"""Passwords and session tokens, with the standard library only.

Passwords are stored as `scrypt$n$r$p$salt_hex$hash_hex` (RFC 7914 scrypt, a fresh 16-byte salt per user), so
the cost parameters travel with each hash and can be raised later without breaking old accounts. Session
tokens are random 256-bit strings handed to the client once; the database keeps only their SHA-256, so a
leaked database does not leak live sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# n=2**14, r=8 uses 16 MiB and ~50 ms per hash: slow for guessing, fast enough for a login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Hash `password` with scrypt and a per-user random salt; returns the self-describing string."""
    if not password:
        raise ValueError("password: expected a non-empty string")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a string made by `hash_password` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(digest_hex) // 2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


# A valid-looking hash to verify against when the user does not exist, so a login for an unknown name
# costs the same time as one with a wrong password (no user enumeration by timing).
DUMMY_HASH = hash_password("not-a-real-password", salt=b"\0" * 16)


def new_token() -> str:
    """A fresh session token for the client."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()
