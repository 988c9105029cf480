"""The notification channels against real or faithful far sides.

- Email goes to a real SMTP server (aiosmtpd, ``tests/support/smtp.py``): plain, STARTTLS and
  implicit TLS with a private CA, AUTH, greylisting, rejections.
- SMS goes to a FAKE Tencent Cloud SMS gateway and WeCom to a FAKE WeCom robot
  (``tests/support/http_fakes.py``): the real services cannot be reached from tests, so the fakes
  answer in their documented shapes, and the SMS fake checks every TC3 signature on its own.
- Webhooks go to a local receiver; the payload is checked against Alertmanager's v4 shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gaia.domain.errors import InvalidRequest
from gaia.monitor.alerting.channels import (
    SECRET_FIELDS,
    AlertNotice,
    Channel,
    DeliveryError,
    OutgoingMessage,
    channel_from_config,
    check_template,
    render_message,
    validate_channel_config,
    verify_signature,
)
from gaia.monitor.alerting.channels._base import parse_retry_after
from gaia.monitor.alerting.channels.sms import (
    GatewayReply,
    NumberResult,
    SmsChannel,
    SmsConfig,
    TencentSmsGateway,
    tc3_authorization,
)
from gaia.monitor.alerting.channels.webhook import WebhookChannel, WebhookConfig
from tests.support.http_fakes import FakeTencentSmsGateway, FakeWeComRobot, Reply, WebhookReceiver
from tests.support.kube import free_port
from tests.support.smtp import Security, SmtpServer, TestCertificates

STARTED = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def make_notice(**changes: Any) -> AlertNotice:
    notice = AlertNotice(
        status="firing",
        alert_name="Node CPU high",
        severity="critical",
        labels={
            "alertname": "Node CPU high",
            "cluster": "prod-bj",
            "node": "node-7",
            "metric": "node_cpu_utilization",
        },
        annotations={"summary": "CPU above 90% on node-7", "description": "for 5 minutes"},
        value=96.25,
        threshold=90.0,
        starts_at=STARTED,
        ends_at=None,
        fingerprint="f00dfeedcafe0001",
        record_id=42,
        url="https://gaia.example.com/console/alerts/42",
    )
    return dataclasses.replace(notice, **changes)


def make_message(
    kind: str,
    recipients: tuple[str, ...] = (),
    *,
    notice: AlertNotice | None = None,
    key: str = "alert-42-firing-1",
) -> OutgoingMessage:
    notice = notice or make_notice()
    subject, body = render_message(kind, notice, subject_template=None, body_template=None)
    return OutgoingMessage(
        notice=notice, subject=subject, body=body, recipients=recipients, idempotency_key=key
    )


def send(channel: Channel, message: OutgoingMessage) -> str:
    return asyncio.run(channel.send(message))


def send_fails(channel: Channel, message: OutgoingMessage) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(channel.send(message))
    return caught.value


def email_channel(config: dict[str, Any]) -> Channel:
    return channel_from_config("email", config)


# ------------------------------------------------------------------------------------ email

PEOPLE = ("ops@example.com", "oncall@example.com")


@pytest.fixture(scope="module")
def certificates() -> TestCertificates:
    return TestCertificates.make()


@pytest.fixture
def plain_smtp() -> Iterator[SmtpServer]:
    with SmtpServer(security="none") as server:
        yield server


def test_email_delivers_one_message_to_all_recipients(plain_smtp: SmtpServer) -> None:
    receipt = send(email_channel(plain_smtp.channel_config()), make_message("email", PEOPLE))

    assert receipt.startswith("250 ") and "queued as" in receipt
    [mail] = plain_smtp.wait_for(1)
    assert mail.mail_from == "alerts@gaia.example.com"
    assert mail.rcpt_tos == list(PEOPLE)
    assert mail.message["To"] == "ops@example.com, oncall@example.com"
    assert mail.message["From"] == "Gaia Alerts <alerts@gaia.example.com>"
    assert mail.message["Subject"] == "[FIRING][critical] Node CPU high (prod-bj)"
    assert mail.message["X-Gaia-Idempotency-Key"] == "alert-42-firing-1"
    body = mail.message.get_content()
    assert "Node CPU high is FIRING on cluster prod-bj." in body
    assert "96.25 (threshold 90)" in body
    assert "https://gaia.example.com/console/alerts/42" in body
    assert not mail.tls


def test_email_carries_non_ascii_text(plain_smtp: SmtpServer) -> None:
    notice = make_notice(alert_name="节点 CPU 过高", annotations={"summary": "请尽快处理"})
    send(email_channel(plain_smtp.channel_config()), make_message("email", PEOPLE, notice=notice))
    [mail] = plain_smtp.wait_for(1)
    assert mail.message["Subject"] == "[FIRING][critical] 节点 CPU 过高 (prod-bj)"
    assert "请尽快处理" in mail.message.get_content()


def test_email_message_id_is_the_same_on_every_retry(plain_smtp: SmtpServer) -> None:
    channel = email_channel(plain_smtp.channel_config())
    send(channel, make_message("email", PEOPLE[:1], key="k-1"))
    send(channel, make_message("email", PEOPLE[:1], key="k-1"))
    send(channel, make_message("email", PEOPLE[:1], key="k-2"))

    first, retry, other = (m.message["Message-ID"] for m in plain_smtp.wait_for(3))
    assert first == retry != other
    assert first.endswith("@gaia.example.com>")


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_tls_with_a_private_ca_and_login(
    security: Security, certificates: TestCertificates
) -> None:
    users = {"gaia": "s3cret-pass"}
    with SmtpServer(security=security, users=users, certificates=certificates) as server:
        config = server.channel_config()
        assert config["ca_pem"] == certificates.ca_pem and config["username"] == "gaia"

        receipt = send(email_channel(config), make_message("email", PEOPLE))

        assert receipt.startswith("250 ")
        [mail] = server.wait_for(1)
        assert mail.tls and mail.login == "gaia"


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_untrusted_certificate_is_a_permanent_configuration_error(
    security: Security, certificates: TestCertificates
) -> None:
    # Without ca_pem only the system CAs are trusted, and they did not sign the test server.
    with SmtpServer(security=security, certificates=certificates) as server:
        error = send_fails(
            email_channel(server.channel_config(ca_pem=None)), make_message("email", PEOPLE)
        )

        assert not error.retryable
        assert "certificate" in error.reason and "ca_pem" in error.reason
        assert server.received == []


def test_email_verify_false_accepts_an_untrusted_certificate(
    certificates: TestCertificates,
) -> None:
    with SmtpServer(security="starttls", certificates=certificates) as server:
        config = server.channel_config(ca_pem=None, verify=False)
        send(email_channel(config), make_message("email", PEOPLE))
        assert server.wait_for(1)[0].tls


def test_email_wrong_password_is_permanent_and_not_shown(certificates: TestCertificates) -> None:
    users = {"gaia": "right-password"}
    with SmtpServer(security="starttls", users=users, certificates=certificates) as server:
        config = server.channel_config(password="wrong-password-123")
        error = send_fails(email_channel(config), make_message("email", PEOPLE))

        assert not error.retryable
        assert "refused the login as 'gaia'" in error.reason and "535" in error.reason
        assert "wrong-password-123" not in error.reason
        assert server.received == []


def test_email_without_login_where_the_server_requires_one_is_permanent(
    certificates: TestCertificates,
) -> None:
    with SmtpServer(
        security="starttls", users={"gaia": "pw-123456"}, certificates=certificates
    ) as server:
        config = server.channel_config(username=None, password=None)
        error = send_fails(email_channel(config), make_message("email", PEOPLE))
        assert not error.retryable and "530" in error.reason
        assert "set username and password" in error.reason


def test_email_greylisted_451_is_retryable_and_the_retry_delivers(
    plain_smtp: SmtpServer,
) -> None:
    plain_smtp.reject_next("DATA", "451 4.7.1 Greylisted, please try again later")
    channel = email_channel(plain_smtp.channel_config())
    message = make_message("email", PEOPLE)

    error = send_fails(channel, message)
    assert error.retryable and "451" in error.reason and "Greylisted" in error.reason
    assert plain_smtp.received == []

    assert send(channel, message).startswith("250 ")
    assert len(plain_smtp.wait_for(1)) == 1
    assert plain_smtp.attempts("DATA") == 2


def test_email_550_rejection_is_permanent(plain_smtp: SmtpServer) -> None:
    plain_smtp.reject_next("DATA", "554 5.7.1 Message rejected as spam")
    error = send_fails(email_channel(plain_smtp.channel_config()), make_message("email", PEOPLE))
    assert not error.retryable and "554 5.7.1 Message rejected as spam" in error.reason


def test_email_some_recipients_refused_still_delivers_and_says_which(
    plain_smtp: SmtpServer,
) -> None:
    plain_smtp.refuse_recipient("gone@example.com", "550 5.1.1 No such user")
    recipients = ("ops@example.com", "gone@example.com", "not-an-address")

    receipt = send(email_channel(plain_smtp.channel_config()), make_message("email", recipients))

    assert "1 of 3 recipients" in receipt
    assert "gone@example.com: 550 5.1.1 No such user" in receipt
    assert "not-an-address: not an email address" in receipt
    assert plain_smtp.wait_for(1)[0].rcpt_tos == ["ops@example.com"]


def test_email_every_recipient_deferred_is_retryable(plain_smtp: SmtpServer) -> None:
    plain_smtp.reject_next("RCPT", "450 4.2.1 Mailbox busy", times=2)
    error = send_fails(email_channel(plain_smtp.channel_config()), make_message("email", PEOPLE))
    assert error.retryable and "refused every recipient" in error.reason


def test_email_every_recipient_refused_is_permanent(plain_smtp: SmtpServer) -> None:
    plain_smtp.reject_next("RCPT", "550 5.1.1 No such user", times=2)
    error = send_fails(email_channel(plain_smtp.channel_config()), make_message("email", PEOPLE))
    assert not error.retryable


def test_email_unreachable_server_is_retryable() -> None:
    config = {"host": "127.0.0.1", "port": free_port(), "security": "none"}
    config["sender"] = "alerts@gaia.example.com"
    error = send_fails(email_channel(config), make_message("email", PEOPLE))
    assert error.retryable and "cannot reach SMTP server 127.0.0.1" in error.reason


def test_email_starttls_against_a_server_without_it_is_permanent(plain_smtp: SmtpServer) -> None:
    config = plain_smtp.channel_config(security="starttls")
    error = send_fails(email_channel(config), make_message("email", PEOPLE))
    assert not error.retryable and "STARTTLS" in error.reason


def test_email_implicit_tls_to_a_plain_port_is_permanent(plain_smtp: SmtpServer) -> None:
    config = plain_smtp.channel_config(security="tls")
    error = send_fails(email_channel(config), make_message("email", PEOPLE))
    assert not error.retryable and "TLS" in error.reason


def test_email_without_valid_recipients_is_permanent(plain_smtp: SmtpServer) -> None:
    error = send_fails(email_channel(plain_smtp.channel_config()), make_message("email", ()))
    assert not error.retryable and "no valid email recipients" in error.reason


# -------------------------------------------------------------------------------------- SMS


def test_tc3_signature_matches_tencents_documented_example() -> None:
    # The worked example of Tencent Cloud API 3.0's "Signature v3" page
    # (cloud.tencent.com/document/api/213/30654): DescribeInstances on cvm at 1551113065.
    payload = (
        rb'{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}'
    )
    authorization = tc3_authorization(
        secret_id="AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        service="cvm",
        host="cvm.tencentcloudapi.com",
        timestamp=1551113065,
        payload=payload,
    )
    assert authorization == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


@pytest.fixture
def sms_gateway() -> Iterator[FakeTencentSmsGateway]:
    with FakeTencentSmsGateway() as gateway:
        yield gateway


PHONES = ("+8613800000001", "+8613800000002")


def test_sms_sends_a_signed_sendsms_request(sms_gateway: FakeTencentSmsGateway) -> None:
    channel = channel_from_config("sms", sms_gateway.channel_config())

    receipt = send(channel, make_message("sms", PHONES))

    assert receipt.startswith("SMS via tencent to 2 of 2 numbers; SerialNo 2640:")
    assert "RequestId " in receipt
    [request] = sms_gateway.requests
    assert request.headers["x-tc-action"] == "SendSms"
    assert request.headers["x-tc-version"] == "2021-01-11"
    assert request.headers["x-tc-region"] == "ap-guangzhou"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={FakeTencentSmsGateway.SECRET_ID}/"
    )
    assert request.json() == {
        "PhoneNumberSet": list(PHONES),
        "SmsSdkAppId": "1400000001",
        "SignName": "Gaia",
        "TemplateId": "1234567",
        "TemplateParamSet": ["Node CPU high", "firing", "96.25"],
        "SessionContext": "alert-42-firing-1",
    }


def test_sms_template_params_are_rendered_against_the_notice(
    sms_gateway: FakeTencentSmsGateway,
) -> None:
    params = ["{{ labels.cluster }}", "{{ severity|upper }}", "{{ labels.missing.deeper }}"]
    channel = channel_from_config("sms", sms_gateway.channel_config(template_params=params))

    receipt = send(channel, make_message("sms", PHONES[:1]))

    # The third param fails for this alert: the defaults go out, and the receipt says so.
    assert sms_gateway.requests[0].json()["TemplateParamSet"] == [
        "Node CPU high",
        "firing",
        "96.25",
    ]
    assert "template_params failed" in receipt
    params = ["{{ labels.cluster }}", "{{ severity|upper }}"]
    send(
        channel_from_config("sms", sms_gateway.channel_config(template_params=params)),
        make_message("sms", PHONES[:1]),
    )
    assert sms_gateway.requests[1].json()["TemplateParamSet"] == ["prod-bj", "CRITICAL"]


def test_sms_some_numbers_failing_is_reported_not_raised(
    sms_gateway: FakeTencentSmsGateway,
) -> None:
    sms_gateway.fail_number(
        PHONES[1], "LimitExceeded.PhoneNumberDailyLimit", "the number reached its daily limit"
    )
    receipt = send(
        channel_from_config("sms", sms_gateway.channel_config()),
        make_message("sms", (*PHONES, "13800000003")),
    )

    assert "to 1 of 3 numbers" in receipt
    assert f"failed {PHONES[1]}: LimitExceeded.PhoneNumberDailyLimit" in receipt
    assert "skipped 13800000003: not E.164" in receipt


def test_sms_every_number_failing_raises(sms_gateway: FakeTencentSmsGateway) -> None:
    for phone in PHONES:
        sms_gateway.fail_number(phone, "InvalidParameterValue.IncorrectPhoneNumber", "bad number")
    error = send_fails(
        channel_from_config("sms", sms_gateway.channel_config()), make_message("sms", PHONES)
    )
    assert not error.retryable and "IncorrectPhoneNumber" in error.reason


def test_sms_rate_limit_is_retryable(sms_gateway: FakeTencentSmsGateway) -> None:
    sms_gateway.fail_next("RequestLimitExceeded", "request rate exceeds the limit")
    channel = channel_from_config("sms", sms_gateway.channel_config())
    error = send_fails(channel, make_message("sms", PHONES))
    assert error.retryable and "RequestLimitExceeded" in error.reason
    assert send(channel, make_message("sms", PHONES)).startswith("SMS via tencent to 2 of 2")


def test_sms_wrong_secret_key_fails_the_signature_check_permanently(
    sms_gateway: FakeTencentSmsGateway,
) -> None:
    config = sms_gateway.channel_config(secret_key="not-the-right-secret-key")
    error = send_fails(channel_from_config("sms", config), make_message("sms", PHONES))
    assert not error.retryable and "AuthFailure.SignatureFailure" in error.reason
    assert "not-the-right-secret-key" not in error.reason


def test_sms_scope_date_and_timestamp_come_from_one_instant(
    sms_gateway: FakeTencentSmsGateway,
) -> None:
    # Half a second before midnight UTC: rounding the timestamp one way and taking the date
    # another would sign for the wrong day, which the fake checks (as Tencent does).
    config = SmsConfig.model_validate(sms_gateway.channel_config())
    channel = SmsChannel(config, gateway=TencentSmsGateway(config, clock=lambda: 1767225599.5))
    assert send(channel, make_message("sms", PHONES[:1])).startswith("SMS via tencent to 1 of 1")
    request = sms_gateway.requests[0]
    assert request.headers["x-tc-timestamp"] == "1767225599"
    assert "/2025-12-31/sms/tc3_request" in request.headers["authorization"]


class BatchRecordingGateway:
    """An ``SmsGateway`` of the test's own: records batches, fails from the ``fail_from``-th."""

    name = "stub"

    def __init__(self, *, fail_from: int) -> None:
        self.batches: list[list[str]] = []
        self.fail_from = fail_from

    async def send_batch(
        self, numbers: Sequence[str], params: Sequence[str], *, session_context: str
    ) -> GatewayReply:
        self.batches.append(list(numbers))
        if len(self.batches) >= self.fail_from:
            raise DeliveryError("gateway down", retryable=True)
        return GatewayReply("req-1", [NumberResult(n, True, "Ok", "", f"sn-{n}") for n in numbers])


