"""Reading a compiled email's html as its reader gets it: the links, the images, the visible
words (the preheader and the head left out)."""

from __future__ import annotations

import re
from html.parser import HTMLParser


class HtmlFacts(HTMLParser):
    """Links, images and visible text of a compiled email (preheader and head left out)."""

    HIDDEN = frozenset({"style", "script", "title", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.words: list[str] = []
        self._hidden = 0
        self._preheader_depth = 0
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in self.HIDDEN:
            self._hidden += 1
        if tag == "div":
            self._depth += 1
            if "preheader" in values.get("class", "").split() and not self._preheader_depth:
                self._preheader_depth = self._depth
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        if tag == "img":
            self.images.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1
        if tag == "div":
            if self._preheader_depth == self._depth:
                self._preheader_depth = 0
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and not self._preheader_depth:
            self.words.append(data)


def words_of(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower()) if "tidingsvar" not in w}


def is_pixel(image: dict[str, str]) -> bool:
    style = image.get("style", "").replace(" ", "").lower()
    tiny = any(image.get(a, "").strip() in ("0", "1", "0px", "1px") for a in ("width", "height"))
    hidden = "display:none" in style or re.search(r"(?:width|height):[01]px", style) is not None
    return tiny or hidden
