"""Newsletters (broadcast campaigns): schedule, unschedule, cancel, results. (Being written:
see issue 13.)"""

from __future__ import annotations
