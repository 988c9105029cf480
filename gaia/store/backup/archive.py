"""The backup archive: one uncompressed tar, ``manifest.json`` first, then the parts.

::

    manifest.json                 format, Gaia version, schema revision, dialect, key reference,
                                  row counts, and per part: path, kind, size, sha256
    database/gaia.db              SQLite (the online backup API's copy), or
    database/gaia.pgdump          PostgreSQL (pg_dump's custom format, already compressed)
    etcd/<cluster>.db             one etcd snapshot per cluster Gaia has etcd access to
    secret-key/secret.key         only with ``--include-secret-key``

The manifest is written last into the tar's first member: the parts are staged as files, hashed,
and only then is the tar written, so an archive either has a manifest that describes every part
or is not an archive. ``open_archive`` checks everything before anything is restored: the
format and schema against this Gaia (a newer one is refused: old code must not run a newer
schema), each part's size and SHA-256 (a truncated or altered archive is refused), and that no
member escapes its folder (a tar is untrusted input).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what to do."""


class ArchiveRefused(BackupError):
    """An archive that restore will not touch: corrupt, truncated, or from a newer Gaia."""


@dataclass(frozen=True)
class Part:
    path: str  # inside the archive
    kind: str  # "database" | "etcd" | "secret-key"
    size: int
    sha256: str
    cluster: str = ""


@dataclass
class KeyReference:
    """Where the secret key came from and how to recognise it again; never the key itself."""

    source: str  # "GAIA_SECRET_KEY" or the key file's path
    fingerprints: list[str]  # of each key, first (the encrypting one) first
    included: bool = False


@dataclass
class Manifest:
    gaia_version: str
    created_at: str
    dialect: str  # "sqlite" | "postgresql"
    schema_revision: str
    key: KeyReference
    row_counts: dict[str, int]
    parts: list[Part] = field(default_factory=list)
    tool_versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        raw["key"] = KeyReference(**raw["key"])
        raw["parts"] = [Part(**p) for p in raw["parts"]]
        return cls(**raw)

    def part(self, kind: str) -> Part | None:
        return next((p for p in self.parts if p.kind == kind), None)


def key_fingerprint(key: bytes) -> str:
    """Names a key without revealing it (a salted SHA-256, 16 hex digits)."""
    return hashlib.sha256(b"gaia-backup-key\0" + key).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: Path, *, inside: str, kind: str, cluster: str = "") -> Part:
    return Part(
        path=inside, kind=kind, size=path.stat().st_size, sha256=sha256_file(path), cluster=cluster
    )


def write_archive(*, target: Path, manifest: Manifest, staged: dict[str, Path]) -> int:
    """Write the tar to ``target`` (through a temporary name, renamed when complete, so a
    crash leaves no file that looks like a backup); its size."""
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        data = manifest.to_json()
        info.size = len(data)
        info.mode = 0o600
        tar.addfile(info, io.BytesIO(data))
        for part in manifest.parts:
            tar.add(staged[part.path], arcname=part.path, recursive=False)
    partial.chmod(0o600)
    partial.replace(target)
    return target.stat().st_size


def read_manifest(archive: Path) -> Manifest:
    """The manifest alone (listing, ``gaia restore --check``); ``ArchiveRefused`` if none."""
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST:
                raise ArchiveRefused(f"{archive} is not a Gaia backup: it has no {MANIFEST} first")
            handle = tar.extractfile(member)
            if handle is None:
                raise ArchiveRefused(f"{archive}: {MANIFEST} is not a file")
            return Manifest.from_json(handle.read())
    except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveRefused(f"{archive} cannot be read as a Gaia backup: {exc}") from None


def open_archive(archive: Path, *, into: Path, known_revisions: set[str]) -> Manifest:
    """Check ``archive`` completely and unpack its parts under ``into``; the manifest.
    ``ArchiveRefused`` (nothing restored yet) for a newer format or schema, a part missing,
    a size or SHA-256 that differs, or a member outside the manifest."""
    manifest = read_manifest(archive)
    if manifest.format > FORMAT:
        raise ArchiveRefused(
            f"{archive} is backup format {manifest.format}; this Gaia reads up to {FORMAT}: "
            f"restore it with Gaia {manifest.gaia_version} or newer"
        )
    if manifest.schema_revision not in known_revisions:
        raise ArchiveRefused(
            f"{archive} holds a database at schema {manifest.schema_revision}, which this Gaia "
            f"does not know (it knows up to {max(known_revisions)}): it was taken by a newer "
            f"Gaia ({manifest.gaia_version}); restore it with that version"
        )
    expected = {p.path: p for p in manifest.parts}
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                part = expected.get(member.name)
                if part is None or not member.isfile():
                    raise ArchiveRefused(
                        f"{archive}: {member.name!r} is not a part its manifest lists: the "
                        "archive was altered"
                    )
                tar.extract(member, into, filter="data")
                seen.add(member.name)
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveRefused(f"{archive} is damaged (truncated or altered): {exc}") from None
    for path, part in expected.items():
        if path not in seen:
            raise ArchiveRefused(f"{archive}: part {path} is missing: the archive is incomplete")
        unpacked = into / path
        size, digest = unpacked.stat().st_size, sha256_file(unpacked)
        if size != part.size or digest != part.sha256:
            raise ArchiveRefused(
                f"{archive}: part {path} is corrupt ({size} bytes, sha256 {digest[:12]}…; the "
                f"manifest says {part.size} bytes, sha256 {part.sha256[:12]}…): use another backup"
            )
    return manifest


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """What ``gaia restore --check`` prints."""
    return {
        "gaia_version": manifest.gaia_version,
        "created_at": manifest.created_at,
        "dialect": manifest.dialect,
        "schema_revision": manifest.schema_revision,
        "secret_key": asdict(manifest.key),
        "parts": [asdict(p) for p in manifest.parts],
    }
