"""The public pages: sign up, confirm, come back, unsubscribe (incl. RFC 8058 one-click),
preferences, the web view of a campaign's emails, and the health check. Their paths are fixed:
they appear in emails already sent.

Every view works in one unit of work (`with sessions.begin()`), reads time from the runtime's
clock, and answers with a page; nothing here reveals whether an address is subscribed.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask_wtf.csrf import CSRFError

from tidings.web.app import context, error_response
from tidings.web.public import health, links, signup, webview
from tidings.web.public.common import ONE_CLICK_FIELD, ONE_CLICK_VALUE, blueprint

__all__ = ["blueprint", "csrf_exempt", "csrf_failed", "health", "links", "signup", "webview"]


def csrf_exempt() -> bool:
    """The POSTs that carry no CSRF token by design: RFC 8058's one-click unsubscribe (sent by
    mail providers, authorized by the signed token in its URL), and the embedded sign-up form
    posted from a site listed in TIDINGS_FORM_ORIGINS (browsers set Origin; pages elsewhere
    cannot forge it), and the buttons of the confirm and come-back links (authorized by their
    signed, expiring token; they must work in a browser that never saw our pages)."""
    if request.endpoint in ("pages.confirm", "pages.comeback"):
        return True
    if request.endpoint == "pages.unsubscribe":
        return request.form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
    if request.endpoint == "pages.subscribe":
        origin = (request.headers.get("Origin") or "").lower().rstrip("/")
        return origin in context().form_origins
    return False


def csrf_failed(exc: CSRFError) -> Any:
    """A form without a valid CSRF token: nothing is stored. The sign-up form comes back filled
    in, with a fresh token, so a person (e.g. from an embedded form) only has to send it again."""
    if request.endpoint == "pages.subscribe":
        return signup.subscribe_form(
            signup.sign_up_values(),
            {},
            400,
            notice="For your security, please check the details below and send the form again.",
        )
    return error_response(
        400, "This form has expired or was sent from another site. Please reload the page."
    )
