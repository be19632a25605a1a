"""Block Kit messages as the HTML part of an email, with their files shown inline by `cid:`.

Alerts are stored as Slack renders them (`text` plus `blocks`); a message that carries files (a
report digest's chart) is also sent by email as HTML: headers, sections, fields and context
rendered with their mrkdwn (links, bold, italic, code) escaped, then each image as
`<img src="cid:<content_id>">`, the part `resources.email` attaches under that Content-ID.
"""

from __future__ import annotations

import html
import re

from cost_pipeline.lib.outbox import Attachment

_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])")
_CODE = re.compile(r"`([^`\n]+)`")


def _mrkdwn_html(text: str) -> str:
    """Slack mrkdwn (links, bold, italic, code, line breaks) as escaped HTML."""
    parts, last = [], 0
    for m in _LINK.finditer(text):
        parts.append(_inline(text[last : m.start()]))
        parts.append(f'<a href="{html.escape(m.group(1))}">{html.escape(m.group(2))}</a>')
        last = m.end()
    parts.append(_inline(text[last:]))
    return "".join(parts).replace("\n", "<br>\n")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<b>\1</b>", out)
    return _ITALIC.sub(r"<i>\1</i>", out)


def email_html(text: str, blocks: list[dict], *, images: list[Attachment], fact_key: str) -> str:
    """The HTML of an email carrying `blocks`, with `images` shown inline (`cid:`)."""
    body = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            body.append(f"<h2>{html.escape(block['text']['text'])}</h2>")
        elif kind == "section" and block.get("text"):
            body.append(f"<p>{_mrkdwn_html(block['text']['text'])}</p>")
        elif kind == "section":
            cells = "".join(
                f"<td style='padding:4px 16px 4px 0;vertical-align:top'>{_mrkdwn_html(f['text'])}"
                "</td>"
                for f in block.get("fields", [])
            )
            body.append(f"<table><tr>{cells}</tr></table>")
        elif kind == "context":
            items = " · ".join(_mrkdwn_html(e.get("text", "")) for e in block.get("elements", []))
            body.append(f"<p style='color:#666;font-size:small'>{items}</p>")
    for image in images:
        alt = html.escape(image.title or image.filename)
        body.append(f'<p><img src="cid:{html.escape(image.content_id)}" alt="{alt}"></p>')
    if not blocks:
        body.insert(0, f"<p>{_mrkdwn_html(text)}</p>")
    footer = f"<p style='color:#999;font-size:x-small'>Alert key: {html.escape(fact_key)}</p>"
    return (
        "<!doctype html><html><body style='font-family:sans-serif'>\n"
        + "\n".join(body)
        + f"\n{footer}\n</body></html>\n"
    )
