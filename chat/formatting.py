"""A message's html: rendered once, when it is stored or edited, and kept beside the body.

markdown-it-py parses CommonMark with raw HTML off (so "<script>" in a body is
text) and linkify on (bare http(s) URLs become links); nh3 (ammonia) then keeps
only an allowlist of tags, attributes and URL schemes, so that whatever the
parser lets through, a page may insert the result as markup.
"""

import nh3
from markdown_it import MarkdownIt

# The CommonMark subset of the contract: no headings, images or tables.
_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True})
    .enable("linkify")
    .disable(["heading", "lheading", "image", "hr", "html_block", "html_inline", "reference"])
)
_TAGS = {"p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a"}
_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
_SCHEMES = {"http", "https", "mailto"}


def message_html(body: str) -> str:
    """The safe HTML of a message body."""
    return nh3.clean(
        _markdown.render(body),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()