def test_sms_sends_batches_of_200_and_a_later_failure_does_not_resend_the_first() -> None:
    numbers = tuple(f"+86138{i:08d}" for i in range(250))
    config = SmsConfig.model_validate(
        {
            "secret_id": "i",
            "secret_key": "k",
            "sdk_app_id": "1",
            "sign_name": "G",
            "template_id": "2",
        }
    )
    gateway = BatchRecordingGateway(fail_from=2)

    receipt = send(SmsChannel(config, gateway=gateway), make_message("sms", numbers))

    assert [len(batch) for batch in gateway.batches] == [200, 50]
    assert receipt.startswith("SMS via stub to 200 of 250 numbers; failed +8613800000200, ")
    assert "+8613800000202 and 47 more: BatchFailed gateway down" in receipt
    assert (
        "SerialNo sn-+8613800000000, sn-+8613800000001, sn-+8613800000002 and 197 more" in receipt
    )
    # When the first batch fails nothing went out, so the error is the gateway's.
    error = send_fails(
        SmsChannel(config, gateway=BatchRecordingGateway(fail_from=1)),
        make_message("sms", numbers),
    )
    assert error.retryable and error.reason == "gateway down"


def test_sms_without_e164_numbers_is_permanent(sms_gateway: FakeTencentSmsGateway) -> None:
    error = send_fails(
        channel_from_config("sms", sms_gateway.channel_config()),
        make_message("sms", ("13800000000",)),
    )
    assert not error.retryable and "E.164" in error.reason
    assert sms_gateway.requests == []


