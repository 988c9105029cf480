"""Gaia's image registry: the token signer and the registry's configuration (docs/registry.md).

The registry is the CNCF distribution registry (Debian's ``docker-registry``). It trusts Gaia
for every request through the distribution token specification: a client without a token gets
``401`` with ``WWW-Authenticate: Bearer realm="<Gaia>/api/v1/registry/token",service=...,
scope=...``, asks Gaia's token endpoint (with Basic credentials: a user's name and an API token
or password, or none for public images), and retries with the JWT Gaia signed.

**The signing key** is an ECDSA P-256 key derived from ``GAIA_SECRET_KEY``
(``SecretBox.derive_key``): every replica signs with the same key and nothing more is stored.
The registry verifies a token by the certificate in its ``x5c`` header, which must chain to its
``rootcertbundle``: that certificate is self-signed by the same key, with fixed names and
validity, so every replica makes one the registry accepts. Rotating ``GAIA_SECRET_KEY`` rotates
the key: write the registry's configuration again (``gaia registry-config``) and restart it.

**Notifications**: the registry posts its events (pushes, pulls, deletes) to
``<Gaia>/api/v1/registry/events`` with ``Authorization: Bearer <notification token>``, a value
derived from the secret key as well; Gaia records repositories, tags, digests and sizes from
them, and who pushed.

``registry_config`` writes the registry's YAML; ``RegistryProcess`` runs ``docker-registry`` as
a child of ``gaia up`` when ``GAIA_REGISTRY_LISTEN`` is set (the embedded default). A production
registry runs apart (a Deployment) with the configuration ``gaia registry-config`` prints.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gaia.children import child_running, stop_child
from gaia.domain.errors import InvalidRequest
from gaia.domain.registry import parse_repository
from gaia.loop import LoopService
from gaia.security import SecretBox

log = logging.getLogger(__name__)

SERVICE = "gaia-registry"
PULL_ACCOUNT_PREFIX = "pull+"
NODE_ACCOUNT_PREFIX = "node+"
BUILD_ACCOUNT_PREFIX = "build+"
ISSUER = "gaia"
TOKEN_TTL_S = 300
# the fixed validity of the signing certificate: every replica makes the same one
_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_NOT_AFTER = dt.datetime(2120, 1, 1, tzinfo=dt.UTC)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str  # RFC 3339


class TokenSigner:
    """Signs the registry's bearer tokens with the key derived from the platform's secret."""

    def __init__(self, secrets: SecretBox, *, issuer: str = ISSUER, service: str = SERVICE):
        seed = secrets.derive_key("registry-token-signing-key")
        self._seed = secrets.derive_key("registry-passwords")
        scalar = int.from_bytes(hashlib.sha512(seed).digest(), "big") % (_P256_ORDER - 1) + 1
        self._key = ec.derive_private_key(scalar, ec.SECP256R1())
        self.issuer = issuer
        self.service = service
        self._notify_token = base64.urlsafe_b64encode(
            secrets.derive_key("registry-notifications")
        ).decode()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{issuer} registry tokens")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(scalar % (1 << 120) + 1)
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            # RFC 6979: the same key signs the same certificate on every replica, byte for byte
            .sign(self._key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        self.certificate_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    def derived_password(self, purpose: str) -> str:
        return (
            base64.urlsafe_b64encode(
                hmac.new(self._seed, purpose.encode(), hashlib.sha256).digest()
            )
            .decode()
            .rstrip("=")
        )

    @property
    def notification_token(self) -> str:
        """What the registry sends as ``Authorization: Bearer`` with its events."""
        return self._notify_token

    def notification_ok(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._notify_token.encode()
        )

    def issue(
        self, *, subject: str, access: list[dict[str, Any]], now: float | None = None
    ) -> IssuedToken:
        at = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": at + TOKEN_TTL_S,
            "nbf": at - 10,
            "iat": at,
            "jti": os.urandom(12).hex(),
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})
        issued = dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
        return IssuedToken(token, TOKEN_TTL_S, issued)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this signer issued (tests, and Gaia's own calls)."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self._key.public_key(),
            algorithms=["ES256"],
            audience=self.service,
            issuer=self.issuer,
        )
        return claims


def registry_config(
    *,
    signer: TokenSigner,
    listen: str,
    storage_dir: Path,
    bundle: Path,
    realm: str,
    events_url: str,
    tls: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """The registry's configuration: filesystem storage, deletes allowed (Gaia's API deletes
    tags), token auth against Gaia, events to Gaia; HTTPS with ``tls`` (certificate chain,
    key)."""
    http: dict[str, Any] = {"addr": listen, "headers": {"X-Content-Type-Options": ["nosniff"]}}
    if tls is not None:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    return {
        "version": 0.1,
        # warn: at info the registry writes a line per request (bench/cicd.py: a few % of a
        # loaded machine's pull throughput)
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": http,
        "auth": {
            "token": {
                "realm": realm,
                "service": signer.service,
                "issuer": signer.issuer,
                "rootcertbundle": str(bundle),
            }
        },
        "notifications": {
            "events": {"includereferences": True},
            "endpoints": [
                {
                    "name": "gaia",
                    "url": events_url,
                    "headers": {"Authorization": [f"Bearer {signer.notification_token}"]},
                    "timeout": "5s",
                    "threshold": 5,
                    "backoff": "2s",
                    # blob pulls are many and counted nowhere; manifest pulls are the images
                    # pulled (gaia_registry_pulls_total)
                    "ignore": {
                        "mediatypes": [
                            "application/octet-stream",
                            "application/vnd.oci.image.layer.v1.tar+gzip",
                            "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        ]
                    },
                }
            ],
        },
    }


def write_registry_files(
    *,
    signer: TokenSigner,
    folder: Path,
    listen: str,
    storage_dir: Path,
    realm: str,
    events_url: str,
    tls: tuple[Path, Path] | None = None,
) -> Path:
    """``folder/config.yml`` and ``folder/token-ca.pem`` (mode 0600: the config holds the
    notification token); the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "token-ca.pem"
    bundle.write_bytes(signer.certificate_pem)
    config = registry_config(
        signer=signer,
        listen=listen,
        storage_dir=storage_dir,
        bundle=bundle,
        realm=realm,
        events_url=events_url,
        tls=tls,
    )
    path = folder / "config.yml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


