"""Which role may do what in the console. One table, read by every route (web/staff) and by
the test that walks every route as every role."""

from __future__ import annotations

from tidings.states import StaffRole

VIEWER, EDITOR, REVIEWER, ADMIN = (
    StaffRole.VIEWER,
    StaffRole.EDITOR,
    StaffRole.REVIEWER,
    StaffRole.ADMIN,
)
ANYONE = frozenset(StaffRole)

PERMISSIONS: dict[str, frozenset[StaffRole]] = {
    "read": ANYONE,  # dashboards, campaigns, emails, subscribers' profiles, the audit log
    "own-account": ANYONE,  # one's own password and two-factor setup
    "campaigns.pause": frozenset({EDITOR, ADMIN}),  # pause, resume
    "campaigns.test-send": frozenset({EDITOR, ADMIN}),
    "campaigns.spamcheck": frozenset({EDITOR, REVIEWER, ADMIN}),
    "campaigns.enroll": frozenset({EDITOR, ADMIN}),
    "newsletters.schedule": frozenset({EDITOR, ADMIN}),  # schedule, unschedule, cancel
    "content.approve": frozenset({REVIEWER, ADMIN}),
    "subscribers.manage": frozenset({EDITOR, ADMIN}),  # unsubscribe, resend, pause, export
    "subscribers.erase": frozenset({ADMIN}),
    "suppressions.manage": frozenset({ADMIN}),
    "users.manage": frozenset({ADMIN}),
    "apikeys.manage": frozenset({ADMIN}),
}


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS[permission]
