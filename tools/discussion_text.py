"""How the discussion shows what members wrote: Markdown rendered inert, preview lines, mentions.

Theory of operation. A post's body is CommonMark (markdown-it-py), with bare URLs made links
(linkify) and ``~~strikethrough~~``; raw HTML is off, so ``<script>`` or ``<img onerror=...>`` in a
body is shown as the text it is, and every character of what a member wrote reaches the HTML
escaped. Links are the only markup a post can make point anywhere, and only to ``http``,
``https`` and ``mailto`` URLs (anything else -- ``javascript:``, ``data:``, a relative path into
the node's own API -- stays plain text); each opens in a new tab with
``rel="noopener noreferrer nofollow"``. Images are off: the page's Content-Security-Policy would
block a remote one anyway, and a post must not make the reader's browser fetch anything.

A mention is ``@handle`` where ``handle`` is a current member's display name with its spaces
removed, compared case-insensitively (``@AnnLee`` mentions "Ann Lee"); it renders as a
``<span class="mention">`` and is listed in the post's ``mentions`` so the page can tell its reader
they were named. Rendering is pure (same body, same members: same HTML) and cached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

LINK_SCHEMES = ("http://", "https://", "mailto:")
PREVIEW_CHARS = 160
MENTION = re.compile(r"(?<![\w@])@([\w][\w.\-]*\w|\w)")

Handles = frozenset[tuple[str, bytes]]  # (casefolded handle, member id)


def handle_of(name: str) -> str:
    """The ``@handle`` that mentions a member named ``name``: its name without whitespace,
    casefolded ("" if nothing is left)."""
    return "".join(name.split()).casefold()


def handles(members: Iterable[tuple[bytes, str]]) -> Handles:
    """The mention handles of ``(member id, display name)`` pairs. A handle two members share
    mentions neither (it would be a guess)."""
    seen: dict[str, bytes | None] = {}
    for member_id, name in members:
        handle = handle_of(name)
        if not handle or not MENTION.fullmatch("@" + handle):
            continue
        seen[handle] = None if handle in seen and seen[handle] != member_id else member_id
    return frozenset((h, m) for h, m in seen.items() if m is not None)


def _validate_link(url: str) -> bool:
    return url.strip().lower().startswith(LINK_SCHEMES)


def _link_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    token.attrSet("rel", "noopener noreferrer nofollow")
    token.attrSet("target", "_blank")
    return self.renderToken(tokens, idx, options, env)


def _text(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    escaped = escapeHtml(tokens[idx].content)
    known: Mapping[str, bytes] = env.get("handles", {})
    if "@" not in escaped or not known:
        return escaped

    def mention(match: re.Match[str]) -> str:
        member = known.get(match.group(1).casefold())
        if member is None:
            return match.group(0)
        env["mentioned"].append(member)
        return f'<span class="mention" data-member="{member.hex()}">{match.group(0)}</span>'

    return MENTION.sub(mention, escaped)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True})
    md.enable(["linkify", "strikethrough"])
    md.disable("image")
    md.validateLink = _validate_link  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("text", _text)
    return md


_MD = _parser()


def render(body: str, known: Handles = frozenset()) -> tuple[str, tuple[bytes, ...]]:
    """``(html, mentioned member ids)`` of a post's Markdown ``body``: inert HTML (see the
    module's text) and each member it mentions, once, in order of first mention.

    Results are cached by the body and the handles it holds (a member joining does not make
    every post render again). A body with more than :data:`MAX_MARKS` characters that open
    Markdown constructs is shown as plain text instead: the parser's cost grows with the square
    of unmatched brackets or emphasis marks, and a member must not be able to make every reader's
    node spend seconds on one post."""
    if "@" in body and known:
        lowered = body.casefold()
        known = frozenset((h, m) for h, m in known if "@" + h in lowered)
    else:
        known = frozenset()
    return _render(body, known)


MAX_MARKS = 2_000
_MARKS = frozenset("[]*_`<>!~")


@functools.lru_cache(maxsize=8192)
def _render(body: str, known: Handles) -> tuple[str, tuple[bytes, ...]]:
    env: dict[str, Any] = {"handles": dict(known), "mentioned": []}
    if sum(1 for c in body if c in _MARKS) > MAX_MARKS:
        paragraphs = [p for p in body.split("\n\n") if p.strip()]
        html = "".join(
            "<p>" + "<br>\n".join(_text_html(line, env) for line in p.split("\n")) + "</p>\n"
            for p in paragraphs
        )
    else:
        html = _MD.render(body, env)
    return html, tuple(dict.fromkeys(env["mentioned"]))


def _text_html(text: str, env: dict[str, Any]) -> str:
    """Plain text as HTML, mentions marked (what :func:`_text` does for a Markdown text run)."""
    token = Token("text", "", 0, content=text)
    return _text(_MD.renderer, [token], 0, _MD.options, env)  # type: ignore[arg-type]


_MARKUP = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d{1,9}[.)]\s+)+")
_INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|~~|\*|_|`)(?=\S)(.+?)(?<=\S)\1")


def preview(body: str, limit: int = PREVIEW_CHARS) -> str:
    """One line of plain text from a post: its first line that says something, with the
    commonest Markdown marks taken off, cut at ``limit`` characters (with "…"). Only the first
    ``4 * limit`` characters of a line are looked at, so the cost is bounded whatever the post
    holds (the mark-stripping patterns backtrack)."""
    for whole in body.splitlines():
        raw = whole[: 4 * limit]
        line = _MARKUP.sub("", raw).strip()
        if not line or set(line) <= set("-*_=`~ "):
            continue  # blank, a rule, a fence
        line = _INLINE_LINK.sub(r"\1", line)
        line = _EMPHASIS.sub(r"\2", line)
        line = " ".join(line.split())
        return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
    return ""


__all__ = ["Handles", "handle_of", "handles", "preview", "render"]
