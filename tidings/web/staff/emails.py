"""One email of a campaign: the rendered email at phone and desktop width, its text part,
headers and lint findings; a spam score; a test send. (Being written: see issue 13.)"""

from __future__ import annotations
