"""HTTP servers that stand in for the far side of the alert channels, on 127.0.0.1.

These are FAKES: Tencent Cloud SMS and the WeCom robot API cannot be reached from tests, so
``FakeTencentSmsGateway`` and ``FakeWeComRobot`` answer as the real services document (the same
JSON shapes and error codes), and ``WebhookReceiver`` is a programmable receiver for custom
webhooks. Each runs ``http.server`` in a thread, records every request (``requests``), and can be
told to fail the next requests in a given way.

``FakeTencentSmsGateway`` checks each request's TC3-HMAC-SHA256 signature with its own
implementation, driven by the request's ``Authorization`` header (the signed headers it names,
the credential scope's date and service), and answers ``AuthFailure.SignatureFailure`` as
Tencent does when it does not match; so a test passing against it says that the channel signs
what it sends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)


class RecordingHttpServer:
    """Serves ``respond(request) -> Reply`` on a free port of 127.0.0.1 and records requests."""

    def __init__(self, respond: Callable[[RecordedRequest], Reply]) -> None:
        self._respond = respond
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                with server._lock:
                    server._requests.append(request)
                reply = server._respond(request)
                body = reply.body
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if not isinstance(reply.body, bytes):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------ webhook receiver


class WebhookReceiver(RecordingHttpServer):
    """Answers 200 unless told otherwise: ``reply_next`` queues replies; ``stall_next`` makes
    the next request wait (until ``release()`` or 10 s) before answering."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self._queue: list[Reply] = []
        self._stall = 0
        self._released = threading.Event()

    @property
    def url(self) -> str:
        return f"{self.origin}/hooks/alerts?token=receiver-token-1"

    def reply_next(self, reply: Reply, *, times: int = 1) -> None:
        with self._lock:
            self._queue.extend([reply] * times)

    def stall_next(self) -> None:
        with self._lock:
            self._stall += 1

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        super().stop()

    def _answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            stall = self._stall > 0
            self._stall -= 1 if stall else 0
            reply = self._queue.pop(0) if self._queue else Reply(200, {"status": "ok"})
        if stall:
            self._released.wait(timeout=10)
        return reply