# ------------------------------------------------------------------------------------ WeCom


@pytest.fixture
def robot() -> Iterator[FakeWeComRobot]:
    with FakeWeComRobot() as fake:
        yield fake


def test_wecom_posts_markdown(robot: FakeWeComRobot) -> None:
    channel = channel_from_config("wecom", {"webhook_url": robot.webhook_url})

    assert send(channel, make_message("wecom", ("+8613800000001",))) == (
        "WeCom markdown message sent"
    )

    [message] = robot.messages()
    assert set(message) == {"msgtype", "markdown"} and message["msgtype"] == "markdown"
    content = message["markdown"]["content"]
    assert content.startswith('## <font color="warning">FIRING</font> Node CPU high')
    assert "> Cluster: prod-bj" in content
    assert "[Alert record #42](https://gaia.example.com/console/alerts/42)" in content


def test_wecom_markdown_mentions_follow_in_a_text_message(robot: FakeWeComRobot) -> None:
    config = {"webhook_url": robot.webhook_url, "mention_mobiles": True}
    receipt = send(
        channel_from_config("wecom", config),
        make_message("wecom", ("+8613800000001", "13800000002", "@all")),
    )

    assert "then a text message mentioning 3" in receipt
    markdown, mention = robot.messages()
    assert markdown["msgtype"] == "markdown"
    assert mention == {
        "msgtype": "text",
        "text": {
            "content": "[FIRING][critical] Node CPU high (prod-bj)",
            "mentioned_mobile_list": ["13800000001", "13800000002", "@all"],
        },
    }


