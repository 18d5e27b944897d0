"""The compiled html's last steps: premailer inlines the CSS (Gmail and others drop a <style>
block), keeping in the head what cannot be inlined (the dark-mode and phone @media blocks,
with their !important, which must beat the inlined styles); then every attribute is quoted
the same way, so personal values can be escaped one way in them."""

from __future__ import annotations

import logging
import re


def inline_css(page: str) -> str:
    import premailer

    return premailer.Premailer(
        page,
        allow_network=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        remove_classes=False,  # the @media blocks select by class
        strip_important=False,  # they need their !important (the base styles have none)
    ).transform()


# A start tag as lxml writes it, and each of its attributes (values always quoted, < and >
# escaped in them).
_START_TAG = re.compile(
    r"""<[A-Za-z][^\s/>]*(?:\s+[^\s=/>]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?)*\s*/?>"""
)
_ATTRIBUTE = re.compile(r"""(\s+[^\s=/>]+\s*=\s*)(?:'([^']*)'|"([^"]*)")""")


def double_quoted_attributes(page: str) -> str:
    """Every attribute value between double quotes, with both kinds of quote escaped in it.

    lxml writes a value that contains " between single quotes; a reader's value filled into
    it would then need ' escaped, and a value with ' between double quotes needs " escaped.
    One form for every attribute, applied to the compiled html and to the reference path's
    alike, lets the fast path escape every personal value in an attribute one way (& < > " '
    all escaped) and still produce the reference's bytes."""

    def attribute(match: re.Match[str]) -> str:
        single, double = match.group(2), match.group(3)
        value = (
            single.replace('"', "&quot;") if single is not None else double.replace("'", "&#39;")
        )
        return f'{match.group(1)}"{value}"'

    return _START_TAG.sub(lambda tag: _ATTRIBUTE.sub(attribute, tag.group()), page)
