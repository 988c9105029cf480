"""Subject and body text for a notification, from the notice and an optional user template.

Templates are Jinja2, rendered in an immutable sandbox because users write them: a template can
read the notice but cannot reach Python internals, mutate what it is given, build huge strings
by multiplication, or produce more than ``MAX_OUTPUT`` characters. The names a template sees
are ``template_context()``'s: the notice's fields, ``summary``/``description`` from its
annotations, and ready-made text (``value_text``, ``starts_at_text``, ``duration_text``...).

Each channel kind has its own default body (email: readable plain text; sms: one short line, at
most ``SMS_MAX_CHARS``; wecom: WeCom markdown; webhook: the email text, since the webhook sends
a structured payload and uses the body only for previews). All kinds share the subject.

A template is checked when it is saved (``check_template`` raises ``InvalidRequest``). If one
still fails when a notification is rendered (a label that is missing for this alert, a value
that is None), the notification is not dropped: the default template is used and the body says
so, so that whoever reads it knows to fix the template.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gaia.domain.errors import InvalidRequest
from gaia.monitor.alerting.channels._base import AlertNotice

MAX_OUTPUT = 64 * 1024  # characters one template may produce
MAX_REPEAT = 10_000  # the largest string/list a template may build with "*"
SMS_MAX_CHARS = 300
SUBJECT_MAX_CHARS = 200


class _AlertSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits on ``*`` and ``**``: ``{{ "x" * 10**9 }}`` must not take the
    platform's memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_REPEAT
                ):
                    raise SecurityError(f"a template may not build sequences over {MAX_REPEAT}")
        return super().call_binop(context, operator, left, right)


_env = _AlertSandbox(trim_blocks=True, lstrip_blocks=True, autoescape=False)


SUBJECT_TEMPLATE = (
    "[{{ status|upper }}][{{ severity }}] {{ alert_name }}"
    "{% if labels.cluster %} ({{ labels.cluster }}){% endif %}"
)

EMAIL_BODY_TEMPLATE = """\
{{ alert_name }} is {{ status|upper }}\
{% if labels.cluster %} on cluster {{ labels.cluster }}{% endif %}.

Severity:  {{ severity }}
Value:     {{ value_text }}\
{% if threshold is not none %} (threshold {{ threshold_text }}){% endif %}

Started:   {{ starts_at_text }}
{% if ends_at %}
Resolved:  {{ ends_at_text }} (after {{ duration_text }})
{% endif %}
{% if summary %}

{{ summary }}
{% endif %}
{% if description %}

{{ description }}
{% endif %}
{% if labels %}

Labels:
{% for name, text in labels|dictsort %}
  {{ name }} = {{ text }}
{% endfor %}
{% endif %}

Alert record #{{ record_id }}{% if url %}: {{ url }}{% endif %}

"""

SMS_BODY_TEMPLATE = (
    "[Gaia] {{ status|upper }} {{ severity }}: {{ alert_name }}"
    "{% if labels.cluster %} @{{ labels.cluster }}{% endif %}"
    "{% if labels.instance %} {{ labels.instance }}{% elif labels.node %} {{ labels.node }}"
    "{% endif %}"
    " value {{ value_text }}{% if threshold is not none %} (threshold {{ threshold_text }})"
    "{% endif %}"
    "{% if ends_at %}, resolved {{ ends_at_text }}{% else %}, since {{ starts_at_text }}"
    "{% endif %}"
    "{% if url %} {{ url }}{% endif %}"
)

# WeCom markdown: colours are "info" (green), "comment" (grey) and "warning" (orange-red).
WECOM_BODY_TEMPLATE = """\
{% set color = "info" if status == "resolved" else "warning" %}
## <font color="{{ color }}">{{ status|upper }}</font> {{ alert_name }}
> Severity: <font color="{{ color }}">{{ severity }}</font>
{% if labels.cluster %}
> Cluster: {{ labels.cluster }}
{% endif %}
{% for name in ["business", "app", "node", "instance"] if labels[name] %}
> {{ name|capitalize }}: {{ labels[name] }}
{% endfor %}
> Value: <font color="{{ color }}">{{ value_text }}</font>\
{% if threshold is not none %} (threshold {{ threshold_text }}){% endif %}

> Started: {{ starts_at_text }}
{% if ends_at %}
> Resolved: {{ ends_at_text }} (after {{ duration_text }})
{% endif %}
{% if summary %}

**{{ summary }}**
{% endif %}
{% if description %}
{{ description }}
{% endif %}
{% if url %}

