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

import datetime as dt
import hashlib
import os
import secrets
import threading
from collections import defaultdict, deque
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, InvalidToken

from gaia.domain.errors import TooManyRequests

TOKEN_PREFIX = "gaia_"  # noqa: S105 (marks a token in logs and scanners)

_hasher = PasswordHasher()


def use_cheap_password_hashing() -> None:
    """For test suites only: argon2 with minimal cost, so creating users takes microseconds.

    Hashes made this way still verify with the production hasher (argon2 stores its
    parameters in the hash), and production never calls this.
    """
    global _hasher
    _hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


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


MAX_FAILURES = 10
FAILURE_WINDOW = dt.timedelta(minutes=5)


class LoginThrottle:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[dt.datetime]] = defaultdict(deque)

    def check(self, username: str, now: dt.datetime) -> None:
        with self._lock:
            recent = self._failures.get(username)
            if recent is None:
                return
            while recent and now - recent[0] > FAILURE_WINDOW:
                recent.popleft()
            if len(recent) >= MAX_FAILURES:
                raise TooManyRequests(
                    "too many failed logins for this user; wait a few minutes and try again"
                )

    def failed(self, username: str, now: dt.datetime) -> None:
        with self._lock:
            self._failures[username].append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)
