"""The audit log, newest first, filtered by who and what."""

from __future__ import annotations

from typing import Any

from flask import render_template, request

from tidings.db.audit import entries
from tidings.web.staff import reading, staff_route

PAGE = 100


@staff_route("/audit")
def audit_log() -> Any:
    actor = request.args.get("actor", "")[:200]
    action = request.args.get("action", "")[:64]
    before = request.args.get("before", type=int)
    with reading() as session:
        rows = entries(session, actor=actor, action=action, limit=PAGE + 1, before_id=before)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return render_template(
        "staff/audit.html",
        title="Audit log",
        rows=rows,
        actor=actor,
        action=action,
        older=rows[-1].id if more and rows else None,
    )