def test_wecom_text_messages_carry_their_mentions(robot: FakeWeComRobot) -> None:
    config = {"webhook_url": robot.webhook_url, "mention_mobiles": True, "msgtype": "text"}
    send(channel_from_config("wecom", config), make_message("wecom", ("+8613800000001",)))

    [message] = robot.messages()
    assert message["msgtype"] == "text"
    text = message["text"]
    assert text["mentioned_mobile_list"] == ["13800000001"]
    assert text["content"].startswith("FIRING Node CPU high\nSeverity: critical")
    assert "<font" not in text["content"] and "**" not in text["content"]


def test_wecom_long_messages_are_cut_to_the_robots_limit(robot: FakeWeComRobot) -> None:
    notice = make_notice(annotations={"summary": "告警" * 3000})
    send(
        channel_from_config("wecom", {"webhook_url": robot.webhook_url}),
        make_message("wecom", notice=notice),
    )
    [message] = robot.messages()
    assert len(message["markdown"]["content"].encode()) <= 4096


def test_wecom_rate_limit_is_retryable(robot: FakeWeComRobot) -> None:
    robot.fail_next(45009, "api freq out of limit")
    error = send_fails(
        channel_from_config("wecom", {"webhook_url": robot.webhook_url}), make_message("wecom")
    )
    assert error.retryable and "45009" in error.reason