# --------------------------------------------------------------------- FAKE Tencent Cloud SMS


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def expected_tc3_signature(request: RecordedRequest, secret_key: str) -> str | None:
    """The signature Tencent would compute for ``request``, from what its Authorization header
    says was signed; None when the header is malformed."""
    auth = request.headers.get("authorization", "")
    algorithm, _, rest = auth.partition(" ")
    if algorithm != "TC3-HMAC-SHA256":
        return None
    parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
    try:
        _secret_id, date, service, terminator = parts["Credential"].split("/")
        signed = parts["SignedHeaders"].split(";")
    except (KeyError, ValueError):
        return None
    if terminator != "tc3_request":
        return None
    url = urlsplit(request.path)
    canonical_headers = "".join(
        f"{name}:{request.headers.get(name, '').strip().lower()}\n" for name in signed
    )
    canonical = (
        f"{request.method}\n{url.path or '/'}\n{url.query}\n{canonical_headers}\n"
        f"{';'.join(signed)}\n{hashlib.sha256(request.body).hexdigest()}"
    )
    to_sign = (
        f"TC3-HMAC-SHA256\n{request.headers.get('x-tc-timestamp', '')}\n"
        f"{date}/{service}/tc3_request\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    )
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class FakeTencentSmsGateway(RecordingHttpServer):
    """A FAKE of Tencent Cloud SMS ``SendSms`` (2021-01-11): checks the signature, the action,
    the version and the timestamp's date; answers with ``SendStatusSet`` or ``Error``."""

    SECRET_ID = "AKIDfakeGaiaTestSecretId00000000000"
    SECRET_KEY = "fakeGaiaTestSecretKey0000000000"

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.keys = {self.SECRET_ID: self.SECRET_KEY}
        self._errors: list[tuple[str, str]] = []
        self.number_failures: dict[str, tuple[str, str]] = {}

    def channel_config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "endpoint": self.origin,
            "secret_id": self.SECRET_ID,
            "secret_key": self.SECRET_KEY,
            "sdk_app_id": "1400000001",
            "sign_name": "Gaia",
            "template_id": "1234567",
            "timeout": 5,
        }
        config.update(overrides)
        return config

    def fail_next(self, code: str, message: str = "fake failure") -> None:
        """Answer the next request with ``Response.Error``."""
        with self._lock:
            self._errors.append((code, message))

    def fail_number(self, number: str, code: str, message: str) -> None:
        with self._lock:
            self.number_failures[number] = (code, message)

    def _error(self, code: str, message: str) -> Reply:
        return Reply(
            200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": _rid()}}
        )

    def _answer(self, request: RecordedRequest) -> Reply:
        headers = request.headers
        if headers.get("x-tc-action") != "SendSms":
            return self._error("InvalidAction", f"action {headers.get('x-tc-action')} not found")
        if headers.get("x-tc-version") != "2021-01-11":
            return self._error("NoSuchVersion", "the version does not exist")
        if not headers.get("x-tc-region"):
            return self._error("MissingParameter", "the parameter `Region` is required")
        credential = headers.get("authorization", "").partition("Credential=")[2].split("/")
        secret_key = self.keys.get(credential[0]) if credential else None
        if secret_key is None:
            return self._error("AuthFailure.SecretIdNotFound", "the SecretId is not found")
        try:
            stamp = int(headers.get("x-tc-timestamp", ""))
        except ValueError:
            return self._error("AuthFailure.InvalidAuthorization", "bad X-TC-Timestamp")
        if len(credential) < 2 or credential[1] != dt.datetime.fromtimestamp(
            stamp, dt.UTC
        ).strftime("%Y-%m-%d"):
            return self._error(
                "AuthFailure.InvalidAuthorization", "the credential scope's date is not the date"
            )
        signature = headers.get("authorization", "").rpartition("Signature=")[2]
        expected = expected_tc3_signature(request, secret_key)
        if expected is None or not hmac.compare_digest(expected, signature):
            return self._error(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. "
                "Please check your signature is correct.",
            )
        with self._lock:
            error = self._errors.pop(0) if self._errors else None
            failures = dict(self.number_failures)
        if error is not None:
            return self._error(*error)
        body = request.json()
        statuses = []
        for number in body["PhoneNumberSet"]:
            code, message = failures.get(number, ("Ok", "send success"))
            statuses.append(
                {
                    "SerialNo": f"2640:{uuid.uuid4().int % 10**20}" if code == "Ok" else "",
                    "PhoneNumber": number,
                    "Fee": 1 if code == "Ok" else 0,
                    "SessionContext": body.get("SessionContext", ""),
                    "Code": code,
                    "Message": message,
                    "IsoCode": "CN",
                }
            )
        return Reply(200, {"Response": {"SendStatusSet": statuses, "RequestId": _rid()}})


def _rid() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- FAKE WeCom robot


class FakeWeComRobot(RecordingHttpServer):
    """A FAKE of the WeCom group robot webhook (``/cgi-bin/webhook/send?key=...``)."""

    KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"

    def __init__(self) -> None:
        super().__init__(self._answer)
        self._errors: list[tuple[int, str]] = []
        self._accepted: list[dict[str, Any]] = []

    @property
    def webhook_url(self) -> str:
        return f"{self.origin}/cgi-bin/webhook/send?key={self.KEY}"

    def messages(self) -> list[dict[str, Any]]:
        """The messages it accepted (errcode 0), as posted."""
        with self._lock:
            return list(self._accepted)

    def fail_next(self, errcode: int, errmsg: str) -> None:
        with self._lock:
            self._errors.append((errcode, errmsg))

    def _answer(self, request: RecordedRequest) -> Reply:
        if urlsplit(request.path).path != "/cgi-bin/webhook/send" or (
            request.query.get("key") != self.KEY
        ):
            return Reply(200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [fake]"})
        with self._lock:
            error = self._errors.pop(0) if self._errors else None
        if error is not None:
            return Reply(200, {"errcode": error[0], "errmsg": error[1]})
        try:
            message = request.json()
            kind = message["msgtype"]
            content = message[kind]["content"]
        except (ValueError, KeyError, TypeError):
            return Reply(200, {"errcode": 40008, "errmsg": "invalid message type"})
        limit = 4096 if kind == "markdown" else 2048
        if kind not in ("text", "markdown") or not content:
            return Reply(200, {"errcode": 40008, "errmsg": "invalid message type"})
        if len(content.encode()) > limit:
            return Reply(200, {"errcode": 40058, "errmsg": "content exceed max length"})
        with self._lock:
            self._accepted.append(message)
        return Reply(200, {"errcode": 0, "errmsg": "ok"})
