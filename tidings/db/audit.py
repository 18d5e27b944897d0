"""The audit log: who did what, when, on which campaign or subscriber.

Library functions that change data on someone's behalf call `record` with the session of the
change, so the entry is written in the same transaction: no change without its entry, no
entry for a change that was rolled back. Who acts is the session's `actor`, set where the
unit of work starts (the CLI: `cli:<OS user>`; the console: `staff:<email>`; the API:
`api:<key name>`; the worker: `system`), so no function needs an extra argument for it.

Entries name subscribers by id and masked address only: the log outlives erasure.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tidings.db.staff import AuditEntry

SYSTEM = "system"


def actor_of(session: Session) -> str:
    return str(session.info.get("actor", SYSTEM))


def act_as(session: Session, actor: str) -> Session:
    """Mark who the session's changes are made by (a web request's signed-in member of staff)."""
    session.info["actor"] = actor
    return session


def cli_actor() -> str:
    """The operator at the shell, by OS user name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "cli:unknown"


def record(
    session: Session,
    now: datetime,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """One entry, in the session's transaction. `action`: noun.verb (campaign.pause)."""
    session.add(
        AuditEntry(
            at=now,
            actor=actor_of(session)[:200],
            action=action,
            target=target[:200],
            detail=detail or None,
            note=(note or None) and note[:2000],
        )
    )


def entries(
    session: Session,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 200,
    before_id: int | None = None,
) -> Sequence[AuditEntry]:
    """The newest entries first, filtered; `before_id` pages back through older ones."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if actor:
        query = query.where(AuditEntry.actor.contains(actor, autoescape=True))
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return session.scalars(query).all()