def test_wecom_invalid_webhook_is_permanent_and_hides_the_key(robot: FakeWeComRobot) -> None:
    url = f"{robot.origin}/cgi-bin/webhook/send?key=wrong-key-0000-1111"
    error = send_fails(channel_from_config("wecom", {"webhook_url": url}), make_message("wecom"))
    assert not error.retryable and "93000" in error.reason and "invalid webhook url" in error.reason
    assert "wrong-key-0000-1111" not in error.reason


# ---------------------------------------------------------------------------------- webhook

ALERTMANAGER_V4_KEYS = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
ALERTMANAGER_ALERT_KEYS = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
}
SECRET = "webhook-hmac-secret-0123456789"
NOW = 1772352000.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as fake:
        yield fake


def webhook(url: str, **config: Any) -> WebhookChannel:
    return WebhookChannel(WebhookConfig(url=url, **config), clock=lambda: NOW)


def test_webhook_posts_an_alertmanager_v4_payload(receiver: WebhookReceiver) -> None:
    channel = webhook(receiver.url, headers={"Authorization": "Bearer t0ken-abc"})

    receipt = send(channel, make_message("webhook"))

    assert receipt == f"HTTP 200 from {receiver.origin}"
    [request] = receiver.requests
    assert request.headers["authorization"] == "Bearer t0ken-abc"
    assert request.headers["x-gaia-idempotency-key"] == "alert-42-firing-1"
    assert request.headers["content-type"] == "application/json"
    payload = request.json()
    assert set(payload) >= ALERTMANAGER_V4_KEYS and set(payload) - ALERTMANAGER_V4_KEYS == {"gaia"}
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["truncatedAlerts"] == 0 and payload["receiver"] == "gaia"
    assert payload["externalURL"] == "https://gaia.example.com"
    [alert] = payload["alerts"]
    assert set(alert) == ALERTMANAGER_ALERT_KEYS
    assert alert["labels"]["alertname"] == "Node CPU high"
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["node"] == "node-7"
    assert alert["annotations"] == {
        "summary": "CPU above 90% on node-7",
        "description": "for 5 minutes",
    }
    assert alert["startsAt"] == "2026-03-01T08:00:00Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"  # Go's zero time: still firing
    assert alert["generatorURL"] == "https://gaia.example.com/console/alerts/42"
    assert alert["fingerprint"] == "f00dfeedcafe0001"
    assert payload["commonLabels"] == payload["groupLabels"] == alert["labels"]
    assert payload["groupKey"] == (
        '{}:{alertname="Node CPU high", cluster="prod-bj", metric="node_cpu_utilization", '
        'node="node-7", severity="critical"}'
    )
    assert payload["gaia"] == {
        "recordId": 42,
        "alertName": "Node CPU high",
        "severity": "critical",
        "value": 96.25,
        "threshold": 90.0,
        "url": "https://gaia.example.com/console/alerts/42",
    }