[Alert record #{{ record_id }}]({{ url }})
{% endif %}
"""

DEFAULT_BODY_TEMPLATES: Mapping[str, str] = {
    "email": EMAIL_BODY_TEMPLATE,
    "sms": SMS_BODY_TEMPLATE,
    "wecom": WECOM_BODY_TEMPLATE,
    "webhook": EMAIL_BODY_TEMPLATE,
}


def number_text(value: float | None) -> str:
    """A value for people: ``87.53``, ``3``, ``0.0004231``, ``n/a``."""
    if value is None:
        return "n/a"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def time_text(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def duration_text(start: dt.datetime, end: dt.datetime | None) -> str:
    if end is None:
        return ""
    seconds = max(0, int((end - start).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if not (days or hours) and (secs or not minutes):
        parts.append(f"{secs}s")  # seconds matter only for short alerts
    return " ".join(parts)


def template_context(notice: AlertNotice) -> dict[str, Any]:
    """The names a template can use."""
    return {
        "status": notice.status,
        "firing": notice.status == "firing",
        "alert_name": notice.alert_name,
        "severity": notice.severity,
        "labels": dict(notice.labels),
        "annotations": dict(notice.annotations),
        "summary": notice.annotations.get("summary", ""),
        "description": notice.annotations.get("description", ""),
        "value": notice.value,
        "threshold": notice.threshold,
        "value_text": number_text(notice.value),
        "threshold_text": number_text(notice.threshold),
        "starts_at": notice.starts_at,
        "ends_at": notice.ends_at,
        "starts_at_text": time_text(notice.starts_at),
        "ends_at_text": time_text(notice.ends_at),
        "duration_text": duration_text(notice.starts_at, notice.ends_at),
        "fingerprint": notice.fingerprint,
        "record_id": notice.record_id,
        "url": notice.url,
    }


SAMPLE_NOTICE = AlertNotice(
    status="firing",
    alert_name="GPU utilisation high",
    severity="warning",
    labels={
        "alertname": "GPU utilisation high",
        "cluster": "prod-bj",
        "business": "search",
        "app": "ranker",
        "instance": "ranker-7c9d-0",
        "node": "gpu-node-3",
        "metric": "gpu_utilization",
    },
    annotations={"summary": "GPU utilisation above 90%", "description": "for 5 minutes"},
    value=97.5,
    threshold=90.0,
    starts_at=dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC),
    ends_at=None,
    fingerprint="0123456789abcdef",
    record_id=42,
    url="https://gaia.example.com/alerts/42",
)
"""What ``check_template`` renders a template against, and what previews may show."""


@functools.lru_cache(maxsize=512)
def _compiled(text: str) -> Template:
    """Compiling costs milliseconds (the default templates included); the delivery loop renders
    the same few templates thousands of times, so compiled ones are kept by their text."""
    return _env.from_string(text)


def render_template(text: str, context: Mapping[str, Any]) -> str:
    """Render one template in the sandbox; at most ``MAX_OUTPUT`` characters come out."""
    template = _compiled(text)
    out: list[str] = []
    size = 0
    for chunk in template.generate(dict(context)):
        out.append(chunk)
        size += len(chunk)
        if size > MAX_OUTPUT:
            break
    return "".join(out)[:MAX_OUTPUT]


def check_template(text: str) -> None:
    """Raise ``InvalidRequest`` if ``text`` is not a template that can render a notice.

    A syntax error, an unknown filter or an unsafe access is rejected. A template that only
    fails because the sample alert lacks a label it uses is accepted: real alerts may have it.
    """
    try:
        _env.parse(text)
        _env.from_string(text)  # compiles: unknown filters and tests fail here
    except TemplateSyntaxError as exc:
        raise InvalidRequest(
            f"template error on line {exc.lineno}: {exc.message}",
            details={"line": exc.lineno, "message": exc.message},
        ) from None
    except TemplateError as exc:
        raise InvalidRequest(f"template error: {exc.message or exc}") from None
    try:
        render_template(text, template_context(SAMPLE_NOTICE))
    except UndefinedError:
        pass
    except SecurityError as exc:
        raise InvalidRequest(f"template not allowed: {exc}") from None
    except Exception as exc:  # anything a render can raise: a TypeError, a ZeroDivisionError
        raise InvalidRequest(
            f"template fails on a sample alert: {type(exc).__name__}: {exc}"
        ) from None


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render_message(
    kind: str,
    notice: AlertNotice,
    *,
    subject_template: str | None,
    body_template: str | None,
) -> tuple[str, str]:
    """``(subject, body)`` for a ``kind`` channel; ``None`` templates mean the defaults."""
    if kind not in DEFAULT_BODY_TEMPLATES:
        raise InvalidRequest(
            f"unknown channel kind {kind!r}; expected one of {', '.join(DEFAULT_BODY_TEMPLATES)}"
        )
    context = template_context(notice)
    failures: list[str] = []

    def render(custom: str | None, default: str, part: str) -> str:
        if custom:
            try:
                return render_template(custom, context)
            except Exception as exc:
                failures.append(f"the {part} template failed ({type(exc).__name__}: {exc})")
        return render_template(default, context)

    subject = _one_line(render(subject_template, SUBJECT_TEMPLATE, "subject"), SUBJECT_MAX_CHARS)
    body = render(body_template, DEFAULT_BODY_TEMPLATES[kind], "body").strip()

    if kind == "sms":
        note = " (template error; default used)" if failures else ""
        body = _one_line(body, SMS_MAX_CHARS - len(note)) + note
    elif failures:
        note = "; ".join(failures) + ", so the default template was used. Fix the template."
        body = f"{body}\n\n{'> ' if kind == 'wecom' else ''}Note from Gaia: {note}"
    return subject, body
