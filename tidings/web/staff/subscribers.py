"""Subscribers: search, a profile, and the actions each role may take; the suppression list.

Staff see whole addresses on these pages (they manage the list); the audit log, written by
the library functions called here, names subscribers by id and masked address only. Each
action is one library call in one unit of work, then a redirect back to the page (so a reload
does not act twice) with a fixed notice chosen by key (nothing typed comes back in a URL).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

from flask import current_app, redirect, render_template, request, url_for

from tidings.errors import Conflict, InvalidInput, NotFound, TidingsError
from tidings.states import StopReason, SubscriberStatus
from tidings.subscribers.directory import SubscriberFilter
from tidings.subscribers.forms import PAUSE_WEEKS
from tidings.subscribers.lifecycle import lift_suppression, suppress_address
from tidings.subscribers.operators import (
    pause_by_operator,
    resend_confirmation_by_operator,
    unsubscribe_by_id,
)
from tidings.subscribers.privacy import erase_confirmed, export_data_by_operator
from tidings.subscribers.profiles import PAGE_SIZE, search_page, subscriber_profile
from tidings.subscribers.suppressions import DETAIL_MAX_CHARS, entries_page
from tidings.web.app import context
from tidings.web.staff import actor, now, reading, staff_route, unit_of_work

SEARCH_MAX_CHARS = 254
NOTES_MAX_CHARS = 500
STATUSES = [status.value for status in SubscriberStatus]
REASONS = [reason.value for reason in StopReason]

# What a profile says after an action (?done=KEY): fixed words, nothing from the request.
PROFILE_NOTICES = {
    "unsubscribed": "Unsubscribed: nothing more is sent, emails still waiting are skipped, "
    "and the address is on the suppression list.",
    "already-left": "Nothing changed: this subscriber had already left.",
    "resent": "A new confirmation email is queued: the worker sends it at its next pass.",
    "paused": "Paused: their emails wait until the date shown; nothing is skipped.",
}
LIST_NOTICES = {
    "erased": "Erased everywhere. Only a keyed hash of the address stays on the suppression "
    "list, so nothing is ever sent to it again.",
    "erased-log-kept": "Erased everywhere. Another process was reading the database, so "
    "its write-ahead log could not be emptied yet: old copies stay in that file until every "
    "tidings process using the database has stopped.",
}
SUPPRESSION_NOTICES = {
    "added": "Suppressed.",
    "added-stopped": "Suppressed, and the subscriber who still received email was stopped.",
    "already": "That address was already on the list; its entry keeps its first reason.",
    "removed": "Taken off the list. Nothing is sent to it by itself: someone who unsubscribed "
    "comes back only with new consent.",
}


def _refused(exc: TidingsError, back: str, back_label: str, acted: bool = True) -> Any:
    """A library refusal, as a page that says so (and, for an action, that nothing changed:
    the unit of work was rolled back) and links back."""
    code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
    page = render_template(
        "staff/subscriber_message.html",
        title="Not done" if acted else "No such subscriber",
        message=str(exc),
        back=back,
        back_label=back_label,
        acted=acted,
    )
    return page, code


def _on_subscriber(subscriber_id: int, act: Callable[[], str]) -> Any:
    """Run one action on a subscriber; back to their profile with its notice, or refused."""
    try:
        done = act()
    except TidingsError as exc:
        back = url_for("staff.subscriber", subscriber_id=subscriber_id)
        return _refused(exc, back, "Back to the subscriber")
    return redirect(url_for("staff.subscriber", subscriber_id=subscriber_id, done=done), 303)


def _before() -> int | None:
    before = request.args.get("before", type=int)
    return before if before is not None and before > 0 else None


def _joined_since(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    except ValueError:
        raise InvalidInput("joined since", f"{text[:40]!r}: use a date, e.g. 2026-10-01") from None


# ----------------------------------------------------------------------------- subscribers


@staff_route("/subscribers")
def subscribers() -> Any:
    q = " ".join(request.args.get("q", "").split())[:SEARCH_MAX_CHARS]
    status = request.args.get("status", "")
    if status and status not in STATUSES:
        raise InvalidInput("status", f"{status[:40]!r}: one of {', '.join(STATUSES)}")
    campaign = request.args.get("campaign", "")[:64]
    since_text = request.args.get("since", "").strip()[:40]
    filters = SubscriberFilter(
        statuses=(status,) if status else (),
        campaign=campaign or None,
        since=_joined_since(since_text),
        search=q or None,
    )
    with reading() as session:
        page = search_page(session, filters, before=_before())
    given = {"q": q, "status": status, "campaign": campaign, "since": since_text}
    args = {name: value for name, value in given.items() if value}  # for the paging links
    return render_template(
        "staff/subscribers.html",
        title="Subscribers",
        page=page,
        q=q,
        status=status,
        campaign=campaign,
        since=since_text,
        statuses=STATUSES,
        args=args,
        filtered=bool(args),
        first_page=_before() is None,
        size=PAGE_SIZE,
        notice=LIST_NOTICES.get(request.args.get("done", "")),
    )


@staff_route("/subscribers/<int:subscriber_id>")
def subscriber(subscriber_id: int) -> Any:
    with reading() as session:
        try:
            info = subscriber_profile(session, subscriber_id)
        except NotFound as exc:
            back = url_for("staff.subscribers")
            return _refused(exc, back, "Back to the subscribers", acted=False)
    return render_template(
        "staff/subscriber.html",
        title=f"Subscriber #{subscriber_id}",
        info=info,
        pause_weeks=PAUSE_WEEKS,
        notice=PROFILE_NOTICES.get(request.args.get("done", "")),
    )


@staff_route(
    "/subscribers/<int:subscriber_id>/unsubscribe",
    permission="subscribers.manage",
    methods=("POST",),
)
def subscriber_unsubscribe(subscriber_id: int) -> Any:
    def act() -> str:
        with unit_of_work() as session:
            _email, changed = unsubscribe_by_id(session, now(), subscriber_id, "staff")
        return "unsubscribed" if changed else "already-left"

    return _on_subscriber(subscriber_id, act)


@staff_route(
    "/subscribers/<int:subscriber_id>/resend-confirmation",
    permission="subscribers.manage",
    methods=("POST",),
)
def subscriber_resend_confirmation(subscriber_id: int) -> Any:
    def act() -> str:
        with unit_of_work() as session:
            domain = context().settings.sender_domain
            resend_confirmation_by_operator(session, now(), subscriber_id, domain)
        return "resent"

    return _on_subscriber(subscriber_id, act)


@staff_route(
    "/subscribers/<int:subscriber_id>/pause", permission="subscribers.manage", methods=("POST",)
)
def subscriber_pause(subscriber_id: int) -> Any:
    def act() -> str:
        weeks = request.form.get("weeks", "")
        if not weeks.isdigit():
            raise InvalidInput("weeks", f"choose {', '.join(map(str, PAUSE_WEEKS))} weeks")
        with unit_of_work() as session:
            pause_by_operator(session, now(), subscriber_id, int(weeks))
        return "paused"

    return _on_subscriber(subscriber_id, act)


@staff_route(
    "/subscribers/<int:subscriber_id>/export-data",
    permission="subscribers.manage",
    methods=("POST",),
)
def subscriber_export_data(subscriber_id: int) -> Any:
    """Everything stored about them, as a JSON download (a right-of-access request)."""
    try:
        with unit_of_work() as session:
            data = export_data_by_operator(session, now(), subscriber_id)
    except TidingsError as exc:
        return _refused(exc, url_for("staff.subscribers"), "Back to the subscribers")
    body = json.dumps(data, default=_plain, indent=2, ensure_ascii=False) + "\n"
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="subscriber-{subscriber_id}-data.json"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    raise TypeError(f"{type(value).__name__} is not JSON")


@staff_route(
    "/subscribers/<int:subscriber_id>/erase", permission="subscribers.erase", methods=("POST",)
)
def subscriber_erase(subscriber_id: int) -> Any:
    typed = request.form.get("confirm", "")[:SEARCH_MAX_CHARS]
    note = request.form.get("note", "")[: NOTES_MAX_CHARS + 1]
    try:
        report = erase_confirmed(
            context().runtime.sessions,
            now(),
            subscriber_id,
            typed,
            actor(),
            source="staff",
            note=note,
        )
    except TidingsError as exc:
        back = url_for("staff.subscriber", subscriber_id=subscriber_id)
        return _refused(exc, back, "Back to the subscriber")
    done = "erased-log-kept" if report.log_emptied is False else "erased"
    return redirect(url_for("staff.subscribers", done=done), 303)


# ----------------------------------------------------------------------------- suppressions


@staff_route("/suppressions", permission="suppressions.manage")
def suppressions() -> Any:
    reason = request.args.get("reason", "")
    if reason and reason not in REASONS:
        raise InvalidInput("reason", f"{reason[:40]!r}: one of {', '.join(REASONS)}")
    with reading() as session:
        page = entries_page(session, reason=reason or None, before=_before())
    return render_template(
        "staff/suppressions.html",
        title="Suppression list",
        page=page,
        reason=reason,
        reasons=REASONS,
        detail_max=DETAIL_MAX_CHARS,
        first_page=_before() is None,
        notice=SUPPRESSION_NOTICES.get(request.args.get("done", "")),
    )


def _on_list(act: Callable[[], str]) -> Any:
    try:
        done = act()
    except TidingsError as exc:
        return _refused(exc, url_for("staff.suppressions"), "Back to the suppression list")
    return redirect(url_for("staff.suppressions", done=done), 303)


@staff_route("/suppressions/add", permission="suppressions.manage", methods=("POST",))
def suppression_add() -> Any:
    email = request.form.get("email", "")[:SEARCH_MAX_CHARS]
    reason = request.form.get("reason", "")[:40]
    detail = request.form.get("detail", "")[: DETAIL_MAX_CHARS + 1]

    def act() -> str:
        if reason not in REASONS:
            raise InvalidInput("reason", f"choose one of {', '.join(REASONS)}")
        if len(detail) > DETAIL_MAX_CHARS:
            raise InvalidInput("note", f"at most {DETAIL_MAX_CHARS} characters")
        with unit_of_work() as session:
            result = suppress_address(session, email, reason, detail, now(), source="staff")
        if not result.added:
            return "already"
        return "added-stopped" if result.stopped else "added"

    return _on_list(act)


@staff_route("/suppressions/remove", permission="suppressions.manage", methods=("POST",))
def suppression_remove() -> Any:
    email = request.form.get("email", "")[:SEARCH_MAX_CHARS]
    why = request.form.get("why", "")[: DETAIL_MAX_CHARS + 1]

    def act() -> str:
        if not why.strip():
            raise InvalidInput("why", "say why this address may be mailed again")
        if len(why) > DETAIL_MAX_CHARS:
            raise InvalidInput("why", f"at most {DETAIL_MAX_CHARS} characters")
        with unit_of_work() as session:
            lift_suppression(session, email, why, now(), source="staff")
        return "removed"

    return _on_list(act)