def test_webhook_resolved_alert_has_its_end(receiver: WebhookReceiver) -> None:
    ended = STARTED + dt.timedelta(minutes=12, microseconds=250000)
    send(
        webhook(receiver.url),
        make_message("webhook", notice=make_notice(status="resolved", ends_at=ended)),
    )
    payload = receiver.requests[0].json()
    assert payload["status"] == payload["alerts"][0]["status"] == "resolved"
    assert payload["alerts"][0]["endsAt"] == "2026-03-01T08:12:00.25Z"


def test_webhook_signature_verifies_and_tampering_does_not(receiver: WebhookReceiver) -> None:
    send(webhook(receiver.url, hmac_secret=SECRET), make_message("webhook"))
    [request] = receiver.requests
    timestamp = request.headers["x-gaia-timestamp"]
    signature = request.headers["x-gaia-signature"]
    assert timestamp == str(int(NOW)) and signature.startswith("sha256=")

    assert verify_signature(SECRET, timestamp, request.body, signature, now=NOW + 30)
    tampered = request.body.replace(b'"firing"', b'"resolved"')
    assert not verify_signature(SECRET, timestamp, tampered, signature, now=NOW)
    assert not verify_signature(
        "another-secret-0123456", timestamp, request.body, signature, now=NOW
    )
    assert not verify_signature(SECRET, str(int(NOW) + 1), request.body, signature, now=NOW)
    # A replay ten minutes later is refused even with the right signature.
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=NOW + 600)
    assert verify_signature(
        SECRET,
        timestamp,
        request.body,
        signature,
        now=dt.datetime.fromtimestamp(NOW, dt.UTC),
    )


def test_webhook_unsigned_when_no_secret(receiver: WebhookReceiver) -> None:
    send(webhook(receiver.url), make_message("webhook"))
    assert "x-gaia-signature" not in receiver.requests[0].headers


def test_webhook_503_with_retry_after_is_retryable(receiver: WebhookReceiver) -> None:
    receiver.reply_next(Reply(503, b"overloaded", {"Retry-After": "7"}))
    error = send_fails(webhook(receiver.url), make_message("webhook"))
    assert error.retryable and error.retry_after == 7
    # the status and its standard phrase, never the far side's body (issue 15)
    assert "HTTP 503 Service Unavailable" in error.reason and "overloaded" not in error.reason


def test_webhook_429_is_retryable(receiver: WebhookReceiver) -> None:
    receiver.reply_next(Reply(429, b""))
    error = send_fails(webhook(receiver.url), make_message("webhook"))
    assert error.retryable and error.retry_after is None


