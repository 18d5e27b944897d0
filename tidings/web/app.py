"""The Flask application: `create_app(runtime)` wires the pages, the API and the safeguards.

Safeguards, in the order a request meets them: the client address (ProxyFix, only as far as
TIDINGS_TRUSTED_PROXIES says), request-size limits, CSRF on every POST except the RFC 8058
one-click unsubscribe and the API-key JSON API, per-address rate limits, and on the way out
security headers. Errors are pages (or JSON under /api/), never a stack trace.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFError, CSRFProtect
from limits import parse_many
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from tidings.config import Settings
from tidings.db import signing_key
from tidings.errors import ConfigError
from tidings.runtime import Runtime
from tidings.subscribers.validation import mask_email

log = logging.getLogger(__name__)

# A sign-up form is a few hundred bytes; nothing here needs more than this.
MAX_REQUEST_BYTES = 16 * 1024


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deeply to parse (5,000 levels fit in 16 KB) is
    malformed JSON like any other (400), not a RecursionError (500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


_EMAIL_IN_TEXT = re.compile(r"[^\s'\"<>()\[\],;:]+@[A-Za-z0-9.-]+")

ERROR_PAGES: dict[int, tuple[str, str]] = {
    400: ("This request could not be handled", "Something in it was missing or malformed."),
    404: ("Page not found", "There is nothing at this address."),
    405: ("Not allowed", "This page cannot be used that way."),
    413: ("Too much data", "What was sent is larger than this form accepts."),
    415: ("Unsupported format", "This address accepts another kind of content."),
    422: ("Please check the form", "Some of what was entered could not be used."),
    429: (
        "Too many requests",
        "Too many requests came from your connection in a short time. "
        "Please wait a few minutes and try again.",
    ),
    500: (
        "Something went wrong on our side",
        "Nothing you did caused this. Please try again a little later.",
    ),
}


@dataclass(frozen=True)
class WebContext:
    """What the views need besides the request: kept on app.extensions['tidings']."""

    runtime: Runtime
    secret: str  # signs and checks the links in emails
    consent_text: str  # exactly as shown beside the checkbox
    consent_version: str  # short hash of it, sent back by the form
    form_origins: frozenset[str]

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def confirm_max_age(self) -> timedelta:
        return timedelta(seconds=self.settings.confirm_token_max_age_seconds)


def context() -> WebContext:
    ctx: WebContext = current_app.extensions["tidings"]
    return ctx


def consent_text_for(settings: Settings) -> str:
    return settings.consent_text.replace("{organization}", settings.organization).strip()


def consent_version_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_origins(raw: str) -> frozenset[str]:
    """TIDINGS_FORM_ORIGINS: comma- or space-separated scheme://host[:port] values."""
    origins = set()
    for item in re.split(r"[,\s]+", raw.strip()):
        if not item:
            continue
        parts = urlsplit(item)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(
                f"TIDINGS_FORM_ORIGINS: expected origins like https://www.example.org, got {item!r}"
            )
        origins.add(f"{parts.scheme}://{parts.netloc.lower()}")
    return frozenset(origins)


