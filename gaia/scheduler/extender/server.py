"""``gaia scheduler-extender``: the extender protocol over HTTP, and the API-server binder.

kube-scheduler POSTs JSON to ``<urlPrefix>/filter``, ``/prioritize`` and ``/bind``; the answers
come from ``decisions`` (filter, prioritize) and ``bind``, in the wire types of ``protocol``.
This module adds only the edges:

- **Errors stay in the protocol.** kube-scheduler treats any status but 200 as "the extender
  failed" and shows only the code, so filter and bind answer 200 with the problem in the result's
  ``Error`` field (an unreadable or oversized body, a bad pod, a refused binding); kube-scheduler
  puts that text in the pod's FailedScheduling event. Prioritize has no error field: an unreadable
  body is a 400/413 with ``{"Error": ...}``, a bad pod scores every node 0 (kube-scheduler ignores
  failed prioritize calls anyway). A bug is logged with its traceback and reported the same way,
  never as a bare 500.
- **Bodies are limited** (``max_body_bytes``, 64 MiB by default: a full Node is 5-20 KiB, and
  kube-scheduler sends at most the nodes it found feasible); reading stops at the limit.
- **Authentication.** Whoever reaches the port can bind pods to nodes, so the default is to
  listen on 127.0.0.1 only and run the extender beside kube-scheduler (a second container in its
  pod, or on the control-plane host). Beyond loopback the extender refuses to start unless
  callers must authenticate (``check_serving``), in one of two ways:

  - **client certificates** (``ServingTLS`` with ``client_ca_file``: ``--tls-cert-file``,
    ``--tls-private-key-file``, ``--client-ca-file``): the extender serves TLS and the handshake
    requires a certificate signed by that CA. This is what kube-scheduler can do: its extender
    config has ``enableHTTPS`` and ``tlsConfig`` (``certFile``, ``keyFile``, ``caFile``: its
    client pair and the CA of the extender's certificate) and no way to send a token. Every
    connection needs the certificate, ``/healthz`` too: probe the port with ``tcpSocket``.
  - **a bearer token** (``GAIA_EXTENDER_TOKEN``, never on the command line where ``ps`` shows
    it): every call but ``GET /healthz`` needs ``Authorization: Bearer <token>``, compared in
    constant time, else 401; for when something in between (a proxy, another client) sends it.
    Without TLS it crosses the network in clear text, which is logged as a warning.

  TLS without a client CA only encrypts (kube-scheduler checks the extender's certificate with
  ``caFile``); it authenticates nobody, so beyond loopback it still needs the token.
- **Concurrency.** Decisions run in worker threads so that a big body never stalls
  ``/healthz``; the scheduler object is stateful (the fit scheduler's cursor) and not
  thread-safe, so calls into it take one lock. kube-scheduler binds asynchronously, so a bind can
  overlap the next pod's filter; the bind's API calls run outside the lock, and its node update is
  a compare-and-swap on ``resourceVersion``.

``KubernetesBinder`` talks to the API server with httpx and the credentials of a kubeconfig
(``gaia.kube.parse_kubeconfig``: inline data only) or of the pod's service
account. The Binding carries the pod annotations (``gaia.io/gpu-ids``, ``gaia.io/cpu-set``): the
API server copies a Binding's annotations onto the pod in the same write that sets
``spec.nodeName``, so there is no moment where the pod is bound without its GPU ids.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gaia.kube import KubeCredentials, parse_kubeconfig, ssl_context
from gaia.scheduler.extender.bind import Binder, BindFailed, NodeChanged, bind_pod
from gaia.scheduler.extender.decisions import PlacementScheduler, filter_nodes, prioritize_nodes
from gaia.scheduler.extender.protocol import (
    BadExtenderRequest,
    ExtenderBindingResult,
    ExtenderFilterResult,
)
from gaia.scheduler.placement import GaiaScheduler
from gaia.scheduler.port import ClusterView, Placement, PlacementRequest

log = logging.getLogger("gaia.scheduler.extender")  # the name operators configure

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
TOKEN_ENV = "GAIA_EXTENDER_TOKEN"  # noqa: S105 (the variable's name, not a secret)
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class _BodyTooLarge(Exception):
    pass


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge(f"the request body is larger than the extender's limit ({limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(
                f"the request body is larger than the extender's limit ({limit} bytes)"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise BadExtenderRequest("the request body is not JSON") from None


class _OneAtATime:
    """The scheduler behind a lock (``place`` only: what the bind step needs)."""

    def __init__(self, scheduler: PlacementScheduler, lock: threading.Lock) -> None:
        self._scheduler = scheduler
        self._lock = lock

    def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
        with self._lock:
            return self._scheduler.place(request, cluster)


def create_app(
    *,
    scheduler: PlacementScheduler,
    binder: Binder | None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    """The extender's ASGI app. ``binder`` None: bind answers with an error saying why."""
    lock = threading.Lock()
    expected = f"Bearer {token}".encode() if token else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def unauthorized() -> JSONResponse:
        return JSONResponse(
            {"Error": f"missing or wrong bearer token (the extender requires {TOKEN_ENV})"},
            status_code=401,
        )

    def locked_filter(body: Any) -> dict[str, Any]:
        with lock:
            return filter_nodes(body, scheduler)

    def locked_prioritize(body: Any) -> list[dict[str, Any]]:
        with lock:
            return prioritize_nodes(body, scheduler)

    def do_bind(body: Any) -> dict[str, Any]:
        if binder is None:
            return ExtenderBindingResult(
                error="this extender has no API server access: start it with --kubeconfig (or "
                "in a pod with a service account), or remove bindVerb from the scheduler config"
            ).to_wire()
        return bind_pod(body, binder=binder, scheduler=_OneAtATime(scheduler, lock))

    async def filter_endpoint(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            body = await _read_json(request, max_body_bytes)
            result = await run_in_threadpool(locked_filter, body)
        except (_BodyTooLarge, BadExtenderRequest) as exc:
            result = ExtenderFilterResult(error=str(exc)).to_wire()
        except Exception as exc:
            log.exception("filter failed")
            result = ExtenderFilterResult(error=f"extender failure: {exc!r}").to_wire()
        return JSONResponse(result)

    async def prioritize_endpoint(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            body = await _read_json(request, max_body_bytes)
            return JSONResponse(await run_in_threadpool(locked_prioritize, body))
        except _BodyTooLarge as exc:
            return JSONResponse({"Error": str(exc)}, status_code=413)
        except BadExtenderRequest as exc:
            return JSONResponse({"Error": str(exc)}, status_code=400)
        except Exception as exc:
            log.exception("prioritize failed")
            return JSONResponse({"Error": f"extender failure: {exc!r}"}, status_code=500)

    async def bind_endpoint(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            body = await _read_json(request, max_body_bytes)
            result = await run_in_threadpool(do_bind, body)
        except (_BodyTooLarge, BadExtenderRequest) as exc:
            result = ExtenderBindingResult(error=str(exc)).to_wire()
        except Exception as exc:
            log.exception("bind failed")
            result = ExtenderBindingResult(error=f"extender failure: {exc!r}").to_wire()
        if result["Error"]:
            log.warning("bind refused: %s", result["Error"])
        return JSONResponse(result)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/filter", filter_endpoint, methods=["POST"]),
        Route("/prioritize", prioritize_endpoint, methods=["POST"]),
        Route("/bind", bind_endpoint, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes)


# ------------------------------------------------------------------------------- binder


class KubernetesBinder:
    """``Binder`` over the API server's REST API (synchronous: it runs in worker threads).

    ``token_file``: re-read on every request, as kubelet rotates service-account tokens."""

    def __init__(
        self, credentials: KubeCredentials, *, token_file: Path | None = None, timeout: float = 10
    ) -> None:
        self._token_file = token_file
        self._token = credentials.token
        self._client = httpx.Client(
            base_url=credentials.server,
            headers={"Accept": "application/json"},
            verify=ssl_context(credentials),
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def _request(
        self, method: str, path: str, *, what: str, json_body: Any = None, content_type: str = ""
    ) -> httpx.Response:
        headers = {}
        token = self._token_file.read_text().strip() if self._token_file else self._token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            content = json.dumps(json_body).encode() if json_body is not None else None
            return self._client.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise BindFailed(
                f"{what}: the API server did not answer ({type(exc).__name__})"
            ) from None

    @staticmethod
    def _refused(response: httpx.Response, what: str) -> BindFailed:
        try:
            message = str(response.json().get("message", ""))
        except ValueError:
            message = ""
        detail = f": {message}" if message else ""
        return BindFailed(f"{what}: the API server answered {response.status_code}{detail}")

    def _read(self, path: str, what: str) -> Mapping[str, Any]:
        response = self._request("GET", path, what=what)
        if response.status_code != 200:
            raise self._refused(response, what)
        doc = response.json()
        if not isinstance(doc, dict):
            raise BindFailed(f"{what}: the API server answered something other than an object")
        return doc

    def read_pod(self, *, namespace: str, name: str) -> Mapping[str, Any]:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
        return self._read(path, f"reading pod {namespace}/{name}")

    def read_node(self, *, name: str) -> Mapping[str, Any]:
        return self._read(f"/api/v1/nodes/{quote(name, safe='')}", f"reading node {name}")

    def update_node_annotations(
        self, *, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> None:
        what = f"updating node {name}"
        # A merge patch that names metadata.resourceVersion is refused with 409 when the node has
        # moved on: the compare-and-swap the GPU accounting needs.
        patch = {
            "metadata": {"annotations": dict(annotations), "resourceVersion": resource_version}
        }
        response = self._request(
            "PATCH",
            f"/api/v1/nodes/{quote(name, safe='')}",
            what=what,
            json_body=patch,
            content_type="application/merge-patch+json",
        )
        if response.status_code == 409:
            raise NodeChanged(name)
        if response.status_code != 200:
            raise self._refused(response, what)

    def bind(
        self, *, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        what = f"binding pod {namespace}/{name} to {node}"
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if uid:
            metadata["uid"] = uid  # the API server refuses the binding if the pod was replaced
        if annotations:
            metadata["annotations"] = dict(annotations)
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}/binding"
        response = self._request(
            "POST", path, what=what, json_body=binding, content_type="application/json"
        )
        if response.status_code not in (200, 201):
            raise self._refused(response, what)


def in_cluster_credentials(
    directory: Path = SERVICE_ACCOUNT_DIR, env: Mapping[str, str] | None = None
) -> KubeCredentials | None:
    """The pod's service-account credentials, or None outside a cluster."""
    env = os.environ if env is None else env
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = directory / "token"
    if not host or not token_file.exists():
        return None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 service address
    ca_file = directory / "ca.crt"
    return KubeCredentials(
        server=f"https://{host}:{port}",
        ca_data=ca_file.read_bytes() if ca_file.exists() else None,
        insecure=False,
        client_cert=None,
        client_key=None,
        token=None,
    )


def binder_from(kubeconfig: str | None) -> KubernetesBinder | None:
    """A binder from a kubeconfig file, else from the service account, else None."""
    if kubeconfig:
        return KubernetesBinder(parse_kubeconfig(Path(kubeconfig).expanduser().read_text()))
    credentials = in_cluster_credentials()
    if credentials is None:
        return None
    return KubernetesBinder(credentials, token_file=SERVICE_ACCOUNT_DIR / "token")


# ------------------------------------------------------------------------------- serving


class ExtenderSetupError(Exception):
    """The extender cannot start as configured; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ServingTLS:
    """The extender's own TLS: its certificate chain and key (PEM files) and, optionally, the CA
    whose certificates clients must present (mutual TLS: the handshake fails without one)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_tls(tls: ServingTLS) -> None:
    """Load the files the way the server will, so that a wrong path, a key that does not match
    the certificate or a file that is not PEM is an error now, not a failed handshake later."""
    for what, path in (
        ("--tls-cert-file", tls.cert_file),
        ("--tls-private-key-file", tls.key_file),
        ("--client-ca-file", tls.client_ca_file),
    ):
        if path is not None and not path.is_file():
            raise ExtenderSetupError(f"{what}: no file at {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ExtenderSetupError(
            f"--tls-cert-file/--tls-private-key-file: cannot load the certificate and key "
            f"(PEM files of one pair): {exc}"
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ExtenderSetupError(
                f"--client-ca-file: cannot load CA certificates from it: {exc}"
            ) from None


def check_serving(*, host: str, token: str | None, tls: ServingTLS | None) -> None:
    """Refuse a configuration that would let anybody who reaches the port bind pods, or that
    cannot serve: beyond loopback a caller must present a client certificate or the token."""
    if tls is not None:
        _check_tls(tls)
    if _is_loopback(host):
        return
    if token is None and (tls is None or tls.client_ca_file is None):
        raise ExtenderSetupError(
            f"refusing to listen on {host} without authentication: anyone who reaches the port "
            "could bind pods to nodes. Give --client-ca-file (with --tls-cert-file and "
            "--tls-private-key-file) so that only clients with a certificate signed by that CA "
            f"get in (kube-scheduler's tlsConfig certFile/keyFile), or set {TOKEN_ENV}, or "
            "listen on 127.0.0.1"
        )
    if token is not None and tls is None:
        log.warning(
            "listening on %s with a bearer token but without TLS: the token crosses the network "
            "in clear text (give --tls-cert-file and --tls-private-key-file)",
            host,
        )


def serve(
    *,
    host: str,
    port: int,
    kubeconfig: str | None,
    token: str | None,
    tls: ServingTLS | None = None,
) -> None:
    """Run the extender with uvicorn until interrupted; ``token`` None: ``GAIA_EXTENDER_TOKEN``.
    Raises ``ExtenderSetupError`` before listening when ``check_serving`` refuses."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_serving(host=host, token=token, tls=tls)
    binder = binder_from(kubeconfig)
    if binder is None:
        log.warning("no kubeconfig and no service account: /bind will refuse (GPU pods need it)")
    app = create_app(scheduler=GaiaScheduler(), binder=binder, token=token)
    ssl_options: dict[str, Any] = {}
    if tls is not None:
        ssl_options = {
            "ssl_certfile": str(tls.cert_file),
            "ssl_keyfile": str(tls.key_file),
        }
        if tls.client_ca_file is not None:
            ssl_options["ssl_ca_certs"] = str(tls.client_ca_file)
            ssl_options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, **ssl_options)
    finally:
        if binder is not None:
            binder.close()