def test_webhook_400_is_permanent_and_hides_the_url_token(receiver: WebhookReceiver) -> None:
    receiver.reply_next(Reply(400, {"error": "unknown field"}))
    error = send_fails(
        webhook(receiver.url, headers={"X-Token": "hdr-secret-99"}), make_message("webhook")
    )
    assert not error.retryable and "HTTP 400 Bad Request" in error.reason
    assert "unknown field" not in error.reason  # the far side's body is not quoted (issue 15)
    assert "receiver-token-1" not in error.reason and "/hooks" not in error.reason


def test_webhook_redirect_is_not_followed(receiver: WebhookReceiver) -> None:
    receiver.reply_next(Reply(302, b"", {"Location": "https://elsewhere.example.com/x?t=1"}))
    error = send_fails(webhook(receiver.url), make_message("webhook"))
    assert not error.retryable and "https://elsewhere.example.com" in error.reason
    assert len(receiver.requests) == 1


def test_webhook_timeout_is_retryable(receiver: WebhookReceiver) -> None:
    receiver.stall_next()
    try:
        error = send_fails(webhook(receiver.url, timeout=0.3), make_message("webhook"))
    finally:
        receiver.release()
    assert error.retryable and "did not answer within 0.3 s" in error.reason


def test_webhook_connection_refused_is_retryable() -> None:
    error = send_fails(webhook(f"http://127.0.0.1:{free_port()}/hook"), make_message("webhook"))
    assert error.retryable and "cannot reach" in error.reason


def test_retry_after_accepts_an_http_date() -> None:
    assert parse_retry_after("Sun, 01 Mar 2026 08:00:30 GMT", now=STARTED.timestamp()) == 30
    assert parse_retry_after("120") == 120
    assert parse_retry_after("soon") is None


# ------------------------------------------------------------------------ configs, templates


def invalid(kind: str, config: dict[str, Any]) -> str:
    with pytest.raises(InvalidRequest) as caught:
        validate_channel_config(kind, config)
    return caught.value.message


EMAIL = {"host": "smtp.example.com", "sender": "alerts@example.com"}


def test_config_trims_names_but_takes_secrets_as_given() -> None:
    config = validate_channel_config(
        "email",
        {
            "host": " smtp.example.com\n",
            "sender": "alerts@example.com ",
            "username": "u ",
            "password": " pass phrase ",
        },
    )
    assert (config["host"], config["sender"], config["username"]) == (
        "smtp.example.com",
        "alerts@example.com",
        "u",
    )
    assert config["password"] == " pass phrase "


def test_email_config_defaults_are_filled_in() -> None:
    assert validate_channel_config("email", EMAIL) == {
        **EMAIL,
        "port": 587,
        "security": "starttls",
        "username": None,
        "password": None,
        "ca_pem": None,
        "verify": True,
        "timeout": 10.0,
    }
    assert validate_channel_config("email", {**EMAIL, "security": "tls"})["port"] == 465
    assert validate_channel_config("email", {**EMAIL, "security": "none"})["port"] == 25


@pytest.mark.parametrize(
    ("kind", "config", "expected"),
    [
        ("email", {"host": "smtp.example.com"}, "sender: Field required"),
        ("email", {**EMAIL, "sender": "alerts"}, "sender must be an email address"),
        ("email", {**EMAIL, "port": 70000}, "port: Input should be less than or equal to 65535"),
        ("email", {**EMAIL, "pasword": "x"}, "pasword: unknown field (the email config has:"),
        ("email", {**EMAIL, "host": "smtp://mail"}, "host is a name or an address"),
        ("email", {**EMAIL, "username": "u"}, "username and password go together"),
        (
            "email",
            {**EMAIL, "security": "none", "username": "u", "password": "p"},
            "refusing to send the SMTP password unencrypted",
        ),
        ("email", {**EMAIL, "ca_pem": "not a pem"}, "ca_pem is not a PEM certificate"),
        ("webhook", {"url": "ftp://example.com/hook"}, "url must start with https://"),
        ("webhook", {"url": "not a url"}, "url"),
        (
            "webhook",
            {"url": "https://h.example.com", "headers": {"Host": "x"}},
            "header Host is set by Gaia",
        ),
        ("webhook", {"url": "https://h.example.com", "hmac_secret": "short"}, "hmac_secret"),
        (
            "wecom",
            {"webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"},
            "webhook_url must be the robot's",
        ),
        ("wecom", {"webhook_url": "http://qyapi.weixin.qq.com/x?key=1"}, "webhook_url must be"),
        ("wecom", {"webhook_url": "https://x.example.com", "msgtype": "news"}, "msgtype"),
        ("sms", {"provider": "aliyun"}, "provider: Input should be 'tencent'"),
        ("sms", {"template_params": ["{{ oops"]}, "template_params: template_params[0]"),
        ("sms", {"endpoint": "https://sms.tencentcloudapi.com/v1"}, "endpoint is the API's origin"),
        ("pager", {}, "unknown channel kind 'pager'"),
    ],
)
def test_bad_configs_are_rejected_naming_the_field(
    kind: str, config: dict[str, Any], expected: str
) -> None:
    assert expected in invalid(kind, config)


