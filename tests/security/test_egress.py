"""Issue 15: the alert channels' egress (SSRF) and the secrets in HTTP client logs.

- Save time: a channel whose destination is a loopback, private, link-local (metadata), CGNAT
  or otherwise non-public address is refused with a 422 naming the field.
- Connect time: a *name* that resolves to such an address (DNS rebinding: public when saved,
  127.0.0.1 when sending) is refused when connecting, for HTTP and SMTP alike; nothing reaches
  the far side. The resolver is patched so that ``hooks.example.test`` points at the fake.
- The guard's allow-list (``GAIA_EGRESS_ALLOW_CIDRS``) lets a range through, and the pinned
  connection keeps the URL's Host header.
- The channel test endpoint and delivery errors say the status, never the far side's body.
- No log record carries a channel's URL credential (WeCom ``?key=``, a webhook's token).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gaia.egress import EgressPolicy, parse_cidrs, policy_override
from gaia.monitor.alerting.channels import (
    AlertNotice,
    DeliveryError,
    OutgoingMessage,
    channel_from_config,
)
from gaia.settings import Settings
from tests.conftest import World
from tests.support.egress import LOOPBACK_CIDRS
from tests.support.http_fakes import FakeWeComRobot, Reply, WebhookReceiver
from tests.support.smtp import SmtpServer

A = "/api/v1/alerts"
REBOUND = "hooks.example.test"  # a name the patched resolver points at 127.0.0.1


def message(kind: str, recipients: tuple[str, ...] = ()) -> OutgoingMessage:
    notice = AlertNotice(
        status="firing",
        alert_name="egress",
        severity="info",
        labels={},
        annotations={},
        value=None,
        threshold=None,
        starts_at=dt.datetime.now(dt.UTC),
        ends_at=None,
        fingerprint="f",
        record_id=1,
    )
    return OutgoingMessage(
        notice=notice, subject="s", body="b", recipients=recipients, idempotency_key=f"k-{kind}"
    )


def send(kind: str, config: dict[str, Any], recipients: tuple[str, ...] = ()) -> str:
    return asyncio.run(channel_from_config(kind, config).send(message(kind, recipients)))


def send_fails(
    kind: str, config: dict[str, Any], recipients: tuple[str, ...] = ()
) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(kind, config, recipients)
    return info.value


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hooks.example.test`` resolves to 127.0.0.1, as a rebinding name would after saving."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        return real("127.0.0.1" if host == REBOUND else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


# ------------------------------------------------------------------------------ the policy

REFUSED = [
    "127.0.0.1",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # AWS/GCP/Azure metadata
    "fd00:ec2::254",  # AWS metadata over IPv6 (ULA)
    "fe80::1",
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # noqa: S104 (an address refused, not bound)
    "224.0.0.1",
    "240.0.0.1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert EgressPolicy().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert EgressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_the_setting_allow_lists_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAIA_EGRESS_ALLOW_CIDRS", "10.20.0.0/16, fd12::/64")
    policy = EgressPolicy.from_settings(Settings())
    assert policy.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("fd12::5")) is None
    assert policy.refusal(ipaddress.ip_address("10.21.0.1")) is not None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is not None
    with pytest.raises(ValueError, match="GAIA_EGRESS_ALLOW_CIDRS"):
        parse_cidrs("10.0.0.0/8,nonsense")


# ------------------------------------------------------------------------------ save time

SAVE_CASES = [
    ("webhook", {"url": "http://169.254.169.254/latest/meta-data/"}, "url"),
    ("webhook", {"url": "http://[fd00:ec2::254]/latest/meta-data/"}, "url"),
    ("webhook", {"url": "http://localhost:8080/admin"}, "url"),
    ("webhook", {"url": "http://100.64.0.1/x"}, "url"),
    ("wecom", {"webhook_url": "http://10.0.0.5/cgi-bin/webhook/send?key=k"}, "webhook_url"),
    (
        "sms",
        {
            "endpoint": "http://192.168.0.10",
            "secret_id": "id",
            "secret_key": "key-key-key",
            "sdk_app_id": "1400000000",
            "sign_name": "Gaia",
            "template_id": "1",
        },
        "endpoint",
    ),
    ("email", {"host": "127.0.0.1", "security": "none", "sender": "a@example.com"}, "host"),
]


@pytest.mark.parametrize(("kind", "config", "field"), SAVE_CASES)
def test_a_non_public_destination_is_refused_when_saved(
    world: World, kind: str, config: dict[str, Any], field: str
) -> None:
    body = {"business": "alpha", "name": f"ssrf-{kind}", "kind": kind, "config": config}
    r = world.client.post(f"{A}/channels", json=body, headers=world.as_("business-admin"))
    assert r.status_code == 422, r.text
    assert field in r.text and "GAIA_EGRESS_ALLOW_CIDRS" in r.text


# ------------------------------------------------------------------------------ connect time


@pytest.mark.usefixtures("rebinding_dns")
def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(
    receiver: WebhookReceiver,
) -> None:
    url = f"http://{REBOUND}:{receiver.port}/hooks/alerts?token=t"
    error = send_fails("webhook", {"url": url})
    assert not error.retryable and "refusing to connect" in error.reason
    assert "127.0.0.1" in error.reason and "loopback" in error.reason
    assert receiver.requests == []


@pytest.mark.usefixtures("rebinding_dns")
def test_an_allow_listed_range_connects_to_the_checked_address_with_the_original_host(
    receiver: WebhookReceiver,
) -> None:
    url = f"http://{REBOUND}:{receiver.port}/hooks/alerts"
    with policy_override(EgressPolicy(parse_cidrs(LOOPBACK_CIDRS))):
        send("webhook", {"url": url})
    [request] = receiver.requests
    assert request.headers["host"] == f"{REBOUND}:{receiver.port}"


@pytest.mark.usefixtures("rebinding_dns")
def test_smtp_to_a_name_that_resolves_to_loopback_is_refused() -> None:
    with SmtpServer(security="none") as server:
        config = {**server.channel_config(), "host": REBOUND}
        error = send_fails("email", config, ("ops@example.com",))
        assert not error.retryable and "refusing to connect" in error.reason
        assert server.received == []
        # allowed explicitly, the same config delivers (through the checked address)
        with policy_override(EgressPolicy(parse_cidrs(LOOPBACK_CIDRS))):
            assert send("email", config, ("ops@example.com",)).startswith("250")
        assert len(server.wait_for(1)) == 1


# ------------------------------------------------------------------------------ no echo


def test_the_channel_test_does_not_echo_the_far_sides_answer(
    world: World, receiver: WebhookReceiver
) -> None:
    with policy_override(EgressPolicy(parse_cidrs(LOOPBACK_CIDRS))):
        body = {"business": "alpha", "name": "hook", "kind": "webhook"}
        body["config"] = {"url": receiver.url}  # type: ignore[assignment]
        r = world.client.post(f"{A}/channels", json=body, headers=world.as_("business-admin"))
        assert r.status_code == 201, r.text
        receiver.reply_next(Reply(500, b'{"AccessKeyId": "ASIA-INSTANCE-ROLE-KEY"}'))
        r = world.client.post(
            f"{A}/channels/{r.json()['id']}/test", headers=world.as_("business-admin")
        )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["ok"] is False and "HTTP 500 Internal Server Error" in result["error"]
    assert "ASIA-INSTANCE-ROLE-KEY" not in r.text


# ------------------------------------------------------------------------------ logs


@pytest.mark.parametrize("kind", ["wecom", "webhook"])
def test_no_log_record_carries_a_channel_url_secret(
    world: World, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    make: Callable[[], Any] = FakeWeComRobot if kind == "wecom" else WebhookReceiver
    with make() as fake, policy_override(EgressPolicy(parse_cidrs(LOOPBACK_CIDRS))):
        if kind == "wecom":
            config = {"webhook_url": fake.webhook_url}
            secret = FakeWeComRobot.KEY
        else:
            secret = "path-token-5f1e2d3c4b5a"
            config = {"url": f"{fake.origin}/hooks/{secret}"}
        body = {"business": "alpha", "name": f"log-{kind}", "kind": kind, "config": config}
        r = world.client.post(f"{A}/channels", json=body, headers=world.as_("business-admin"))
        assert r.status_code == 201, r.text
        caplog.set_level(logging.DEBUG)
        r = world.client.post(
            f"{A}/channels/{r.json()['id']}/test", headers=world.as_("business-admin")
        )
        assert r.status_code == 200 and r.json()["ok"], r.text
        assert fake.requests  # it really was delivered
    records = [f"{rec.name}: {rec.getMessage()}" for rec in caplog.records]
    leaked = [line for line in records if secret in line]
    assert leaked == []


def test_a_bad_allow_list_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAIA_EGRESS_ALLOW_CIDRS", "10.0.0.0/8,intranet")
    with pytest.raises(ValueError, match="intranet"):
        Settings()
