"""Rendering a ladder step into what the customer reads, per channel and locale."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, StrictUndefined
from pydantic import BaseModel

from dunning.models import Channel


class RenderedMessage(BaseModel):
    subject: str | None = None
    text: str
    html: str | None = None


_env = Environment(undefined=StrictUndefined, autoescape=False)

_SUBJECTS = {
    "payment_failed": "We couldn't process your payment",
    "reminder": "A reminder about your payment",
    "final_notice": "Action needed to keep your account active",
    "suspended": "Your access is paused until your payment is updated",
    "recovered": "Thank you, your payment went through",
    "canceled": "Your subscription has been canceled",
}

_BODY = (
    "Hi {{ customer_name or 'there' }},\n"
    "{% if template == 'recovered' %}thank you, your payment went through and your account is all set."
    "{% elif template == 'canceled' %}your subscription has been canceled because the payment could not be "
    "collected. You can restart it any time: {{ update_url }}"
    "{% elif template == 'suspended' %}your access is paused until the payment is sorted out. Update your "
    "card to restore it at once: {{ update_url }}"
    "{% else %}we couldn't process your payment. Please update your card: {{ update_url }}{% endif %}"
)


def render_message(
    template: str, channel: Channel, context: Mapping[str, Any], locale: str = "en"
) -> RenderedMessage:
    text = _env.from_string(_BODY).render(template=template, **{"customer_name": None, **context})
    if channel is Channel.SMS:
        return RenderedMessage(text=text.replace("\n", " ") + " Reply STOP to opt out.")
    return RenderedMessage(subject=_SUBJECTS.get(template, "About your subscription"), text=text)