def test_config_errors_list_every_bad_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_channel_config("sms", {"secret_id": "id"})
    fields = {problem["field"] for problem in caught.value.details}
    assert fields == {"secret_key", "sdk_app_id", "sign_name", "template_id"}


def test_sms_config_accepts_numeric_ids() -> None:
    config = validate_channel_config(
        "sms",
        {
            "secret_id": "i",
            "secret_key": "k",
            "sdk_app_id": 1400000001,
            "sign_name": "Gaia",
            "template_id": 1234567,
        },
    )
    assert config["sdk_app_id"] == "1400000001" and config["template_id"] == "1234567"
    assert config["template_params"] == ["{{ alert_name }}", "{{ status }}", "{{ value_text }}"]
    assert config["region"] == "ap-guangzhou"


def test_secret_fields_name_the_credentials() -> None:
    assert {
        "email": frozenset({"password"}),
        "sms": frozenset({"secret_key"}),
        "wecom": frozenset({"webhook_url"}),
        "webhook": frozenset({"hmac_secret", "headers"}),
    } == SECRET_FIELDS


def test_channels_satisfy_the_protocol(robot: FakeWeComRobot) -> None:
    for kind, config in [
        ("email", EMAIL),
        (
            "sms",
            {
                "secret_id": "i",
                "secret_key": "k",
                "sdk_app_id": "1",
                "sign_name": "G",
                "template_id": "2",
            },
        ),
        ("wecom", {"webhook_url": robot.webhook_url}),
        ("webhook", {"url": "https://hooks.example.com/a"}),
    ]:
        channel = channel_from_config(kind, config)
        assert isinstance(channel, Channel) and channel.kind == kind


def test_custom_templates_render_against_the_notice() -> None:
    subject, body = render_message(
        "email",
        make_notice(),
        subject_template="{{ alert_name }} on {{ labels.node }}",
        body_template="{{ summary }}: {{ value_text }} > {{ threshold_text }}"
        " since {{ starts_at_text }}",
    )
    assert subject == "Node CPU high on node-7"
    assert body == "CPU above 90% on node-7: 96.25 > 90 since 2026-03-01 08:00:00 UTC"


def test_default_sms_text_stays_short() -> None:
    notice = make_notice(labels={"cluster": "c" * 400}, url="https://gaia.example.com/" + "x" * 300)
    _, body = render_message("sms", notice, subject_template=None, body_template=None)
    assert len(body) <= 300 and body.startswith("[Gaia] FIRING critical: Node CPU high @ccc")


def test_resolved_notice_reads_as_resolved() -> None:
    notice = make_notice(status="resolved", ends_at=STARTED + dt.timedelta(hours=1, minutes=5))
    subject, body = render_message("email", notice, subject_template=None, body_template=None)
    assert subject.startswith("[RESOLVED]")
    assert "Resolved:  2026-03-01 09:05:00 UTC (after 1h 5m)" in body
    _, markdown = render_message("wecom", notice, subject_template=None, body_template=None)
    assert markdown.startswith('## <font color="info">RESOLVED</font>')


def test_a_template_that_fails_at_send_time_falls_back_and_says_so() -> None:
    subject, body = render_message(
        "email",
        make_notice(),
        subject_template="{{ labels.gpu.upper() }}",
        body_template="{{ value + 'x' }}",
    )
    assert subject == "[FIRING][critical] Node CPU high (prod-bj)"
    assert "Node CPU high is FIRING" in body
    assert "the subject template failed" in body and "the body template failed" in body


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ alert_name ", "template error on line 1"),
        ("{% for x in labels %}", "template error on line 1"),
        ("{{ alert_name|no_such_filter }}", "no_such_filter"),
        ("{{ ''.__class__.__mro__ }}", "not allowed"),
        ("{{ 'x' * 100000000 }}", "not allowed"),
        ("{{ value / 0 }}", "ZeroDivisionError"),
    ],
)
def test_check_template_rejects_broken_or_unsafe_templates(template: str, expected: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template(template)
    assert expected in caught.value.message


def test_check_template_accepts_labels_the_sample_lacks() -> None:
    check_template("{{ labels.gpu_model.upper() }} {{ alert_name }}")
    check_template(json.dumps({"text": "{{ summary }}"}))
