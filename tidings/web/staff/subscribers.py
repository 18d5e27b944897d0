"""Subscribers: search, a profile, and the actions each role may take; the suppression list.
(Being written: see issue 13.)"""

from __future__ import annotations
