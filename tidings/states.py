"""Every state a row can be in, and every outcome of a send, as types.

StrEnums: a member is its string (`SubscriberStatus.ACTIVE == "active"`), so rows, JSON and
templates need no conversion, while code names each state once. The database keeps the same
values, checked by CHECK constraints (migration 0005), so a typo cannot be stored.
"""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"  # asked, not confirmed
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


# The statuses of someone who may still get email (pending: only the confirmation).
RECEIVING = (SubscriberStatus.PENDING, SubscriberStatus.ACTIVE)
# The statuses of someone who left, or was stopped: a sign-up or an import changes none of them.
LEFT = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"


# Waiting to be claimed; and everything not yet final (claimed ones included).
WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.RETRY)
UNFINISHED = (DeliveryStatus.QUEUED, DeliveryStatus.RETRY, DeliveryStatus.SENDING)


class DeliveryKind(StrEnum):
    STEP = "step"  # an email of a campaign (sequence step or newsletter)
    CONFIRMATION = "confirmation"  # double opt-in; outside the (subscriber, step) UNIQUE
    # To someone who left and signed up again: one link brings them back; nothing else does.
    COMEBACK = "comeback"


class CampaignKind(StrEnum):
    SEQUENCE = "sequence"
    BROADCAST = "broadcast"


class CampaignTrigger(StrEnum):
    CONFIRM = "confirm"
    MANUAL = "manual"


class CampaignStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class BroadcastState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its time; nothing planned yet
    SENDING = "sending"  # planning has started: deliveries are being written
    DONE = "done"  # every recipient is planned; what is left is in the delivery queue
    CANCELLED = "cancelled"


PLANNING = (BroadcastState.SCHEDULED, BroadcastState.SENDING)


class BroadcastPhase(StrEnum):
    """Where a broadcast stands, as `campaigns show` says it: its schedule's state, with a
    DONE schedule told apart by whether its emails are still in the queue."""

    NOT_SCHEDULED = "not scheduled"
    SCHEDULED = "scheduled"
    SENDING = "sending"  # being planned, or planned with emails still waiting
    SENT = "sent"  # nothing left in the queue: its public web view may be shown
    CANCELLED = "cancelled"


class SendOutcome(StrEnum):
    """What one attempt to hand a message to a server came to."""

    SENT = "sent"
    RETRY = "retry"  # 4xx, no connection, a timeout: try again later
    BOUNCED = "bounced"  # 5xx about the address: suppress it
    FAILED = "failed"  # 5xx about us or the content: give up on this email only


class StopReason(StrEnum):
    """Why a subscriber stops receiving email; also the reason kept on the suppression list."""

    UNSUBSCRIBE = "unsubscribe"  # they asked
    HARD_BOUNCE = "hard-bounce"  # the address does not exist
    COMPLAINT = "complaint"  # they marked an email as spam
    MANUAL = "manual"  # an operator's decision, or an erasure


class ConsentKind(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    IMPORTED = "imported"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"  # a spam report withdraws consent as surely as unsubscribing
    SUPPRESSION_REMOVED = "suppression-removed"


# Consent events that mean the person left ("unsubscribed after step N" counts both).
WITHDRAWN = (ConsentKind.UNSUBSCRIBED, ConsentKind.COMPLAINED)


class BounceKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"


class InboundKind(StrEnum):
    """What a message that came back to us is."""

    BOUNCE = "bounce"  # a delivery status notification (RFC 3464) or an older bounce
    COMPLAINT = "complaint"  # a feedback report (RFC 5965): marked as spam
    UNSUBSCRIBE = "unsubscribe"  # a request to List-Unsubscribe's mailto:
    AUTOMATIC = "automatic"  # an out-of-office or other automatic answer (RFC 3834)
    OTHER = "other"  # anything else, a reply of a person among them


class StaffRole(StrEnum):
    """What a member of staff may do in the console (tidings/staff/roles.py says which
    action needs which role)."""

    VIEWER = "viewer"  # reads everything but message texts of replies and secrets
    EDITOR = "editor"  # also pauses, resumes, test-sends, schedules, manages subscribers
    REVIEWER = "reviewer"  # reads, and approves content
    ADMIN = "admin"  # everything: erasure, suppressions, users, API keys
