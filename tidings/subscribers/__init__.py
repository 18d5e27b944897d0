"""Subscribers: validation, opt-in and confirmation, unsubscribe, suppression, link tokens."""
