"""One email of a campaign: the rendered email at phone and desktop width, its text part,
headers and lint findings; a spam score; a test send.

The email's html is served by a route of its own (`email_html`) into sandboxed iframes: the
sandbox (no scripts, no same origin) and that response's own Content-Security-Policy (the
email's inline styles, images, no script at all) keep whatever an email holds away from the
console's session.
"""

from __future__ import annotations

import re
from typing import Any

from flask import g, make_response, redirect, render_template, request, url_for

from tidings.ops.previews import email_view, preview_step
from tidings.ops.spamcheck import THRESHOLD, SpamCheckUnavailable, score_step
from tidings.sending.oneoff import send_tests
from tidings.states import SendOutcome
from tidings.web.app import context
from tidings.web.staff import now, staff_route, unit_of_work

# The email's own page, framed by the console only: its inline styles and images, no script,
# no form, no plugin, no base URL of its own.
EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
_SEPARATORS = re.compile(r"[,;\s]+")
MAX_ADDRESSES_TEXT = 2000  # characters of the "to" field read


@staff_route("/campaigns/<slug>/steps/<key>")
def email(slug: str, key: str) -> Any:
    view = email_view(context().runtime, slug, key)
    sent = request.args.get("sent", "")
    notice = f"Test sent to {sent} address(es)." if sent.isdigit() else None
    return render_template(
        "staff/email.html",
        title=view.email.subject,
        slug=slug,
        view=view,
        notice=notice,
        error=None,
    )


@staff_route("/campaigns/<slug>/steps/<key>/html")
def email_html(slug: str, key: str) -> Any:
    email = preview_step(context().runtime, slug, key)
    response = make_response(email.html)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    # Set before the app's after_request, which only fills in headers a view left unset.
    response.headers["Content-Security-Policy"] = EMAIL_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@staff_route(
    "/campaigns/<slug>/steps/<key>/spamcheck", permission="campaigns.spamcheck", methods=("POST",)
)
def email_spamcheck(slug: str, key: str) -> Any:
    try:
        email, score = score_step(context().runtime, slug, key)
    except SpamCheckUnavailable as exc:  # not installed here: a page that says so, not an error
        return render_template(
            "staff/email_spam.html",
            title="Spam score",
            slug=slug,
            key=key,
            email=None,
            score=None,
            unavailable=str(exc),
            threshold=THRESHOLD,
        )
    return render_template(
        "staff/email_spam.html",
        title=f"Spam score: {email.subject}",
        slug=slug,
        key=key,
        email=email,
        score=score,
        unavailable=None,
        threshold=THRESHOLD,
    )


@staff_route(
    "/campaigns/<slug>/steps/<key>/test-send", permission="campaigns.test-send", methods=("POST",)
)
def email_test_send(slug: str, key: str) -> Any:
    typed = request.form.get("to", "")[:MAX_ADDRESSES_TEXT]
    addresses = [a for a in _SEPARATORS.split(typed) if a] or [g.staff.user.email]
    with unit_of_work() as session:
        sends = send_tests(context().runtime, session, now(), slug, addresses, key)
    if all(send.result.outcome == SendOutcome.SENT for _, send in sends):
        return redirect(url_for("staff.email", slug=slug, key=key, sent=len(sends)), 303)
    return render_template(
        "staff/email_sent.html", title="Test send", slug=slug, key=key, sends=sends
    )
