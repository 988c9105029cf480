"""Secrets at rest, password hashes and bearer tokens.

- ``SecretBox`` encrypts what must never be stored in the clear (kubeconfigs, later secrets and
  channel credentials) with Fernet (AES-128-CBC + HMAC-SHA256). The key comes from
  ``GAIA_SECRET_KEY`` or a key file made once in the data dir.
- Passwords are argon2id hashes (argon2-cffi's defaults follow RFC 9106's recommendation).
- Tokens are 32 random bytes shown once; only their SHA-256 is stored, so a database leak does
  not hand out sessions. SHA-256 (not argon2) is right here: the token is high-entropy, and every
  request checks one, so it must be cheap.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, InvalidToken

TOKEN_PREFIX = "gaia_"  # noqa: S105 (marks a token in logs and scanners)

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return str(_hasher.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# A hash to verify against when the user does not exist, so that a login for an unknown user
# costs the same time as one with a wrong password (no user enumeration by timing).
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(15)


class SecretBox:
    """Symmetric encryption for values stored at rest."""

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, *, secret_key: str, data_dir: Path) -> SecretBox:
        if secret_key:
            return cls(secret_key)
        key_file = data_dir / "secret.key"
        if key_file.exists():
            return cls(key_file.read_bytes().strip())
        data_dir.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(key_file.read_bytes().strip())
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return cls(key)

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode("utf-8")
        except InvalidToken:
            raise ValueError(
                "stored secret cannot be decrypted: GAIA_SECRET_KEY or the data dir's "
                "secret.key differs from the key it was encrypted with"
            ) from None
