"""POST /api/subscribers: the center's own contact-form backend forwards an opt-in.

Authorized by an API key (`Authorization: Bearer tdk_...`, from `tidings apikeys create`);
no CSRF (no browser session is involved). Answers JSON: 202 accepted (the same whatever the
address's state), 401 for a missing, unknown or revoked key, 415 for a body that is not JSON,
400 for malformed JSON, 422 naming every bad field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, request

from tidings.errors import InvalidInput
from tidings.subscribers.apikeys import authenticate
from tidings.subscribers.forms import (
    CONSENT_TEXT_MAX_CHARS,
    InvalidFields,
    SignUp,
    check_ip,
    check_sign_up,
)
from tidings.subscribers.lifecycle import Consent
from tidings.subscribers.signups import receive
from tidings.web.app import context

blueprint = Blueprint("api", __name__, url_prefix="/api")

FIELDS = ("email", "name", "timezone", "consent_text", "source", "ip", "user_agent")
SOURCE_MAX_CHARS = 200
USER_AGENT_MAX_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _unauthorized() -> Any:
    response = jsonify(
        {"error": "a valid API key is required: Authorization: Bearer <key from tidings apikeys>"}
    )
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="tidings"'
    return response


def _presented_key() -> str | None:
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _text(
    data: dict[str, Any], field: str, errors: dict[str, str], limit: int, required: bool = False
) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            errors[field] = "is required"
        return None
    if not isinstance(value, str):
        errors[field] = "must be a string"
        return None
    if len(value) > limit:
        errors[field] = f"is {len(value)} characters long; the limit is {limit}"
        return None
    if required and not value.strip():
        errors[field] = "must not be empty"
        return None
    return value


@dataclass(frozen=True)
class _OptIn:
    sign_up: SignUp
    consent_text: str
    source: str | None
    ip: str | None
    user_agent: str | None


# Long: every field of the request checked in turn, so that all errors come back at once.
def _read_body() -> tuple[_OptIn | None, Any]:
    """The opt-in in the request's JSON, or the answer that refuses it (415, 400, 422)."""
    if not request.is_json:
        return None, (
            jsonify({"error": "send a JSON object (Content-Type: application/json)"}),
            415,
        )
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return None, (jsonify({"error": "the body must be a JSON object"}), 400)

    errors: dict[str, str] = {}
    for field in data:
        if field not in FIELDS:
            errors[str(field)[:100]] = f"unknown field (expected: {', '.join(FIELDS)})"
    email = _text(data, "email", errors, 10_000, required=True)
    name = _text(data, "name", errors, 10_000)
    timezone = _text(data, "timezone", errors, 10_000)
    consent_text = _text(data, "consent_text", errors, CONSENT_TEXT_MAX_CHARS, required=True)
    source = _text(data, "source", errors, SOURCE_MAX_CHARS)
    user_agent = _text(data, "user_agent", errors, USER_AGENT_MAX_CHARS)
    ip_text = _text(data, "ip", errors, 100)
    for field, value in (("source", source), ("user_agent", user_agent)):
        if value is not None and _CONTROL.search(value):
            errors[field] = "must be one line without control characters"
    ip = None
    try:
        ip = check_ip(ip_text)
    except InvalidInput as exc:
        errors["ip"] = exc.reason
    sign_up = None
    try:
        sign_up = check_sign_up(email, name, timezone)
    except InvalidFields as exc:
        for field, reason in exc.errors.items():
            errors.setdefault(field, reason)  # a type error found above says more
    if errors or sign_up is None or consent_text is None:
        return None, (jsonify({"error": "some fields are invalid", "errors": errors}), 422)
    return _OptIn(sign_up, consent_text, source, ip, user_agent or None), None


@blueprint.post("/subscribers")
def create_subscriber() -> Any:
    ctx = context()
    now = ctx.runtime.clock.now()
    opt_in, refusal = _read_body()  # no database yet: one transaction below does it all
    with ctx.runtime.sessions.begin() as session:
        key = authenticate(session, _presented_key(), now)
        if key is None:
            return _unauthorized()  # whatever the body: a stranger learns nothing from it
        if opt_in is None:
            return refusal
        evidence = f"forwarded with API key {key.name!r}" + (
            f"; source: {opt_in.source}" if opt_in.source else ""
        )
        consent = Consent(
            source="api",
            evidence=evidence,
            consent_text=opt_in.consent_text,
            ip=opt_in.ip,
            user_agent=opt_in.user_agent,
        )
        receive(session, opt_in.sign_up, consent, now)
    return (
        jsonify(
            {
                "status": "accepted",
                "message": "If this address can be subscribed, a confirmation email is on its "
                "way; the subscription starts when its link is opened.",
            }
        ),
        202,
    )
