"""What the public pages share: the blueprint, the unit of work and clock of a request, the
consent evidence of a request, and links between a subscriber's pages."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, render_template, request, url_for
from sqlalchemy.orm import Session

from tidings.clock import zone_or_utc
from tidings.db.models import Subscriber
from tidings.states import SubscriberStatus
from tidings.subscribers.forms import (
    EMAIL_MAX_CHARS,
    TIMEZONE_MAX_CHARS,
    subscriber_for_token,
)
from tidings.subscribers.lifecycle import Consent
from tidings.subscribers.tokens import InvalidToken, make_token
from tidings.subscribers.validation import NAME_MAX_CHARS
from tidings.web.app import context

log = logging.getLogger(__name__)
blueprint = Blueprint("pages", __name__)

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
LIMITS = {"email": EMAIL_MAX_CHARS, "name": NAME_MAX_CHARS, "timezone": TIMEZONE_MAX_CHARS}
STILL_RECEIVING = (SubscriberStatus.PENDING, SubscriberStatus.ACTIVE)


def request_time() -> datetime:
    return context().runtime.clock.now()


def unit_of_work() -> Any:
    return context().runtime.sessions.begin()


def reading() -> Any:
    """A unit of work that only reads: on SQLite it takes no write lock."""
    return context().runtime.read_sessions.begin()


def consent_here(
    source: str, evidence: str | None = None, consent_text: str | None = None
) -> Consent:
    return Consent(
        source=source,
        evidence=evidence,
        consent_text=consent_text,
        ip=request.remote_addr,
        user_agent=request.user_agent.string[:300] or None,
    )


def link_for(scope: str, subscriber: Subscriber) -> str:
    """A same-site path for another page of this subscriber (never an absolute URL taken from
    the request)."""
    token = make_token(context().secret, scope, subscriber.key)
    return url_for(f"pages.{scope}", token=token)


def invalid_link(scope: str) -> Any:
    return (
        render_template(
            "web/link_invalid.html", scope=scope, title="Error: This link does not work"
        ),
        404,
    )


def lookup(session: Session, scope: str, token: str) -> Subscriber | None:
    try:
        return subscriber_for_token(session, context().secret, scope, token, request_time())
    except InvalidToken:
        return None


def first_name(subscriber: Subscriber) -> str:
    return subscriber.name.split(" ")[0] if subscriber.name else ""


def local_date(at: datetime, tz_name: str) -> str:
    local = at.astimezone(zone_or_utc(tz_name))
    return f"{local:%A} {local.day} {local:%B %Y}"
