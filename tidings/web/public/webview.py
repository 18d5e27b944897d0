"""The web view of a campaign's emails: GET /emails/<campaign>/<step> shows the current version
of one email as a browser page, for anyone (emails link to it: every footer points to the
risks email this way).

Nobody's data is in it: the email is personalized for a reader with no name (the greeting
takes its fallback form) and no address, and nobody's unsubscribe or preferences links are
in it (the footer's links become one link to the sign-up page; such a link inside a sentence
loses its link and keeps its words). Only sequences, and broadcasts that have been sent, are
public: a newsletter's content may be private until it goes out.
"""

from __future__ import annotations

import dataclasses
import html
import re
from typing import Any

# lxml comes with premailer (which compiles the emails); it has no type hints of its own.
import lxml.html  # type: ignore[import-untyped]
from flask import make_response, url_for
from lxml import etree

from tidings.campaigns.store import public_step
from tidings.errors import NotFound
from tidings.rendering.compile import CompiledStep, placeholder
from tidings.rendering.mime import Recipient, personalize_html
from tidings.web.app import error_response
from tidings.web.public.common import blueprint, reading

# As every page's (app._security_headers), but the email's own inline styles are allowed: the
# html is our compiled output, not anyone's input. No scripts at all.
WEB_VIEW_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'none'; "
    "base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'"
)
SIGN_UP_TEXT = "Sign up for this series"
_PERSONAL_LINKS = tuple(
    placeholder(name) for name in ("unsubscribe_url", "preferences_url", "confirm_url")
)
# What may stand between the links of a footer's line: "Unsubscribe · Preferences".
_SEPARATORS = re.compile(r"[\s·|•/,;:.\-–—]*")
_INLINE = frozenset({"span", "strong", "b", "em", "i", "small", "font", "u"})
# Its own colours, whatever the email's (and its dark mode) are around it.
_BANNER_STYLE = (
    "max-width:600px;margin:16px auto 0 auto;padding:10px 16px;box-sizing:border-box;"
    "font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;color:#1f3b36;"
    "background-color:#ffffff;border:1px solid #d0d7d3;border-radius:6px;text-align:center"
)


@blueprint.get("/emails/<slug>/<key>")
def email_web_view(slug: str, key: str) -> Any:
    """One email of a campaign in the browser, as a reader with no name would get it."""
    with reading() as session:
        try:
            campaign, step = public_step(session, slug, key)
        except NotFound:
            return error_response(404)
        compiled = CompiledStep.from_stored(step.compiled)
        series = campaign.name
    page = web_view_html(compiled, series, url_for("pages.subscribe"))
    response = make_response(page, 200)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Content-Security-Policy"] = WEB_VIEW_CSP
    return response


def web_view_html(compiled: CompiledStep, series: str, sign_up_url: str) -> str:
    """The compiled html of an email as a public page: nobody's links, nobody's name, and a
    line at the top saying what it is, with the way to sign up."""
    doc = lxml.html.document_fromstring(compiled.html)
    _replace_personal_links(doc, sign_up_url)
    head = doc.find("head")
    if head is not None:
        head.insert(0, etree.Element("meta", name="robots", content="noindex"))
    body = doc.find("body")
    if body is not None:
        body.insert(0, _banner(series, sign_up_url))
    page = lxml.html.tostring(doc, encoding="unicode", doctype="<!DOCTYPE html>")
    # What is left of the personal values (the greeting, a link printed as text) becomes a
    # nameless reader's: the greeting's fallback, the sign-up page.
    nobody = Recipient(
        email="",
        name="",
        unsubscribe_url=sign_up_url,
        preferences_url=sign_up_url,
        confirm_url=sign_up_url,
    )
    return personalize_html(dataclasses.replace(compiled, html=page), nobody)


def _banner(series: str, sign_up_url: str) -> Any:
    return lxml.html.fragment_fromstring(
        f'<div role="note" style="{_BANNER_STYLE}">An email of the series '
        f"“{html.escape(series)}”, shown in your browser. "
        f'<a href="{html.escape(sign_up_url)}" style="color:#2f6b5f">{SIGN_UP_TEXT}</a></div>'
    )


def _is_personal(element: Any) -> bool:
    if element.tag != "a":  # comments' tags are functions
        return False
    href = element.get("href") or ""
    return any(tag in href for tag in _PERSONAL_LINKS)


def _text_outside_personal_links(element: Any) -> str:
    parts = [element.text or ""]
    for child in element:
        if isinstance(child.tag, str) and not _is_personal(child):
            parts.append(_text_outside_personal_links(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _replace_personal_links(doc: Any, sign_up_url: str) -> None:
    """A line of the footer that holds only personal links ("Unsubscribe · Change
    preferences") becomes one link to the sign-up page, styled as the first of them; a
    personal link inside a sentence keeps its words and loses its link."""
    for anchor in [a for a in doc.iter("a") if _is_personal(a)]:
        if anchor.getparent() is None:
            continue  # its line was replaced already
        line = anchor.getparent()
        while line.tag in _INLINE and line.getparent() is not None:
            line = line.getparent()
        if _SEPARATORS.fullmatch(_text_outside_personal_links(line)):
            style, attributes, tail = anchor.get("style"), dict(line.attrib), line.tail
            line.clear()  # its text, children, attributes and tail: the latter two come back
            line.attrib.update(attributes)
            line.tail = tail
            link = etree.SubElement(line, "a", href=sign_up_url)
            if style:
                link.set("style", style)
            link.text = SIGN_UP_TEXT
        else:
            anchor.drop_tag()