def client_network() -> str:
    """Whom a rate limit counts: the client's IPv4 address, or its IPv6 /64 (one customer's
    network: a client holding a /64 could otherwise take a new address per request)."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _check_storage(uri: str) -> str:
    """TIDINGS_RATE_LIMIT_STORAGE: a `limits` storage URL whose client library is installed."""
    from limits.errors import ConfigurationError
    from limits.storage import SCHEMES, storage_from_string

    scheme = uri.partition("://")[0]
    if scheme not in SCHEMES or scheme.startswith("async+"):
        raise ConfigError(
            "TIDINGS_RATE_LIMIT_STORAGE: expected memory:// or a shared store such as "
            f"redis://localhost:6379, got {uri!r}"
        )
    try:
        storage_from_string(uri)  # connects lazily: this only checks the client library
    except ConfigurationError as exc:
        raise ConfigError(
            f"TIDINGS_RATE_LIMIT_STORAGE: {exc} (for Redis: pip install 'tidings[redis]')"
        ) from exc
    return uri


def _check_rate_limit(name: str, value: str) -> str:
    try:
        if not parse_many(value):
            raise ValueError("empty")
    except ValueError as exc:
        raise ConfigError(
            f"TIDINGS_{name.upper()}: expected a rate like '10/minute' or '10/minute;100/day', "
            f"got {value!r}"
        ) from exc
    return value


# Long: the wiring, in the order a request meets it.
def create_app(runtime: Runtime) -> Flask:
    """The web application for this runtime (its settings, clock and database)."""
    settings = runtime.settings
    subscribe_limit = _check_rate_limit("subscribe_rate_limit", settings.subscribe_rate_limit)
    api_limit = _check_rate_limit("api_rate_limit", settings.api_rate_limit)
    origins = parse_origins(settings.form_origins)
    with runtime.sessions.begin() as session:
        secret = signing_key(session, settings.secret_key)
    consent_text = consent_text_for(settings)

    app = Flask(
        "tidings.web",
        template_folder="../templates",
        static_folder="static",
        static_url_path="/static",
    )
    app.json = _JSONProvider(app)
    https = settings.public_base_url.startswith("https://")
    app.config.update(
        # The Flask session only carries the CSRF token; its key is derived from the signing
        # key, so it survives restarts and differs from the key of the links.
        SECRET_KEY=hmac.new(secret.encode(), b"tidings-web-session", hashlib.sha256).hexdigest(),
        SESSION_COOKIE_NAME="tidings_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_REQUEST_BYTES,
        MAX_FORM_PARTS=50,
        PROPAGATE_EXCEPTIONS=False,
        TRAP_HTTP_EXCEPTIONS=False,
        JSON_SORT_KEYS=False,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        # CSRF is checked in our own before_request (see _protect), so that the one-click
        # unsubscribe and the embedded form from an allowed origin can be let through.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=8 * 3600,
        # Our pages send no Referer (Referrer-Policy: no-referrer), so Flask-WTF's HTTPS
        # referrer check would refuse every form; the token and SameSite cookie remain.
        WTF_CSRF_SSL_STRICT=False,
    )
    app.jinja_env.autoescape = True
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]

    app.extensions["tidings"] = WebContext(
        runtime=runtime,
        secret=secret,
        consent_text=consent_text,
        consent_version=consent_version_of(consent_text),
        form_origins=origins,
    )

    csrf = CSRFProtect(app)
    limiter = Limiter(
        key_func=client_network,
        app=app,
        storage_uri=_check_storage(settings.rate_limit_storage),
        default_limits=[],
        headers_enabled=False,
        strategy="moving-window",
    )

    from tidings.web import api, public, staff

    app.register_blueprint(public.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(staff.blueprint)
    csrf.exempt(api.blueprint)  # authorized by an API key, not a browser session
    csrf.exempt(staff.blueprint)  # checks its own token, bound to the staff session

    # Per-address limits on what sends email or writes: the forms and the API.
    for endpoint, rate in (
        ("pages.subscribe", subscribe_limit),
        ("pages.confirm", subscribe_limit),
        ("pages.confirm_resend", subscribe_limit),
        ("pages.comeback", subscribe_limit),
        ("api.create_subscriber", api_limit),
    ):
        view = app.view_functions[endpoint]
        app.view_functions[endpoint] = limiter.limit(rate, methods=["POST"])(view)  # type: ignore[assignment]

    @app.before_request
    def _protect() -> None:
        if request.method != "POST" or public.csrf_exempt() or request.blueprint == "staff":
            return
        csrf.protect(apply_exemptions=True)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "organization": settings.organization,
            "postal_address": settings.postal_address,
            "confirm_link_days": _duration(settings.confirm_token_max_age_seconds),
            "privacy_url": settings.privacy_url,
        }

    app.after_request(_security_headers)
    _register_errors(app)
    return app


def _duration(seconds: float) -> str:
    """7 days, 36 hours...: how long a confirmation link works, for the pages."""
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''}"
    hours = max(1, round(seconds / 3600))
    return f"{hours} hour{'s' if hours > 1 else ''}"


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; "
        "frame-ancestors 'none'",
    )
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault(
        "Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    )
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        # Pages carry personal details (a name, a timezone) and one-time tokens.
        headers["Cache-Control"] = "no-store"
    return response


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def error_response(code: int, message: str | None = None) -> tuple[Any, int]:
    title, default = ERROR_PAGES.get(code, ERROR_PAGES[400 if code < 500 else 500])
    if wants_json():
        return jsonify({"error": message or default}), code
    # "Error:" first, in the window title and the heading: what a screen reader announces.
    return render_template(
        "web/error.html", code=code, title=f"Error: {title}", message=message or default
    ), code


def _register_errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        from tidings.web import public

        return public.csrf_failed(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        response = current_app.make_response(error_response(exc.code or 500))
        for name, value in exc.get_headers():
            if name.lower() in ("allow", "retry-after", "www-authenticate"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        # Never a stack trace for the visitor; in the log, one without addresses in it.
        text = "".join(traceback.format_exception(exc))
        log.error(
            "error on %s %s:\n%s",
            request.method,
            request.url_rule.rule if request.url_rule else "(no route)",
            _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text),
        )
        return error_response(500)
