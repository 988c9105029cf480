"""Secrets at rest, password hashes and bearer tokens.

- ``SecretBox`` encrypts what must never be stored in the clear (kubeconfigs, config secrets and
  channel credentials) with Fernet (AES-128-CBC + HMAC-SHA256). The keys come from
  ``GAIA_SECRET_KEY``: several comma-separated keys make a ``MultiFernet``, the first encrypts and
  every one decrypts, so a key is rotated by putting a new one first, re-encrypting
  (``gaia secrets rotate``) and then dropping the old one. Without ``GAIA_SECRET_KEY`` a key file
  is made once in the data dir; that only works when the data dir is the database's (embedded
  SQLite): replicas sharing a PostgreSQL database each have their own data dir and would each
  make a key the others cannot read, so a shared database refuses to start without the key.
- Passwords are argon2id hashes (argon2-cffi's defaults follow RFC 9106's recommendation).
  Verifying one costs tens of milliseconds of CPU by design, so at most ``VERIFY_SLOTS`` (the
  CPUs this process may use) run at once in the process: a flood of logins waits for a slot
  (at most ``VERIFY_WAIT_SECONDS``, then 429; at most ``VERIFY_QUEUE`` wait, the rest are 429 at
  once) instead of queueing unbounded CPU work or tying up every worker thread. Callers run
  it in a worker thread, never on the event loop (the login route is a sync route). Which
  attempts get that far at all is the login throttle's business (``gaia.store.throttle``).
- Tokens are 32 random bytes shown once; only their SHA-256 is stored, so a database leak does
  not hand out sessions. SHA-256 (not argon2) is right here: the token is high-entropy, and every
  request checks one, so it must be cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

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


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


VERIFY_SLOTS = max(1, _usable_cpus())
VERIFY_WAIT_SECONDS = 5.0
# Logins that may wait for a slot at once. A waiting login holds one of the worker threads that
# every sync route shares (40 by default), so the queue is bounded too: a flood from many
# addresses can take at most VERIFY_SLOTS + VERIFY_QUEUE of them; the rest are refused at once.
VERIFY_QUEUE = 4 * VERIFY_SLOTS + 4
_verify_slots = threading.BoundedSemaphore(VERIFY_SLOTS)
_verify_admitted = threading.BoundedSemaphore(VERIFY_SLOTS + VERIFY_QUEUE)


def _busy() -> TooManyRequests:
    return TooManyRequests(
        "the platform is busy checking other passwords; retry in a few seconds",
        retry_after=max(1, round(VERIFY_WAIT_SECONDS)),
    )


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; ``TooManyRequests`` at once when ``VERIFY_QUEUE`` logins
    already wait, or when no verification slot frees up in ``VERIFY_WAIT_SECONDS`` (the process
    is flooded with password checks)."""
    if not _verify_admitted.acquire(blocking=False):
        raise _busy()
    try:
        if not _verify_slots.acquire(timeout=VERIFY_WAIT_SECONDS):
            raise _busy()
        try:
            return bool(_hasher.verify(password_hash, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        finally:
            _verify_slots.release()
    finally:
        _verify_admitted.release()


# A hash to verify against when the user does not exist, so that a login for an unknown user
# costs the same time as one with a wrong password (no user enumeration by timing).
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(15)


KEY_FILE_NAME = "secret.key"


class SecretKeyError(RuntimeError):
    """The secret key configuration cannot work: missing where it is required, or malformed.
    Raised at start-up, before anything is encrypted."""


def parse_secret_keys(value: str | bytes) -> list[bytes]:
    """The comma-separated Fernet keys in ``value``, in order (blanks around commas ignored)."""
    text = value.decode("ascii") if isinstance(value, bytes) else value
    return [k.strip().encode("ascii") for k in text.split(",") if k.strip()]


class SecretBox:
    """Symmetric encryption for values stored at rest, with one or more keys: the first
    encrypts, all decrypt (``MultiFernet``)."""

    def __init__(self, keys: str | bytes | Sequence[bytes]) -> None:
        key_list = parse_secret_keys(keys) if isinstance(keys, (str, bytes)) else list(keys)
        if not key_list:
            raise SecretKeyError("GAIA_SECRET_KEY holds no key")
        fernets = []
        for position, key in enumerate(key_list, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                raise SecretKeyError(
                    f"GAIA_SECRET_KEY: key {position} of {len(key_list)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with "
                    "Fernet.generate_key() from the cryptography package)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._first_key = key_list[0]
        self.key_count = len(fernets)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. signing list cursors), derived from the first
        secret key with HMAC-SHA256: every replica with the same ``GAIA_SECRET_KEY`` derives the
        same key, and the derived key reveals nothing of the secret one."""
        return hmac.new(
            self._first_key, b"gaia-derive\0" + purpose.encode(), hashlib.sha256
        ).digest()

    @classmethod
    def from_settings(
        cls, *, secret_key: str, data_dir: Path, shared_database: bool = False
    ) -> SecretBox:
        """The box for ``GAIA_SECRET_KEY``; without it, the data dir's key file (made on first
        start), unless the database is shared (PostgreSQL): then ``SecretKeyError``."""
        if secret_key:
            return cls(secret_key)
        key_file = data_dir / KEY_FILE_NAME
        if shared_database:
            hint = (
                f" This data dir already has a key ({key_file}): if this platform ran with it, "
                "use its content, or secrets stored so far cannot be read."
                if key_file.exists()
                else ""
            )
            raise SecretKeyError(
                "GAIA_SECRET_KEY is required with a shared database (PostgreSQL): every "
                "replica must encrypt and decrypt with the same key, and a key made per data "
                "dir is not shared. Set GAIA_SECRET_KEY to a Fernet key (make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`) on every replica." + hint
            )
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
            raise ValueError(_UNDECRYPTABLE) from None

    def rotate(self, ciphertext: bytes) -> bytes:
        """``ciphertext`` encrypted again with the first key (readable with any key);
        ``ValueError`` if no key reads it."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise ValueError(_UNDECRYPTABLE) from None


_UNDECRYPTABLE = (
    "stored secret cannot be decrypted: GAIA_SECRET_KEY or the data dir's secret.key differs "
    "from the key it was encrypted with (keep the old key after the new one in GAIA_SECRET_KEY "
    "until `gaia secrets rotate` has run)"
)
