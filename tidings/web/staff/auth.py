"""Signing in and out, the second factor, setting a password from a one-time link, and one's
own account (password, two-factor setup)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import g, redirect, render_template, request, url_for
from sqlalchemy import text
from werkzeug.wrappers import Response as WerkzeugResponse

from tidings.db.audit import act_as
from tidings.db.staff import StaffSession, StaffUser
from tidings.errors import InvalidInput
from tidings.staff import accounts, sessions
from tidings.subscribers.throttle import Cap, take
from tidings.web.app import client_network, context
from tidings.web.staff import COOKIE, now, staff_route, unit_of_work

WINDOW = timedelta(minutes=15)
PER_ACCOUNT = 10  # sign-in attempts per address per 15 minutes
PER_CLIENT = 30  # per client network
ATTEMPTS_LOCK = 0x7374_6166  # PostgreSQL advisory lock key ("staf"): counting sign-in attempts


def _set_cookie(response: WerkzeugResponse, value: str) -> WerkzeugResponse:
    response.set_cookie(
        COOKIE,
        value,
        httponly=True,
        secure=context().settings.public_base_url.startswith("https://"),
        samesite="Strict",
        path="/staff",
    )
    return response


def _safe_next(target: str | None) -> str:
    """Only a path of the console itself: never another site (an open redirect)."""
    if target and target.startswith("/staff") and not urlsplit(target).netloc:
        return target
    return url_for("staff.dashboard")


def _caps(email: str) -> list[Cap]:
    key = context().secret.encode()
    account = hmac.new(key, f"staff-login:{email.strip().lower()}".encode(), hashlib.sha256)
    network = hmac.new(key, f"staff-login:{client_network()}".encode(), hashlib.sha256)
    return [
        Cap(f"staff-login:account:{account.hexdigest()[:32]}", PER_ACCOUNT, WINDOW, WINDOW / 15),
        Cap(f"staff-login:client:{network.hexdigest()[:32]}", PER_CLIENT, WINDOW, WINDOW / 15),
    ]


def _count_attempt(email: str) -> bool:
    """Count one attempt (False: a cap is reached), in a short transaction of its own. On
    PostgreSQL attempts take turns here: otherwise parallel requests all read the count
    before any adds to it (READ COMMITTED), and a burst gets past the cap."""
    with context().runtime.sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ATTEMPTS_LOCK})
        return take(session, _caps(email), now())


@staff_route("/login", permission=None, methods=("GET", "POST"))
def login() -> Any:
    nxt = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("staff/login.html", title="Sign in", next=nxt, email="")
    email = request.form.get("email", "")[:320]
    password = request.form.get("password", "")
    allowed = _count_attempt(email)
    with context().runtime.sessions.begin() as session:
        if not allowed:
            error = "Too many attempts: wait 15 minutes, then try again."
            user = None
        else:
            try:
                user = accounts.check_password(session, now(), email, password)
                error = None
            except accounts.SignInFailed as exc:
                user, error = None, str(exc).capitalize() + "."
        if user is not None:
            act_as(session, f"staff:{user.email}")  # the audit log's actor: not the system
            second = user.totp_enabled
            if not second:
                accounts.signed_in(session, now(), user)
            # A browser signing in again leaves no older session of its own behind.
            sessions.close(session, request.cookies.get(COOKIE))
            cookie = sessions.open_session(session, now(), user, needs_second_factor=second)
    if user is None:
        page = render_template(
            "staff/login.html", title="Sign in", next=nxt, email=email, error=error
        )
        return page, 401
    target = url_for("staff.second_factor", next=nxt) if second else nxt
    return _set_cookie(redirect(target, 303), cookie)


@staff_route("/login/code", methods=("GET", "POST"))
def second_factor() -> Any:
    nxt = _safe_next(request.values.get("next"))
    if g.staff.complete:
        return redirect(nxt)
    if request.method == "GET":
        return render_template("staff/second_factor.html", title="Your code", next=nxt)
    allowed = _count_attempt(g.staff.user.email)
    with unit_of_work() as session:
        user = session.get(StaffUser, g.staff.user.id)
        row = session.get(StaffSession, g.staff.row.id_sha256)
        assert user is not None and row is not None
        if not allowed:
            ok, error = False, "Too many attempts: wait 15 minutes, then try again."
        else:
            ok = accounts.check_second_factor(session, now(), user, request.form.get("code", ""))
            error = "That code is not right. Try the next one your app shows, or a recovery code."
        if ok:
            accounts.signed_in(session, now(), user)
            cookie = sessions.second_factor_given(session, row)
    if not ok:
        page = render_template("staff/second_factor.html", title="Your code", next=nxt, error=error)
        return page, 401
    return _set_cookie(redirect(nxt, 303), cookie)


@staff_route("/logout", permission="own-account", methods=("POST",))
def logout() -> Any:
    with unit_of_work() as session:
        sessions.close(session, request.cookies.get(COOKIE))
    response = redirect(url_for("staff.login"), 303)
    response.delete_cookie(COOKIE, path="/staff")
    return response


@staff_route("/set-password/<token>", permission=None, methods=("GET", "POST"))
def set_password(token: str) -> Any:
    runtime = context().runtime
    error = None
    with runtime.sessions.begin() as session:
        try:
            user = accounts.user_of_token(session, now(), runtime.secret(), token)
        except InvalidInput as exc:
            page = render_template("staff/message.html", title="Link not valid", message=str(exc))
            return page, 410
        if request.method == "POST":
            act_as(session, f"staff:{user.email}")  # the person the link was made for
            first, again = request.form.get("password", ""), request.form.get("again", "")
            try:
                if first != again:
                    raise InvalidInput("password", "the two entries differ")
                accounts.set_password(session, now(), user, first)
            except InvalidInput as exc:
                error = str(exc)
            else:
                message = "Your password is set. You can sign in now."
                return render_template(
                    "staff/message.html", title="Password set", message=message, sign_in=True
                )
        email = user.email
    page = render_template(
        "staff/set_password.html", title="Set your password", email=email, error=error
    )
    return page, 400 if error else 200


@staff_route("/account", permission="own-account", methods=("GET", "POST"))
def account() -> Any:
    action = request.form.get("action") if request.method == "POST" else None
    notice = error = None
    codes: list[str] = []
    with unit_of_work() as session:
        user = session.get(StaffUser, g.staff.user.id)
        assert user is not None
        try:
            if action == "password":
                accounts.change_password(
                    session,
                    now(),
                    user,
                    request.form.get("current", ""),
                    request.form.get("new", ""),
                )
                response = redirect(url_for("staff.login"), 303)
                response.delete_cookie(COOKIE, path="/staff")
                return response
            if action == "totp-start":
                accounts.start_totp(user, request.form.get("current", ""))
            elif action == "totp-confirm":
                codes = accounts.confirm_totp(session, now(), user, request.form.get("code", ""))
                notice = "Two-factor sign-in is on."
        except InvalidInput as exc:
            error = str(exc)
        page = render_template(
            "staff/account.html",
            title="Your account",
            user=user,
            pending_secret=user.totp_secret if not user.totp_enabled else None,
            otpauth=_otpauth(user) if user.totp_secret and not user.totp_enabled else None,
            codes=codes,
            notice=notice,
            error=error,
            required=bool(request.args.get("required")),
        )
    return page, 400 if error else 200


def _otpauth(user: StaffUser) -> str:
    import pyotp

    assert user.totp_secret is not None
    totp = pyotp.TOTP(user.totp_secret)
    return str(totp.provisioning_uri(name=user.email, issuer_name=accounts.TOTP_ISSUER))