class RegistryProcess:
    """``docker-registry serve <config>`` as a child of this process."""

    def __init__(self, *, binary: str, config: Path, log_file: Path) -> None:
        self.binary = binary
        self.config = config
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 (a fixed binary, our own config)
                [self.binary, "serve", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("registry: started %s (pid %d)", self.binary, self.process.pid)

    def running(self) -> bool:
        return child_running(self.process)

    def stop(self, timeout_s: float = 10) -> None:
        stop_child(self.process, timeout_s=timeout_s)


class RegistryUnavailable(RuntimeError):
    """The registry did not answer as a registry should."""


MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


LOG_SCAN_MAX_BYTES = 16 * 1024 * 1024
REFUSAL_WINDOW_S = 10.0
MAX_REFUSALS_KEPT = 10_000
_LOG_FIELD = re.compile(r'([A-Za-z0-9_.]+)=("(?:[^"\\]|\\.)*"|\S*)')
_PULL_URI = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/[^/]+")


def failed_pull(line: str) -> str | None:
    """The namespace of a pull the registry answered with an error, from one line of its
    log (logrus text: ``msg="response completed with error" ... http.request.method=GET
    http.request.uri=/v2/<name>/manifests/<ref> ... http.response.status=404``); None for any
    other line. A GET of a manifest or blob, or a HEAD of a manifest (how containerd resolves a
    tag), counts; a HEAD of a blob does not (a push asks that of every layer it may skip), nor
    does a 401 (the challenge every client gets before it fetches its token)."""
    if "response completed with error" not in line:
        return None
    fields = {k: v.strip('"') for k, v in _LOG_FIELD.findall(line)}
    method = fields.get("http.request.method")
    status = fields.get("http.response.status", "")
    found = _PULL_URI.fullmatch(fields.get("http.request.uri", "").split("?", 1)[0])
    if found is None or not status.isdigit() or int(status) < 400 or status == "401":
        return None
    if not (method == "GET" or (method == "HEAD" and found.group("kind") == "manifests")):
        return None
    try:
        return parse_repository(found.group("name")).namespace
    except InvalidRequest:
        return None


class RegistryService:
    """The platform's registry: its addresses, the signer, Gaia's own calls to it (with tokens
    Gaia signs for itself) and, when ``listen`` is set, the child process."""

    def __init__(
        self,
        *,
        signer: TokenSigner,
        realm: str,
        events_url: str,
        listen: str = "",
        url: str = "",
        address: str = "",
        binary: str = "docker-registry",
        folder: Path | None = None,
        storage_dir: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.signer = signer
        self.realm = realm
        self.events_url = events_url
        self.listen = listen
        self.tls = tls
        self.ca_file = ca_file
        scheme = "https" if tls is not None else "http"
        self.url = (url or (f"{scheme}://{listen}" if listen else "")).rstrip("/")
        self.address = address or listen or self.url.split("://", 1)[-1]
        self.binary = binary
        self.folder = folder
        self.storage_dir = storage_dir
        self.process: RegistryProcess | None = None
        self._gc_lock = threading.Lock()
        # cluster -> (monotonic time of the listing, node -> businesses with an instance
        # there): node accounts (gaia.api.node_access); and the listing in flight per cluster
        self.node_cache: dict[str, tuple[float, Mapping[str, frozenset[str]]]] = {}
        self.node_listings: dict[str, tuple[float, asyncio.Task[Mapping[str, frozenset[str]]]]] = {}
        # (cluster, node) -> when that node was last looked up on a listing of its own
        self.node_rechecked: dict[tuple[str, str], float] = {}
        # (repository, digest) -> monotonic time the registry said the blob is linked there
        self.linked_cache: dict[tuple[str, str], float] = {}
        self.last_gc: GcResult | None = None
        # since this process started, per namespace: manifests pushed by tag, manifests served
        self.pushes: dict[str, int] = {}
        self.pulls: dict[str, int] = {}
        # failed pulls per namespace: refused by the token endpoint, or answered with an error
        # by the registry (its log, read by ``scan_log``)
        self.pull_errors: dict[str, int] = {}
        self._log_offset = 0
        self._log_lock = threading.Lock()
        self._refused: dict[tuple[str, str], float] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def ca_pem(self) -> str | None:
        """The CA bundle that signs the registry's certificate, when it is a private one."""
        if self.ca_file is None:
            return None
        return self.ca_file.read_text()

    def tls_verify(self) -> ssl.SSLContext | bool:
        """What Gaia's own HTTPS calls to the registry trust: the system's CAs and the
        configured bundle."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def count_pull_error(self, namespace: str) -> None:
        self.pull_errors[namespace] = self.pull_errors.get(namespace, 0) + 1

    def count_refused_pull(self, namespace: str, *, who: str, repository: str) -> None:
        """A pull the token endpoint refused. A client asks again for the same scope as it
        retries (skopeo asks three times), so one caller's refusals of one repository within
        ``REFUSAL_WINDOW_S`` count once: the figure is failed pulls, not token requests."""
        now = time.monotonic()
        key = (who, repository)
        with self._log_lock:
            if len(self._refused) > MAX_REFUSALS_KEPT:
                for k in [k for k, t in self._refused.items() if now - t > REFUSAL_WINDOW_S]:
                    del self._refused[k]
            seen = self._refused.get(key)
            self._refused[key] = now
            if seen is not None and now - seen < REFUSAL_WINDOW_S:
                return
            self.count_pull_error(namespace)

    def scan_log(self, *, max_bytes: int = LOG_SCAN_MAX_BYTES) -> int:
        """Count the failed pulls the registry logged since the last scan (at most
        ``max_bytes`` of new log per call); how many were found. Only the registry this process
        runs has a log here."""
        if self.folder is None:
            return 0
        path = self.folder / "registry.log"
        with self._log_lock:
            try:
                with path.open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < self._log_offset:  # a new file
                        self._log_offset = 0
                    f.seek(self._log_offset)
                    chunk = f.read(max_bytes)
            except FileNotFoundError:
                return 0
            end = chunk.rfind(b"\n") + 1  # whole lines only; the rest waits for the next scan
            self._log_offset += end
            found = 0
            for line in chunk[:end].decode("utf-8", errors="replace").splitlines():
                namespace = failed_pull(line)
                if namespace is not None:
                    self.count_pull_error(namespace)
                    found += 1
            return found

    def pull_credentials(self, business: str) -> tuple[str, str]:
        """The pull account of ``business``: what the platform puts in its apps' pull secrets
        (and the P2P agents' registries file). Derived from the secret key, never stored and
        never shown to tenants; ``+`` cannot occur in a user's name, so it names no user."""
        return f"{PULL_ACCOUNT_PREFIX}{business}", self.signer.derived_password(f"pull:{business}")

    def node_credentials(self, cluster: str, node: str) -> tuple[str, str]:
        """The account of node ``node`` of ``cluster`` (its P2P agent's credentials for this
        registry): pulls what the businesses with an instance on the node may pull."""
        return f"{NODE_ACCOUNT_PREFIX}{cluster}+{node}", self.signer.derived_password(
            f"node:{cluster}:{node}"
        )

    def node_account(self, username: str, password: str) -> tuple[str, str] | None:
        """(cluster, node) whose node account these credentials are, or None."""
        if not username.startswith(NODE_ACCOUNT_PREFIX):
            return None
        cluster, sep, node = username.removeprefix(NODE_ACCOUNT_PREFIX).partition("+")
        if not sep or not cluster or not node:
            return None
        expected = self.node_credentials(cluster, node)[1]
        if hmac.compare_digest(password.encode(), expected.encode()):
            return cluster, node
        return None

    def build_credentials(self, repository: str) -> tuple[str, str]:
        """The build account of one repository: what a pipeline's runner pushes with (push on
        ``repository``, pull on its business's). Derived from the secret key like the pull
        accounts, never stored; the runner hands it to buildah and the log redacts it."""
        return (
            f"{BUILD_ACCOUNT_PREFIX}{repository}",
            self.signer.derived_password(f"build:{repository}"),
        )

    def build_account(self, username: str, password: str) -> str | None:
        """The repository whose build account these credentials are, or None."""
        if not username.startswith(BUILD_ACCOUNT_PREFIX):
            return None
        repository = username.removeprefix(BUILD_ACCOUNT_PREFIX)
        expected = self.build_credentials(repository)[1]
        if hmac.compare_digest(password.encode(), expected.encode()):
            return repository
        return None

    def pull_account(self, username: str, password: str) -> str | None:
        """The business whose pull account these credentials are, or None."""
        if not username.startswith(PULL_ACCOUNT_PREFIX):
            return None
        business = username.removeprefix(PULL_ACCOUNT_PREFIX)
        expected = self.pull_credentials(business)[1]
        if hmac.compare_digest(password.encode(), expected.encode()):
            return business
        return None

    def config_path(self) -> Path:
        if self.folder is None:
            raise RegistryUnavailable("no folder for the registry's configuration")
        return write_registry_files(
            signer=self.signer,
            folder=self.folder,
            listen=self.listen or "0.0.0.0:5000",
            storage_dir=self.storage_dir or self.folder / "storage",
            realm=self.realm,
            events_url=self.events_url,
            tls=self.tls,
        )

    def start(self, *, timeout_s: float = 30) -> None:
        """Write the configuration, start ``docker-registry`` and wait until it answers."""
        if not self.listen or self.folder is None:
            return
        self.process = RegistryProcess(
            binary=self.binary, config=self.config_path(), log_file=self.folder / "registry.log"
        )
        self.process.start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (
                    httpx.get(f"{self.url}/v2/", timeout=2, verify=self.tls_verify()).status_code
                    == 401
                ):
                    return
            except httpx.HTTPError:
                pass
            if not self.process.running() or time.monotonic() > deadline:
                tail = (self.folder / "registry.log").read_text(errors="replace")[-2000:]
                self.process.stop()
                raise RegistryUnavailable(
                    f"the registry ({self.binary}) did not start on {self.listen}: {tail}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def storage_bytes(self) -> int:
        root = self.storage_dir
        if root is None or not root.exists():
            return 0
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())

    def garbage_collect(self) -> GcResult:
        """Delete what no tag references any more (``docker-registry garbage-collect
        --delete-untagged``). The registry must not take pushes meanwhile, so the one Gaia runs
        is stopped for the collection and started again (pulls fail for those seconds; the P2P
        agents' caches and containerd's retries ride it out). A registry run apart is not
        Gaia's to stop: collect next to it (its documentation: read-only mode first)."""
        if self.process is None or self.folder is None:
            raise RegistryUnavailable(
                "this platform does not run its registry (GAIA_REGISTRY_LISTEN): run "
                "`docker-registry garbage-collect --delete-untagged` next to it, read-only"
            )
        with self._gc_lock:
            began = time.monotonic()
            before = self.storage_bytes()
            config = self.config_path()
            self.process.stop()
            try:
                done = subprocess.run(  # noqa: S603 (a fixed binary, our own config)
                    [self.binary, "garbage-collect", "--delete-untagged", str(config)],
                    capture_output=True,
                    text=True,
                    timeout=3600,
                )
            finally:
                self.start()
            if done.returncode != 0:
                raise RegistryUnavailable(
                    f"garbage-collect failed ({done.returncode}): {done.stderr[-500:]}"
                )
            after = self.storage_bytes()
            result = GcResult(
                freed_bytes=max(0, before - after),
                bytes_after=after,
                seconds=time.monotonic() - began,
                # garbage-collect prints one such line per blob it deletes (its "Deleting
                # blob" lines are info-level logs, silenced at warn)
                blobs_deleted=done.stdout.count("blob eligible for deletion:"),
            )
            self.last_gc = result
            log.info(
                "registry: garbage collection freed %d bytes (%d blobs) in %.1f s",
                result.freed_bytes,
                result.blobs_deleted,
                result.seconds,
            )
            return result

    def _service_headers(self, repository: str, actions: list[str]) -> dict[str, str]:
        token = self.signer.issue(
            subject="gaia",
            access=[{"type": "repository", "name": repository, "actions": actions}],
        )
        return {"Authorization": f"Bearer {token.token}"}

    async def _call(
        self, method: str, repository: str, path: str, actions: list[str], **headers: str
    ) -> httpx.Response:
        if not self.enabled:
            raise RegistryUnavailable("this platform runs no registry (GAIA_REGISTRY_LISTEN)")
        try:
            async with httpx.AsyncClient(timeout=15, verify=self.tls_verify()) as client:
                return await client.request(
                    method,
                    f"{self.url}/v2/{repository}/{path}",
                    headers={**self._service_headers(repository, actions), **headers},
                )
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"the registry did not answer: {exc!r}") from exc

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest ``reference`` names in the registry now (None: not there)."""
        r = await self._call(
            "HEAD", repository, f"manifests/{reference}", ["pull"], Accept=MANIFEST_ACCEPT
        )
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RegistryUnavailable(f"HEAD manifest {repository}:{reference}: {r.status_code}")
        digest: str | None = r.headers.get("docker-content-digest")
        return digest

    async def blob_linked(self, repository: str, digest: str, *, cache_s: float = 60.0) -> bool:
        """Whether blob ``digest`` is linked in ``repository`` (the registry answers a blob's
        HEAD only in a repository that references it). A yes is kept ``cache_s``: a P2P agent
        opens one task per blob, and a layer shared by a hundred nodes costs one question."""
        now = time.monotonic()
        seen = self.linked_cache.get((repository, digest))
        if seen is not None and now - seen < cache_s:
            return True
        r = await self._call("HEAD", repository, f"blobs/{digest}", ["pull"])
        if r.status_code == 404:
            return False
        if r.status_code != 200:
            raise RegistryUnavailable(f"HEAD blob {repository}@{digest}: {r.status_code}")
        if len(self.linked_cache) > 10_000:
            self.linked_cache.clear()
        self.linked_cache[(repository, digest)] = now
        return True

    def holds_blob(self, digest: str) -> bool | None:
        """Whether the registry stores blob ``digest`` in any repository (its filesystem
        storage, ``docker/registry/v2/blobs/sha256/<2>/<hex>/data``), or None where Gaia cannot
        tell: it does not run the registry itself (``GAIA_REGISTRY_LISTEN`` unset)."""
        if not self.listen or self.storage_dir is None:
            return None
        hexpart = digest.removeprefix("sha256:")
        data = self.storage_dir / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart
        return (data / "data").is_file()

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete manifest ``digest`` (and so every tag that names it); False if not there."""
        r = await self._call("DELETE", repository, f"manifests/{digest}", ["pull", "delete"])
        if r.status_code == 404:
            return False
        if r.status_code != 202:
            raise RegistryUnavailable(
                f"DELETE manifest {repository}@{digest}: {r.status_code} {r.text[:200]}"
            )
        return True


@dataclass(frozen=True, slots=True)
class GcResult:
    freed_bytes: int
    bytes_after: int
    seconds: float
    blobs_deleted: int


class RegistryGcLoop(LoopService):
    """Garbage collection of the registry Gaia runs, every ``interval`` seconds (not at start:
    the first pass only notes the time)."""

    name = "registry-gc"

    def __init__(self, registry: RegistryService, *, interval: float) -> None:
        super().__init__(interval=interval)
        self.registry = registry
        self._first = True

    async def run_once(self) -> None:
        if self._first:
            self._first = False
            return
        if self.registry.process is not None:
            await asyncio.to_thread(self.registry.garbage_collect)
