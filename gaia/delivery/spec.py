"""What a build is asked to do (``BuildSpec``), checked before anything runs.

A spec arrives from a user's pipeline settings, so every field that reaches a command line or a
path is validated here, once: the git URL (https, file:// or an absolute local path; never
credentials inside it), the branch, the Dockerfile and context paths (relative, inside the
repository: no ``..``, no absolute path), the build args (bounded in number and size, names as
Docker accepts them), the target image reference. Secrets (the git token, the registry password)
travel in their own fields so the executor knows exactly which values to redact from the logs.
A bad spec raises ``BuildSpecError`` with a message that names the field and the rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

MAX_BUILD_ARGS = 64
MAX_BUILD_ARG_NAME = 128
MAX_BUILD_ARG_VALUE = 4096
MAX_PATH_CHARS = 1024

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BUILD_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# git check-ref-format, the parts a branch name can break: no leading dash (an option), no
# "..", "//", "@{", control characters, spaces or ~^:?*[\ ; not ending in "/", "." or ".lock"
_BRANCH = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[^\x00-\x20\x7f~^:?*\[\\]{1,255}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?P<registry>(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(?::[0-9]{{1,5}})?)"
    rf"/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
)


class BuildSpecError(ValueError):
    """A build spec breaks a rule; the message names the field and what to change."""


@dataclass(frozen=True)
class GitCredentials:
    """HTTPS credentials for the clone: a user name and a token (or password)."""

    username: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class StepTimeouts:
    """Seconds each step may run before its process group is killed."""

    clone: float = 300
    build: float = 3600
    push: float = 900


@dataclass(frozen=True)
class BuildSpec:
    """One build: clone ``git_url`` at ``branch``, build ``dockerfile`` in ``context``, push
    to ``image``.

    ``cache_dir`` holds buildah's storage (the layer cache): give every build of one business
    the same directory, and different businesses different ones. ``work_dir`` is where the
    clone and the build's temporary files go; each build makes its own folder in it and removes
    it when done. ``registry_insecure`` talks plain HTTP (and skips TLS checks) to registries,
    for tests and lab registries only.
    """

    git_url: str
    branch: str
    image: str
    cache_dir: Path
    work_dir: Path
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: Mapping[str, str] = field(default_factory=dict)
    git_credentials: GitCredentials | None = None
    registry_credentials: RegistryCredentials | None = None
    registry_insecure: bool = False
    timeouts: StepTimeouts = field(default_factory=StepTimeouts)
    commit: str | None = None
    pinned_addresses: tuple[str, ...] = ()
    # the CA bundle (PEM) that signs the target registry's certificate, when it is private
    registry_ca_pem: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_git_url(self.git_url)
        if not _BRANCH.fullmatch(self.branch) or self.branch.endswith(("/", ".", ".lock")):
            raise BuildSpecError(f"branch {self.branch!r} is not a valid git branch name")
        _check_relative("dockerfile", self.dockerfile)
        _check_relative("context", self.context)
        _check_build_args(self.build_args)
        if not _IMAGE.fullmatch(self.image):
            raise BuildSpecError(
                f"image {self.image!r} must read registry/repository[:tag], "
                "e.g. registry.example.com/team/app:1.2 (lower-case repository, no digest)"
            )
        if self.commit is not None and not _COMMIT.fullmatch(self.commit):
            raise BuildSpecError(
                f"commit {self.commit[:80]!r} must be a full commit id (40 or 64 hex digits)"
            )
        for address in self.pinned_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise BuildSpecError(f"pinned address {address[:80]!r} is not an IP") from None
        if self.registry_ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in (
            self.registry_ca_pem
        ):
            raise BuildSpecError("registry_ca_pem must hold PEM certificates")
        if self.pinned_addresses and not self.git_url.startswith("https://"):
            raise BuildSpecError("pinned addresses apply to an https:// git URL only")
        if self.git_credentials is not None and not self.git_url.startswith("https://"):
            raise BuildSpecError("git credentials are only sent to an https:// git URL")
        # a frozen dataclass cannot assign: the mapping is copied so the caller cannot change
        # the build args of a spec after it was checked
        object.__setattr__(self, "build_args", dict(self.build_args))

    @property
    def registry(self) -> str:
        """The registry host (and port) of ``image``: where the push goes and the credentials
        apply."""
        found = _IMAGE.fullmatch(self.image)
        assert found is not None  # checked in __post_init__
        return found.group("registry")

    @property
    def clone_url(self) -> str:
        """The URL git is given: a local path becomes file:// so that a shallow clone is
        shallow (git ignores --depth for a plain path)."""
        if self.git_url.startswith("/"):
            return Path(self.git_url).as_uri()
        return self.git_url

    @property
    def curl_resolve(self) -> str | None:
        """git's ``http.curloptResolve`` entry (``host:port:addr,...``) that makes the clone
        connect only to ``pinned_addresses``, the ones the egress check allowed: git does not
        resolve the name again, so an answer that changes after the check is never used."""
        if not self.pinned_addresses:
            return None
        parts = urlsplit(self.git_url)
        shown = ",".join(f"[{a}]" if ":" in a else a for a in self.pinned_addresses)
        return f"{parts.hostname}:{parts.port or 443}:{shown}"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value of this spec, for the log redaction."""
        values: list[str] = []
        if self.git_credentials is not None:
            values.append(self.git_credentials.token)
        if self.registry_credentials is not None:
            values.append(self.registry_credentials.password)
        return tuple(values)


def _check_git_url(url: str) -> None:
    if url.startswith("/"):
        if "\x00" in url or len(url) > MAX_PATH_CHARS:
            raise BuildSpecError("git_url: not a usable local path")
        return
    parts = urlsplit(url)
    if parts.scheme not in ("https", "file"):
        raise BuildSpecError(
            f"git_url {url!r}: use an https:// URL (file:// or an absolute path for local "
            "repositories)"
        )
    if parts.scheme == "https" and not parts.hostname:
        raise BuildSpecError(f"git_url {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise BuildSpecError(
            "git_url must not carry credentials; give them as git_credentials so they stay "
            "out of the logs"
        )
    if any(c in url for c in "\x00\n\r \t") or len(url) > MAX_PATH_CHARS:
        raise BuildSpecError("git_url contains spaces or control characters")


def _check_relative(name: str, value: str) -> None:
    if not value or len(value) > MAX_PATH_CHARS or "\x00" in value or "\\" in value:
        raise BuildSpecError(f"{name} {value!r} is not a usable path")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise BuildSpecError(f"{name} {value!r} must be relative to the repository root")
    if ".." in path.parts:
        raise BuildSpecError(f"{name} {value!r} must stay inside the repository (no '..')")


def _check_build_args(build_args: Mapping[str, str]) -> None:
    if len(build_args) > MAX_BUILD_ARGS:
        raise BuildSpecError(f"at most {MAX_BUILD_ARGS} build args, got {len(build_args)}")
    for name, value in build_args.items():
        if len(name) > MAX_BUILD_ARG_NAME or not _BUILD_ARG_NAME.fullmatch(name):
            raise BuildSpecError(
                f"build arg name {name[:MAX_BUILD_ARG_NAME]!r}: letters, digits and _ only, "
                f"not starting with a digit, at most {MAX_BUILD_ARG_NAME} characters"
            )
        if len(value) > MAX_BUILD_ARG_VALUE or "\x00" in value:
            raise BuildSpecError(
                f"build arg {name}: the value must be at most {MAX_BUILD_ARG_VALUE} characters "
                "without NUL"
            )
